"""The store's schema and its forward migrations, versioned with `PRAGMA user_version`.

Each migration is one SQL script applied in its own `BEGIN IMMEDIATE` transaction together with
the bump of `user_version`, so a crash mid-migration leaves the previous version intact. To change
the schema, append a `Migration` whose version is the next integer; never edit a shipped one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw

from daemoneye.errors import StoreError

# Written to the SQLite header (`PRAGMA application_id`) so a DaemonEye store can be told apart
# from any other SQLite file: the ASCII bytes "DEye".
APPLICATION_ID = 0x44457965


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward step: the script that takes the schema from `version - 1` to `version`."""

    version: int
    description: str
    sql: str


_V1_PROCESSES = f"""
PRAGMA application_id = {APPLICATION_ID};

-- One row per process instance, keyed by (pid, start_time): pids are reused, instances are not.
CREATE TABLE processes (
    id          INTEGER PRIMARY KEY,
    pid         INTEGER NOT NULL,
    ppid        INTEGER NOT NULL,
    start_time  REAL    NOT NULL,            -- wall-clock epoch seconds
    name        TEXT    NOT NULL,
    exe         TEXT,
    cmdline     TEXT    NOT NULL,            -- argv joined by single spaces
    argv        TEXT    NOT NULL,            -- JSON array, exact
    cwd         TEXT,
    uid         INTEGER,
    user        TEXT,
    gid         INTEGER,
    state       TEXT    NOT NULL,
    threads     INTEGER NOT NULL,
    rss         INTEGER NOT NULL,            -- bytes
    cpu_percent REAL    NOT NULL,
    exe_sha256  TEXT,
    exe_deleted INTEGER NOT NULL DEFAULT 0 CHECK (exe_deleted IN (0, 1)),
    first_seen  REAL    NOT NULL,
    last_seen   REAL    NOT NULL,
    ended_at    REAL,                        -- NULL while alive
    exit_code   INTEGER,
    UNIQUE (pid, start_time)
) STRICT;

-- ended_at: the live view and retention; start_time: "started in the last N s" rules;
-- ppid: children and ancestry; exe: rules on a binary. last_seen changes on every update,
-- so it is deliberately not indexed.
CREATE INDEX processes_ended_at ON processes (ended_at);
CREATE INDEX processes_start_time ON processes (start_time);
CREATE INDEX processes_ppid ON processes (ppid);
CREATE INDEX processes_exe ON processes (exe);

CREATE VIEW live_processes AS SELECT * FROM processes WHERE ended_at IS NULL;

-- Append-only lifecycle facts. No foreign key to processes: an event may name an instance that
-- was never stored (gone before it could be read) or that retention has already removed.
CREATE TABLE process_events (
    id          INTEGER PRIMARY KEY,
    ts          REAL    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('start', 'fork', 'exec', 'exit')),
    pid         INTEGER NOT NULL,
    start_time  REAL    NOT NULL,
    ppid        INTEGER,
    exe         TEXT,
    cmdline     TEXT,
    argv        TEXT,
    exit_code   INTEGER,
    source      TEXT    NOT NULL CHECK (source IN ('poll', 'netlink')),
    partial     INTEGER NOT NULL DEFAULT 0 CHECK (partial IN (0, 1))
) STRICT;

CREATE INDEX process_events_ts ON process_events (ts);
CREATE INDEX process_events_instance ON process_events (pid, start_time);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
"""

_V2_ALERTS = """
-- One row per (rule, process instance): repeats raise `count`; a closed alert seen again after
-- its rule's dedup window is reopened in place as a new `occurrence`.
CREATE TABLE alerts (
    id               INTEGER PRIMARY KEY,
    rule_id          TEXT    NOT NULL,
    severity         TEXT    NOT NULL
                     CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    title            TEXT    NOT NULL,
    pid              INTEGER NOT NULL,
    start_time       REAL    NOT NULL,
    first_seen       REAL    NOT NULL,
    last_seen        REAL    NOT NULL,
    count            INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1),
    occurrence       INTEGER NOT NULL DEFAULT 1 CHECK (occurrence >= 1),
    state            TEXT    NOT NULL DEFAULT 'open'
                     CHECK (state IN ('open', 'acknowledged', 'closed')),
    state_changed_at REAL,
    state_changed_by TEXT,
    row              TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(row)),  -- [[column, value]]
    UNIQUE (rule_id, pid, start_time)
) STRICT;

-- Listing is newest first, optionally narrowed by state, severity or rule.
CREATE INDEX alerts_last_seen ON alerts (last_seen);
CREATE INDEX alerts_state ON alerts (state, last_seen);
CREATE INDEX alerts_severity ON alerts (severity, last_seen);
CREATE INDEX alerts_rule ON alerts (rule_id, last_seen);

-- Per-rule alerting counters; `last_raised_at` is the throttle's clock, so it survives restarts.
CREATE TABLE rule_stats (
    rule_id            TEXT PRIMARY KEY,
    alerts_raised      INTEGER NOT NULL DEFAULT 0,
    alerts_suppressed  INTEGER NOT NULL DEFAULT 0,  -- new alerts the throttle held back
    last_raised_at     REAL,
    last_suppressed_at REAL
) STRICT;

-- The tamper-evident ledger: each entry's hash covers its fields and the previous entry's hash.
-- seq is assigned by the writer (never reused); the head (seq, hash) is mirrored in meta so a
-- truncated tail is detectable. Nothing prunes this table.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    ts        REAL    NOT NULL,
    kind      TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    detail    TEXT    NOT NULL CHECK (json_valid(detail)),
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
) STRICT;

-- Guards against accidental rewrites by code; tampering by hand is what the hash chain catches.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

-- The persistent outbox: one row per (alert occurrence, sink), written in the same transaction
-- as the alert, removed from `pending` only once the sink has taken it (at-least-once).
CREATE TABLE sink_outbox (
    id              INTEGER PRIMARY KEY,
    alert_id        INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    sink            TEXT    NOT NULL,
    payload         TEXT    NOT NULL CHECK (json_valid(payload)),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    last_error      TEXT,
    created_at      REAL    NOT NULL,
    delivered_at    REAL
) STRICT;

CREATE INDEX sink_outbox_due ON sink_outbox (state, next_attempt_at);
CREATE INDEX sink_outbox_sink_due ON sink_outbox (sink, state, next_attempt_at);
CREATE INDEX sink_outbox_alert ON sink_outbox (alert_id);

-- Per-sink delivery counters, updated with the outbox rows, so `health` can read them from the
-- store even when no daemon runs.
CREATE TABLE sink_stats (
    sink                  TEXT PRIMARY KEY,
    delivered_total       INTEGER NOT NULL DEFAULT 0,
    failed_attempts_total INTEGER NOT NULL DEFAULT 0,
    dead_total            INTEGER NOT NULL DEFAULT 0,
    last_success_at       REAL,
    last_error            TEXT,
    last_error_at         REAL
) STRICT;
"""

_V3_AUDIT_CHECKPOINTS = """
-- Audit log retention: the pruned prefix of the chain is summed up by one signed checkpoint
-- (engine/audit_checkpoint.py; only the newest row is kept). The chain that remains continues
-- from its last_hash. signature is HMAC-SHA256 with the per-store key in `<db>.audit-key`.
CREATE TABLE audit_checkpoints (
    id          INTEGER PRIMARY KEY,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    first_ts    REAL    NOT NULL,
    last_ts     REAL    NOT NULL,
    last_hash   TEXT    NOT NULL,
    pruned_at   REAL    NOT NULL,
    problem_seq INTEGER,            -- the first pruned entry that did not verify, if any
    problem     TEXT,               -- and why: pruning never launders tampering
    key_id      TEXT    NOT NULL,
    signature   TEXT    NOT NULL
) STRICT;

-- Deleting audit entries is allowed only for entries a checkpoint covers (pruning writes the
-- checkpoint first, in the same transaction). Same name as the v2 guard it replaces.
DROP TRIGGER IF EXISTS audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.seq > coalesce((SELECT max(last_seq) FROM audit_checkpoints), 0)
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: only pruning under a checkpoint deletes');
END;
"""

_V4_PROCESS_CHANGES = """
-- Changes after start (models.py CHANGE_KINDS) are events too, with what changed. SQLite cannot
-- alter a CHECK constraint, so the table is rebuilt with the wider list of kinds; rows keep
-- their ids (rules and the evaluator page through events by id).
CREATE TABLE process_events_v4 (
    id          INTEGER PRIMARY KEY,
    ts          REAL    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('start', 'fork', 'exec', 'exit', 'rename',
                        'uid', 'gid', 'ptrace', 'cwd', 'exe_deleted', 'exe_replaced')),
    pid         INTEGER NOT NULL,
    start_time  REAL    NOT NULL,
    ppid        INTEGER,
    exe         TEXT,
    cmdline     TEXT,
    argv        TEXT,
    exit_code   INTEGER,
    source      TEXT    NOT NULL CHECK (source IN ('poll', 'netlink')),
    partial     INTEGER NOT NULL DEFAULT 0 CHECK (partial IN (0, 1)),
    old_value   TEXT,                        -- a change: the name, id or path before
    new_value   TEXT,                        -- a change: after (ptrace: the tracer's pid)
    exe_setid   INTEGER CHECK (exe_setid IN (0, 1))  -- uid/gid: the exe is setuid/setgid
) STRICT;
INSERT INTO process_events_v4 (id, ts, kind, pid, start_time, ppid, exe, cmdline, argv,
    exit_code, source, partial)
SELECT id, ts, kind, pid, start_time, ppid, exe, cmdline, argv, exit_code, source, partial
FROM process_events;
DROP TABLE process_events;
ALTER TABLE process_events_v4 RENAME TO process_events;
CREATE INDEX process_events_ts ON process_events (ts);
CREATE INDEX process_events_instance ON process_events (pid, start_time);
"""

_V5_PROCESS_CONTEXT = """
-- What a process runs in (issue 14), read with its details at start and exec. Columns on
-- processes, not a table of their own: one row per instance either way, rules read them without
-- a join, and the record that carries them travels as one (docs/process-fields.md).
ALTER TABLE processes ADD COLUMN cgroup TEXT;
ALTER TABLE processes ADD COLUMN container_runtime TEXT;
ALTER TABLE processes ADD COLUMN container_id TEXT;
ALTER TABLE processes ADD COLUMN unit TEXT;
ALTER TABLE processes ADD COLUMN pid_ns INTEGER;
ALTER TABLE processes ADD COLUMN mnt_ns INTEGER;
ALTER TABLE processes ADD COLUMN net_ns INTEGER;
ALTER TABLE processes ADD COLUMN user_ns INTEGER;
ALTER TABLE processes ADD COLUMN ns_foreign TEXT;       -- 'pid mnt net user' differing from PID 1's
ALTER TABLE processes ADD COLUMN session_id INTEGER;
ALTER TABLE processes ADD COLUMN tty TEXT;              -- 'pts/3', 'tty1', NULL: none
ALTER TABLE processes ADD COLUMN loginuid INTEGER;      -- NULL: unset
ALTER TABLE processes ADD COLUMN ssh_client TEXT;       -- 'ADDRESS PORT' from SSH_CONNECTION
ALTER TABLE processes ADD COLUMN ssh_source TEXT;       -- 'process' or 'session leader'
ALTER TABLE processes ADD COLUMN stdin TEXT;            -- '<kind>:<what>'
ALTER TABLE processes ADD COLUMN stdout TEXT;
ALTER TABLE processes ADD COLUMN stderr TEXT;
ALTER TABLE processes ADD COLUMN environment TEXT;      -- JSON object, allow-listed names only
CREATE INDEX processes_container_id ON processes (container_id);
"""

_V6_CONNECTIONS = """
-- The sockets each process instance holds (collector/connections.py, docs/connections.md):
-- one row per (instance, socket inode); ended_at is set when the instance no longer holds it.
-- No foreign key to processes: a socket can be seen before its process row is written.
CREATE TABLE connections (
    id             INTEGER PRIMARY KEY,
    pid            INTEGER NOT NULL,
    start_time     REAL    NOT NULL,
    protocol       TEXT    NOT NULL CHECK (protocol IN ('tcp', 'tcp6', 'udp', 'udp6', 'unix')),
    local_address  TEXT,                -- unix: the socket's path, hostile text
    local_port     INTEGER,
    remote_address TEXT,
    remote_port    INTEGER,
    state          TEXT    NOT NULL,
    inode          INTEGER NOT NULL,
    netns          INTEGER,
    direction      TEXT CHECK (direction IN ('listen', 'inbound', 'outbound')),
    remote_scope   TEXT,
    first_seen     REAL    NOT NULL,
    last_seen      REAL    NOT NULL,
    ended_at       REAL,                -- NULL while held
    UNIQUE (pid, start_time, inode)
) STRICT;

CREATE INDEX connections_ended_at ON connections (ended_at);
CREATE INDEX connections_remote ON connections (remote_address);
CREATE INDEX connections_local_port ON connections (local_port);

CREATE VIEW live_connections AS SELECT * FROM connections WHERE ended_at IS NULL;

-- A process row that retention deletes takes its connections with it.
CREATE TRIGGER processes_delete_connections AFTER DELETE ON processes
BEGIN
    DELETE FROM connections WHERE pid = OLD.pid AND start_time = OLD.start_time;
END;
"""

# -- v7: each exe, command line, argv, cwd, hash and context string stored once ------------------
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


_V7_STRINGS = f"""
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

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "processes, live_processes, process_events, meta", _V1_PROCESSES),
    Migration(2, "alerts, rule_stats, audit_log, sink_outbox, sink_stats", _V2_ALERTS),
    Migration(
        3, "audit log retention: audit_checkpoints, prune-only delete guard", _V3_AUDIT_CHECKPOINTS
    ),
    Migration(4, "process_events: changes after start, old/new values", _V4_PROCESS_CHANGES),
    Migration(5, "process context columns on processes", _V5_PROCESS_CONTEXT),
    Migration(6, "connections, live_connections", _V6_CONNECTIONS),
    Migration(7, "strings stored once: process_rows, event_rows, strings", _V7_STRINGS),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What the header and catalogue of an opened file say about it."""

    user_version: int
    application_id: int
    has_objects: bool

    @property
    def is_empty(self) -> bool:
        """A file with no schema yet: ours to initialise."""
        return self.user_version == 0 and self.application_id == 0 and not self.has_objects


def read_schema_state(conn: apsw.Connection) -> SchemaState:
    """Read the version, application id and whether any schema object exists. Only reads."""
    user_version = int(conn.pragma("user_version"))
    application_id = int(conn.pragma("application_id"))
    has_objects = conn.execute("SELECT EXISTS (SELECT 1 FROM sqlite_schema)").get == 1
    return SchemaState(user_version, application_id, has_objects)


def check_compatible(state: SchemaState, path: Path) -> None:
    """Refuse, before anything is written, a file this code must not migrate."""
    if state.user_version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {state.user_version} is newer than this DaemonEye supports "
            f"({SCHEMA_VERSION}); upgrade DaemonEye or point --db at another file. "
            "The file was left untouched."
        )
    if state.application_id not in (0, APPLICATION_ID):
        raise StoreError(
            f"{path} is an SQLite database of another application "
            f"(application_id {state.application_id:#x}), not a DaemonEye store; "
            "it was left untouched. Point --db at another file."
        )
    if state.application_id == 0 and state.user_version == 0 and state.has_objects:
        raise StoreError(
            f"{path} is an SQLite database that is not a DaemonEye store (it has tables but no "
            "DaemonEye schema); it was left untouched. Point --db at another file."
        )


def migrate(conn: apsw.Connection, path: Path) -> int:
    """Apply every migration newer than the file's version; return the final version.

    Each step re-reads `user_version` inside its write transaction, so two processes opening
    the same new file cannot both apply a step.
    """
    for migration in MIGRATIONS:
        if int(conn.pragma("user_version")) >= migration.version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.pragma("user_version"))
            if current < migration.version:
                if current != migration.version - 1:
                    raise StoreError(
                        f"{path}: cannot migrate from schema version {current} "
                        f"to {migration.version}"
                    )
                conn.execute(migration.sql)
                conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        except BaseException as exc:
            if conn.in_transaction:  # some errors (e.g. disk full) already rolled back
                conn.execute("ROLLBACK")
            if isinstance(exc, apsw.Error):
                raise StoreError(
                    f"{path}: migration to schema version {migration.version} "
                    f"({migration.description}) failed: {exc}"
                ) from exc
            raise
        conn.execute("COMMIT")
    return int(conn.pragma("user_version"))
