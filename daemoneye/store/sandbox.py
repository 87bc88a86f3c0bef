"""The walls around user-supplied SQL (`daemoneye query`, rules): what a statement may do.

`daemoneye query` and the rule engine share this one sandbox. The authorizer is the main wall:
SQLite asks it about every action while compiling a statement, and it allows only reading the
documented tables and views and calling an allow-list of functions. The read-only connection and
`query_only` are the second wall; the connection settings below close doors the authorizer is
never asked about.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field
from typing import Any

import apsw

from daemoneye.errors import QueryError
from daemoneye.store.schema import MIGRATIONS

# Reading tables and views, calling functions, and WITH RECURSIVE (bounded by the time budget).
ALLOWED_ACTIONS = frozenset(
    {apsw.SQLITE_SELECT, apsw.SQLITE_READ, apsw.SQLITE_FUNCTION, apsw.SQLITE_RECURSIVE}
)

# The names user SQL may read (ARCHITECTURE.md §3). `all_processes` is a temporary view every
# sandbox connection gets: the whole `processes` history even where the rule engine shadows
# `processes` with the rows under evaluation. `alerts` exists from the schema version that
# adds it; json_each/json_tree are table-valued functions over argv. Everything else — the
# catalogue (sqlite_schema), meta, audit_log, sink_outbox, pragma_* tables — is refused.
READABLE_TABLES = frozenset(
    {
        "processes",
        "live_processes",
        "all_processes",
        "process_events",
        "alerts",
        "json_each",
        "json_tree",
    }
)

# Pure functions over values (zeroblob's size is capped by MAX_VALUE_BYTES like any value).
# Not here on purpose: load_extension, fts3_tokenizer, sqlite_log (writes the log),
# randomblob/random (noise, CPU), changes/total_changes/last_insert_rowid and sqlite_* (state
# of the connection, not of the data), fts/rtree/geopoly.
ALLOWED_FUNCTIONS = frozenset(
    {
        # core scalar
        "abs", "char", "coalesce", "concat", "concat_ws", "format", "glob", "hex", "if",
        "ifnull", "iif", "instr", "length", "like", "likelihood", "likely", "lower", "ltrim",
        "max", "min", "nullif", "octet_length", "printf", "quote", "replace", "round", "rtrim",
        "sign", "substr", "substring", "trim", "typeof", "unhex", "unicode", "unlikely",
        "upper", "regexp", "zeroblob",
        # aggregate
        "avg", "count", "group_concat", "string_agg", "sum", "total", "median",
        # window
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag",
        "lead", "first_value", "last_value", "nth_value",
        # date and time
        "date", "time", "datetime", "julianday", "strftime", "unixepoch", "timediff",
        "current_date", "current_time", "current_timestamp",
        # math
        "ceil", "ceiling", "floor", "trunc", "mod", "pow", "power", "sqrt", "exp", "ln", "log",
        "log10", "log2", "pi",
        # JSON (argv is a JSON array)
        "json", "json_valid", "json_type", "json_extract", "json_array_length", "json_array",
        "json_object", "json_quote", "json_error_position", "json_group_array",
        "json_group_object", "->", "->>",
    }
)  # fmt: skip

# Writing these is how SQLite reports CREATE/DROP/ALTER to the authorizer first.
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema"})
_TEMP_SCHEMA_TABLES = frozenset({"sqlite_temp_master", "sqlite_temp_schema"})

# A query longer than this is refused before it is compiled.
MAX_SQL_BYTES = 1024 * 1024
# No string or blob a query builds may exceed this: one `zeroblob(1e9)` would otherwise
# allocate a gigabyte in whoever runs the query (the daemon, for IPC queries).
MAX_VALUE_BYTES = 16 * 1024 * 1024

# The view every sandbox connection adds: the full history under a name the rule engine never
# shadows (see engine/evaluator.py).
ALL_PROCESSES_VIEW = "CREATE TEMP VIEW IF NOT EXISTS all_processes AS SELECT * FROM main.processes"


def describe_action(action: int, arg1: str | None, arg2: str | None) -> str:
    """A person-readable name for an authorizer action, e.g. "INSERT into 'processes'"."""
    code_name = str(apsw.mapping_authorizer_function.get(action, f"action {action}"))
    words = code_name.removeprefix("SQLITE_").replace("_", " ")
    if action in (apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE):
        if arg1 in _TEMP_SCHEMA_TABLES:
            return "creating or dropping temporary objects"
        if arg1 in _SCHEMA_TABLES:
            return "changing the schema (CREATE, DROP, ALTER)"
        preposition = {"INSERT": "into", "UPDATE": "of", "DELETE": "from"}[words]
        return f"{words} {preposition} {arg1!r}"
    if action == apsw.SQLITE_PRAGMA:
        return f"PRAGMA {arg1}" + (f" = {arg2}" if arg2 is not None else "")
    if action == apsw.SQLITE_READ:
        if arg1 and arg1.lower().startswith("pragma_"):
            return f"PRAGMA {arg1[len('pragma_') :]} (reading {arg1!r})"
        return f"reading {arg1!r} (readable: {', '.join(sorted(_DOCUMENTED_TABLES))})"
    if action == apsw.SQLITE_FUNCTION:
        return f"function {arg2}() (not on the allow-list)"
    details = " ".join(repr(arg) for arg in (arg1, arg2) if arg)
    return f"{words} {details}".strip()


_DOCUMENTED_TABLES = READABLE_TABLES - {"json_each", "json_tree"}


def _schema_object_names() -> frozenset[str]:
    """Every table and view this code's migrations create: the names a CTE must not stand in
    for (see `is_allowed`)."""
    created = re.compile(
        r"CREATE\s+(?:TEMP\s+|TEMPORARY\s+)?(?:VIRTUAL\s+)?(?:TABLE|VIEW)\s+"
        r"(?:IF\s+NOT\s+EXISTS\s+)?[\"`\[]?(\w+)",
        re.IGNORECASE,
    )
    return frozenset(
        name.lower() for migration in MIGRATIONS for name in created.findall(migration.sql)
    )


_SCHEMA_OBJECTS = _schema_object_names()


def is_allowed(action: int, arg1: str | None, arg2: str | None) -> bool:
    """The sandbox's policy for one authorizer call."""
    if action == apsw.SQLITE_READ:
        if arg1 is None:
            return False
        name = arg1.lower()
        if name in READABLE_TABLES:
            return True
        # SQLite reports a FROM item whose columns are never read (`count(*) FROM c`) with an
        # empty column — and a CTE's name then looks like a table's. Allow that only for names
        # that are no schema object (rows, never values).
        return (
            arg2 == ""
            and name not in _SCHEMA_OBJECTS
            and not name.startswith(("sqlite_", "pragma_"))
        )
    if action == apsw.SQLITE_FUNCTION:
        return arg2 is not None and arg2.lower() in ALLOWED_FUNCTIONS
    return action in ALLOWED_ACTIONS


@dataclass(slots=True)
class ReadOnlyAuthorizer:
    """Allows what `is_allowed` allows and refuses everything else, remembering what it
    refused so the error can name it."""

    refused: list[str] = field(default_factory=list)

    def __call__(
        self,
        action: int,
        arg1: str | None,
        arg2: str | None,
        db_name: str | None,
        trigger_or_view: str | None,
    ) -> int:
        if is_allowed(action, arg1, arg2):
            return apsw.SQLITE_OK
        self.refused.append(describe_action(action, arg1, arg2))
        return apsw.SQLITE_DENY


def harden(conn: apsw.Connection) -> None:
    """Settings for a connection that runs user SQL: the `all_processes` view and `regexp`,
    then no writes even if the authorizer had a gap, no extensions, no attached files, bounded
    statement and value sizes."""
    conn.execute(ALL_PROCESSES_VIEW)
    register_functions(conn)
    conn.pragma("query_only", True)
    conn.enable_load_extension(False)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0)
    conn.limit(apsw.SQLITE_LIMIT_ATTACHED, 0)
    conn.limit(apsw.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES)
    conn.limit(apsw.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)


def register_functions(conn: apsw.Connection) -> None:
    """Functions SQLite lacks that rules need: `x REGEXP pattern` / `regexp(pattern, x)`."""
    # apsw types scalar functions as variadic; this one takes exactly two arguments.
    conn.create_scalar_function("regexp", regexp, 2, deterministic=True)  # type: ignore[arg-type]


# -- regexp -------------------------------------------------------------------------------------
# Python's `re` backtracks and cannot be interrupted: SQLite's progress handler does not run
# while a function runs. So patterns are limited to shapes without catastrophic backtracking
# (no nested or alternating quantified groups, no back-references, few unbounded repeats) and
# only the first MAX_REGEXP_SUBJECT characters of a value are searched.
MAX_REGEXP_PATTERN = 256
MAX_REGEXP_SUBJECT = 64 * 1024
MAX_UNBOUNDED_REPEATS = 4
# The stdlib's own regular-expression parser: private, but the only exact view of a pattern.
_sre_parse: Any = importlib.import_module("re._parser")


class UnsafePatternError(QueryError):
    """A regexp pattern the sandbox refuses to run. Raised from inside SQLite, so it reaches
    the caller of the statement as itself, not as an apsw.Error."""


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile `pattern` once, after checking it is safe to run (UnsafePatternError)."""
    if len(pattern) > MAX_REGEXP_PATTERN:
        raise UnsafePatternError(
            f"regexp pattern is {len(pattern)} characters long (at most {MAX_REGEXP_PATTERN})"
        )
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UnsafePatternError(f"bad regexp pattern {pattern!r}: {exc}") from None
    _check_shape(pattern)
    return compiled


# pattern -> its bound `search`: the hot path of a rule scanning every row skips the checks.
_searches: dict[str, Any] = {}


def regexp(pattern: object, value: object) -> int | None:
    """SQLite's `value REGEXP pattern`: 1 when `pattern` is found anywhere in `value`."""
    search = _searches.get(pattern) if isinstance(pattern, str) else None
    if search is None:
        if pattern is None or value is None:
            return None
        if not isinstance(pattern, str):
            raise UnsafePatternError("regexp pattern must be text")
        search = compile_pattern(pattern).search
        if len(_searches) >= 512:
            _searches.clear()
        _searches[pattern] = search
    if value is None:
        return None
    subject = value if isinstance(value, str) else str(value)
    if len(subject) > MAX_REGEXP_SUBJECT:
        subject = subject[:MAX_REGEXP_SUBJECT]
    return 1 if search(subject) is not None else 0


def _check_shape(pattern: str) -> None:
    """Refuse the pattern shapes that backtrack catastrophically in `re`."""
    unbounded = 0

    def walk(items: Any, in_repeat: bool) -> None:
        nonlocal unbounded
        for op, av in items:
            name = str(op)
            if name in ("GROUPREF", "GROUPREF_EXISTS"):
                raise UnsafePatternError(f"regexp {pattern!r}: back-references are not allowed")
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                _low, high, sub = av
                repeats = high is _sre_parse.MAXREPEAT or int(high) > 1
                if repeats and in_repeat:
                    raise UnsafePatternError(
                        f"regexp {pattern!r}: a repeated group may not contain another "
                        "repeat (catastrophic backtracking)"
                    )
                if high is _sre_parse.MAXREPEAT:
                    unbounded += 1
                walk(sub, in_repeat or repeats)
            elif name == "BRANCH":
                if in_repeat:
                    raise UnsafePatternError(
                        f"regexp {pattern!r}: a repeated group may not contain alternatives "
                        "(catastrophic backtracking)"
                    )
                for branch in av[1]:
                    walk(branch, in_repeat)
            elif name in ("SUBPATTERN", "ASSERT", "ASSERT_NOT"):
                walk(av[-1], in_repeat)
            elif name == "ATOMIC_GROUP":
                walk(av, in_repeat)

    walk(_sre_parse.parse(pattern), False)
    if unbounded > MAX_UNBOUNDED_REPEATS:
        raise UnsafePatternError(
            f"regexp {pattern!r} has {unbounded} unbounded repeats "
            f"(at most {MAX_UNBOUNDED_REPEATS})"
        )
