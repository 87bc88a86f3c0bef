"""Schema v7, a shipped migration: each value a busy host repeats stored once.

`processes` and `process_events` become views over `process_rows` and `event_rows`, which hold
ids into `strings` (and small codes for an event's kind and source). The SQL is generated from
the v6 column lists written out below, never from models.py: a shipped migration must not change
when a record gains a field. store/strings.py is the writer's side of the same layout.
"""

from __future__ import annotations

from collections.abc import Callable

# -- the v6 layout, written out --------------------------------------------------------------
# The column lists are the v6 layout written out, not derived from models.py: a shipped
# migration must never change when a record gains a field.
_V7_PROCESS_COLUMNS = (
    ("id", "INTEGER PRIMARY KEY"),
    ("pid", "INTEGER NOT NULL"),
    ("ppid", "INTEGER NOT NULL"),
    ("start_time", "REAL NOT NULL"),
    ("name", "TEXT NOT NULL"),
    ("exe", "TEXT"),
    ("cmdline", "TEXT NOT NULL"),
    ("argv", "TEXT NOT NULL"),
    ("cwd", "TEXT"),
    ("uid", "INTEGER"),
    ("user", "TEXT"),
    ("gid", "INTEGER"),
    ("state", "TEXT NOT NULL"),
    ("threads", "INTEGER NOT NULL"),
    ("rss", "INTEGER NOT NULL"),
    ("cpu_percent", "REAL NOT NULL"),
    ("exe_sha256", "TEXT"),
    ("exe_deleted", "INTEGER NOT NULL DEFAULT 0 CHECK (exe_deleted IN (0, 1))"),
    ("first_seen", "REAL NOT NULL"),
    ("last_seen", "REAL NOT NULL"),
    ("ended_at", "REAL"),
    ("exit_code", "INTEGER"),
    ("cgroup", "TEXT"),
    ("container_runtime", "TEXT"),
    ("container_id", "TEXT"),
    ("unit", "TEXT"),
    ("pid_ns", "INTEGER"),
    ("mnt_ns", "INTEGER"),
    ("net_ns", "INTEGER"),
    ("user_ns", "INTEGER"),
    ("ns_foreign", "TEXT"),
    ("session_id", "INTEGER"),
    ("tty", "TEXT"),
    ("loginuid", "INTEGER"),
    ("ssh_client", "TEXT"),
    ("ssh_source", "TEXT"),
    ("stdin", "TEXT"),
    ("stdout", "TEXT"),
    ("stderr", "TEXT"),
    ("environment", "TEXT"),
)
_V7_EVENT_COLUMNS = (
    ("id", "INTEGER PRIMARY KEY"),
    ("ts", "REAL NOT NULL"),
    (
        "kind",
        "TEXT NOT NULL CHECK (kind IN ('start', 'fork', 'exec', 'exit', 'rename', 'uid', 'gid', "
        "'ptrace', 'cwd', 'exe_deleted', 'exe_replaced'))",
    ),
    ("pid", "INTEGER NOT NULL"),
    ("start_time", "REAL NOT NULL"),
    ("ppid", "INTEGER"),
    ("exe", "TEXT"),
    ("cmdline", "TEXT"),
    ("argv", "TEXT"),
    ("exit_code", "INTEGER"),
    ("source", "TEXT NOT NULL CHECK (source IN ('poll', 'netlink'))"),
    ("partial", "INTEGER NOT NULL DEFAULT 0 CHECK (partial IN (0, 1))"),
    ("old_value", "TEXT"),
    ("new_value", "TEXT"),
    ("exe_setid", "INTEGER CHECK (exe_setid IN (0, 1))"),
)
# Which columns of each view are kept once in `strings` (the base table holds `<name>_ref`):
# the ones a busy host repeats. An INTEGER column kept there (a namespace inode, the same for
# nearly every process) is kept as its decimal text and read back as an integer.
V7_INTERNED = {
    "processes": (
        "name", "exe", "cmdline", "argv", "cwd", "user", "exe_sha256", "cgroup", "unit",
        "pid_ns", "mnt_ns", "net_ns", "user_ns", "stdin", "stdout", "stderr", "environment",
    ),
    "process_events": ("exe", "cmdline", "argv"),
}  # fmt: skip
# Columns with a fixed vocabulary, kept as the index of their value in it (CHECK by range).
V7_CODED = {
    "kind": (
        "start", "fork", "exec", "exit", "rename", "uid", "gid", "ptrace", "cwd", "exe_deleted",
        "exe_replaced",
    ),
    "source": ("poll", "netlink"),
}  # fmt: skip
# The event kinds from this code on are changes after start: a partial index finds them.
V7_FIRST_CHANGE_CODE = V7_CODED["kind"].index("rename")
V7_BASE_TABLES = {"processes": "process_rows", "process_events": "event_rows"}
_V7_COLUMNS = {"processes": _V7_PROCESS_COLUMNS, "process_events": _V7_EVENT_COLUMNS}
# Finds a string by its length and first characters (the index), then compares it whole,
# looking at no more than the newest V7_STRINGS_CANDIDATES with the same length and prefix:
# process text is hostile in cost too, and ten thousand command lines alike but for their
# middle must not make every lookup compare ten thousand strings. Past that a string may be
# stored twice, which costs bytes, never correctness (each copy is counted on its own).
V7_STRINGS_PREFIX = 32
V7_STRINGS_CANDIDATES = 32


def v7_lookup(value: str) -> str:
    """A scalar subquery: the id of the string equal to `value` (an SQL expression), or NULL."""
    return (
        f"(SELECT c.id FROM (SELECT s.id, s.text FROM strings s "
        f"WHERE length(s.text) = length({value}) "
        f"AND substr(s.text, 1, {V7_STRINGS_PREFIX}) = substr({value}, 1, {V7_STRINGS_PREFIX}) "
        f"ORDER BY s.id DESC LIMIT {V7_STRINGS_CANDIDATES}) AS c WHERE c.text = {value} LIMIT 1)"
    )


def _v7_exact(value: str) -> str:
    """The id of the string equal to `value`, along the whole-text index that exists only
    while the migration converts the old rows (no candidate is ever passed over)."""
    return f"(SELECT s.id FROM strings s WHERE s.text = {value})"


def _v7_split_argv(cmdline: str) -> str:
    """The argv JSON that splitting `cmdline` on single spaces gives. An argv that is exactly
    that (no argument holds a space) is not stored: the view derives it (argv_ref NULL)."""
    return f"('[' || replace(json_quote({cmdline}), ' ', '\",\"') || ']')"


def _v7_text(prefix: str, name: str, kind: str) -> str:
    """The text kept in `strings` for column `name` of a row being written (NULL: none)."""
    if name == "argv":
        return (
            f"(CASE WHEN {prefix}.argv IS {_v7_split_argv(f'{prefix}.cmdline')} "
            f"THEN NULL ELSE {prefix}.argv END)"
        )
    if kind.startswith("INTEGER"):
        return f"CAST({prefix}.{name} AS TEXT)"
    return f"{prefix}.{name}"


def _v7_code(prefix: str, name: str) -> str:
    """The code of a coded column's value (NULL for a value outside the vocabulary, which the
    base table's NOT NULL then refuses)."""
    cases = " ".join(f"WHEN '{value}' THEN {code}" for code, value in enumerate(V7_CODED[name]))
    return f"CASE {prefix}.{name} {cases} END"


def _v7_intern(values: list[str]) -> str:
    """SQL that adds each of `values` (expressions) to `strings` unless it is there."""
    union = " UNION ".join(f"SELECT {v} AS value" for v in values)
    return (
        f"INSERT INTO strings (text) SELECT value FROM ({union}) AS v "
        f"WHERE value IS NOT NULL AND {v7_lookup('v.value')} IS NULL;"
    )


def _v7_base_column(name: str, kind: str, interned: tuple[str, ...]) -> tuple[str, str]:
    if name in interned:
        not_null = "NOT NULL" in kind and name != "argv"
        return f"{name}_ref", "INTEGER NOT NULL" if not_null else "INTEGER"
    if name in V7_CODED:
        return name, f"INTEGER NOT NULL CHECK ({name} BETWEEN 0 AND {len(V7_CODED[name]) - 1})"
    return name, kind


def _v7_shown(name: str, kind: str, interned: tuple[str, ...]) -> str:
    """The view's expression for column `name` (CAST keeps the declared type `.schema` shows)."""
    if name in V7_CODED:
        cases = " ".join(f"WHEN {code} THEN '{value}'" for code, value in enumerate(V7_CODED[name]))
        return f"CAST(CASE b.{name} {cases} END AS TEXT) AS {name}"
    if name not in interned:
        return f"b.{name} AS {name}"
    if name == "argv":
        return (
            "CAST(CASE WHEN b.argv_ref IS NOT NULL THEN "
            "(SELECT text FROM strings WHERE id = b.argv_ref) WHEN b.cmdline_ref IS NOT NULL THEN "
            f"{_v7_split_argv('(SELECT text FROM strings WHERE id = b.cmdline_ref)')} END AS TEXT)"
            " AS argv"
        )
    text = f"(SELECT text FROM strings WHERE id = b.{name}_ref)"
    if kind.startswith("INTEGER"):
        return f"CAST({text} AS INTEGER) AS {name}"
    return f"{text} AS {name}"


def v7_count_refs(view: str, rows: str, sign: str = "+") -> str:
    """SQL that adds (or, with sign "-", takes away) one reference for each reference the
    base table's rows matching `rows` (a condition on `id`) hold: one grouped statement for
    many rows, where a trigger would run once per row."""
    base = V7_BASE_TABLES[view]
    legs = " UNION ALL ".join(
        f"SELECT {name}_ref AS ref FROM {base} WHERE {rows}" for name in V7_INTERNED[view]
    )
    return (
        f"UPDATE string_refs SET refs = refs {sign} c.n FROM (SELECT ref, count(*) AS n "
        f"FROM ({legs}) WHERE ref IS NOT NULL GROUP BY ref) AS c WHERE string_refs.id = c.ref;"
    )


def _v7_table(view: str) -> str:
    """SQL that moves `view`'s table into its base table with string references, then puts a
    view of the old name and columns (writable through INSTEAD OF triggers) in its place."""
    base, interned, columns = V7_BASE_TABLES[view], V7_INTERNED[view], _V7_COLUMNS[view]
    kinds = dict(columns)
    base_columns = [_v7_base_column(name, kind, interned) for name, kind in columns]
    names = [name for name, _ in columns]
    base_names = [name for name, _ in base_columns]
    defaults = {
        name: kind.split("DEFAULT ")[1].split()[0] for name, kind in columns if "DEFAULT " in kind
    }

    def values(prefix: str, lookup: Callable[[str], str] = v7_lookup) -> list[str]:
        # A view has no column defaults: an INSERT that leaves one out gets the table's.
        return [
            lookup(_v7_text(prefix, name, kinds[name]))
            if name in interned
            else _v7_code(prefix, name)
            if name in V7_CODED
            else f"coalesce({prefix}.{name}, {defaults[name]})"
            if name in defaults
            else f"{prefix}.{name}"
            for name in names
        ]

    assignments = ", ".join(f"{b} = {v}" for b, v in zip(base_names, values("NEW"), strict=True))
    unique = ",\n    UNIQUE (pid, start_time)" if view == "processes" else ""
    body = ",\n    ".join(f"{name} {kind}" for name, kind in base_columns)
    refs = [f"{name}_ref" for name in interned]

    # Deleted rows give their references back one statement per reference, each a seek by
    # rowid (an IN list of the row's references builds a table per row); a string a row
    # refers to twice is counted twice, as it should. Inserted rows are counted by whoever
    # inserts them (the view's trigger below, the writer in bulk: store/strings.py), changed
    # references by the triggers of each column.
    def uncounted(row: str) -> str:
        return " ".join(
            f"UPDATE string_refs SET refs = refs - 1 WHERE id = {row}.{r};" for r in refs
        )

    moved = "".join(
        f"""
CREATE TRIGGER {base}_{r} AFTER UPDATE OF {r} ON {base} WHEN OLD.{r} IS NOT NEW.{r}
BEGIN UPDATE string_refs SET refs = refs - 1 WHERE id = OLD.{r};
      UPDATE string_refs SET refs = refs + 1 WHERE id = NEW.{r}; END;"""
        for r in refs
    )
    intern_new = _v7_intern([_v7_text("NEW", name, kinds[name]) for name in interned])
    old_texts = " UNION ".join(
        f"SELECT {_v7_text('o', name, kinds[name])} AS value FROM {view} o" for name in interned
    )
    shown = ", ".join(_v7_shown(name, kinds[name], interned) for name in names)
    return f"""
CREATE TABLE {base} (
    {body}{unique}
) STRICT;
CREATE TRIGGER {base}_uncounted AFTER DELETE ON {base} BEGIN {uncounted("OLD")} END;{moved}
INSERT INTO strings (text) SELECT value FROM ({old_texts}) AS v
WHERE value IS NOT NULL AND {_v7_exact("v.value")} IS NULL;
INSERT INTO {base} ({", ".join(base_names)})
SELECT {", ".join(values("o", _v7_exact))} FROM {view} o ORDER BY o.id;
{v7_count_refs(view, "id IS NOT NULL")}
DROP TABLE {view};
CREATE VIEW {view} AS SELECT {shown} FROM {base} b;
CREATE TRIGGER {view}_insert INSTEAD OF INSERT ON {view} BEGIN
    {intern_new}
    INSERT INTO {base} ({", ".join(base_names)}) VALUES ({", ".join(values("NEW"))});
    {v7_count_refs(view, "id = last_insert_rowid()")}
END;
CREATE TRIGGER {view}_update INSTEAD OF UPDATE ON {view} BEGIN
    {intern_new}
    UPDATE {base} SET {assignments} WHERE id = OLD.id;
END;
CREATE TRIGGER {view}_delete INSTEAD OF DELETE ON {view} BEGIN
    DELETE FROM {base} WHERE id = OLD.id;
END;
"""


V7_STRINGS = f"""
-- Every repeated value of a process row (name, exe, command line, argv, cwd, user, hash, cgroup,
-- unit, namespaces, stdio, environment) and of an event (exe, command line, argv) is stored
-- once in `strings` and referenced by id; an event's kind and source are small codes.
-- `processes` and `process_events` become views with the same columns as before (rules, Sigma
-- and `query` read them unchanged; INSTEAD OF triggers keep them writable). `string_refs`
-- counts the rows referring to a string, kept by triggers; retention deletes strings that no
-- row refers to any more.
CREATE TABLE strings (
    id   INTEGER PRIMARY KEY,
    text TEXT    NOT NULL
) STRICT;
-- The count lives apart from the text: counting a reference must not rewrite a long string.
CREATE TABLE string_refs (
    id   INTEGER PRIMARY KEY,
    refs INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TRIGGER strings_counted AFTER INSERT ON strings
BEGIN INSERT INTO string_refs (id, refs) VALUES (NEW.id, 0); END;
CREATE TRIGGER strings_uncounted AFTER DELETE ON strings
BEGIN DELETE FROM string_refs WHERE id = OLD.id; END;
-- Only while the old rows are converted: every text found whole, however many are alike.
CREATE INDEX v7_strings_whole ON strings (text);
DROP VIEW live_processes;
{_v7_table("processes")}
CREATE INDEX process_rows_ended_at ON process_rows (ended_at);
CREATE INDEX process_rows_start_time ON process_rows (start_time);
CREATE INDEX process_rows_ppid ON process_rows (ppid);
-- Most processes run in no container: the index holds only those that do.
CREATE INDEX process_rows_container_id ON process_rows (container_id)
WHERE container_id IS NOT NULL;
-- The process set at a past moment (store/history.py): instances that lived long or still live.
CREATE INDEX process_rows_long_lived ON process_rows (start_time)
WHERE ended_at IS NULL OR ended_at - start_time > 3000.0;
CREATE VIEW live_processes AS SELECT * FROM processes WHERE ended_at IS NULL;
-- A process row that retention deletes takes its connections with it.
CREATE TRIGGER process_rows_delete_connections AFTER DELETE ON process_rows
BEGIN
    DELETE FROM connections WHERE pid = OLD.pid AND start_time = OLD.start_time;
END;
{_v7_table("process_events")}
DROP INDEX v7_strings_whole;
CREATE INDEX strings_text ON strings (length(text), substr(text, 1, {V7_STRINGS_PREFIX}));
CREATE INDEX event_rows_ts ON event_rows (ts);
-- An instance's changes after start (store/changes.py), by pid alone: with start_time too,
-- and over every event, the index cost a tenth of the store.
CREATE INDEX event_rows_changes ON event_rows (pid) WHERE kind >= {V7_FIRST_CHANGE_CODE};
"""
