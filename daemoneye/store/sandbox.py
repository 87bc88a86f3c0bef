"""The walls around user-supplied SQL (`daemoneye query`, rules): what a statement may do.

`daemoneye query` and the rule engine share this one sandbox. The authorizer is the main wall:
SQLite asks it about every action while compiling a statement, and it allows only reading the
documented tables and views and calling an allow-list of functions. The read-only connection and
`query_only` are the second wall; the connection settings below close doors the authorizer is
never asked about.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from typing import Protocol

import apsw
import re2

from daemoneye.errors import QueryError
from daemoneye.store.schema import MIGRATIONS
from daemoneye.store.sigma_match import sigma_match

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
        "connections",
        "live_connections",
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
        "upper", "regexp", "zeroblob", "sigma_match",
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
# LIKE and GLOB cost up to the pattern's length times the text's and cannot be interrupted;
# a pattern built from a process's text (`x LIKE '%' || p.cmdline || '%'`) must not reach
# SQLite's default of 50,000 bytes (about 2 s over one 64 KiB command line).
MAX_LIKE_PATTERN_BYTES = 1024

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


# Where the documented views keep their data (schema v7, store/strings.py): readable only
# through those views, never named by user SQL itself.
_BEHIND_VIEWS = frozenset({"process_rows", "event_rows", "strings"})


def _through_a_view(action: int, table: str | None, column: str | None, view: str | None) -> bool:
    """A read of the documented views' data through them. SQLite reports a flattened
    `count(*)` over a view as a read of its base table with no column and no view: rows,
    never values, so that is allowed too."""
    if action != apsw.SQLITE_READ or table is None or table.lower() not in _BEHIND_VIEWS:
        return False
    return column == "" or (view is not None and view.lower() in READABLE_TABLES)


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
        if is_allowed(action, arg1, arg2) or _through_a_view(action, arg1, arg2, trigger_or_view):
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
    conn.limit(apsw.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, MAX_LIKE_PATTERN_BYTES)


def register_functions(conn: apsw.Connection, deadline: Expiry | None = None) -> None:
    """Functions SQLite lacks that rules need: `x REGEXP pattern` / `regexp(pattern, x)`, and
    `sigma_match` for rules converted from Sigma.

    With `deadline`, REGEXP refuses to start a search once the statement's budget is spent
    (BudgetExceeded): SQLite's progress handler only runs between VM steps, never inside a
    function, so the function checks the clock itself."""
    # apsw types scalar functions as variadic; this one takes exactly two arguments.
    conn.create_scalar_function(
        "regexp",
        Regexp(deadline),  # type: ignore[arg-type]
        2,
        deterministic=True,
    )
    # Sigma's case-insensitive matching (casefold, not ASCII-only like LIKE): sigma_match.py.
    conn.create_scalar_function(
        "sigma_match",
        sigma_match,  # type: ignore[arg-type]
        -1,
        deterministic=True,
    )


# -- regexp -------------------------------------------------------------------------------------
# Patterns run on RE2 (google-re2), which searches in time linear in the subject and never
# backtracks, and releases the GIL while it searches. The cost of one search is bounded by the
# subject's length times the size of the compiled program, so both are capped: at most
# MAX_REGEXP_SUBJECT bytes (UTF-8) of a value are searched, and a pattern may be at most
# MAX_REGEXP_PATTERN characters long and compile to at most MAX_REGEXP_PROGRAM instructions
# (`[a-z]{300}` is 300 of them). At the caps one search of a crafted value costs ~100 ms on a
# 2020 laptop core; the built-in pack's patterns take well under a millisecond.
MAX_REGEXP_PATTERN = 512
MAX_REGEXP_PROGRAM = 400
MAX_REGEXP_SUBJECT = 64 * 1024
# Compiled patterns kept (least recently used dropped first); each RE2 object is bounded by
# REGEXP_MAX_MEM.
REGEXP_CACHE_SIZE = 256
REGEXP_MAX_MEM = 8 * 1024 * 1024


class Expiry(Protocol):
    """Anything with a monotonic `expires` time: the running statement's deadline."""

    expires: float


@dataclass(slots=True)
class StatementDeadline:
    """A plain Expiry: the owner sets `expires` before each statement and resets it after."""

    expires: float = float("inf")


class UnsafePatternError(QueryError):
    """A regexp pattern the sandbox refuses to run. Raised from inside SQLite, so it reaches
    the caller of the statement as itself, not as an apsw.Error."""


class BudgetExceeded(QueryError):
    """A statement ran past its time budget and was aborted."""


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = REGEXP_MAX_MEM
    options.never_capture = True  # only "is there a match": groups would force slower engines
    options.log_errors = False  # RE2 would write each bad pattern to stderr
    return options


_OPTIONS = _options()


@functools.lru_cache(maxsize=REGEXP_CACHE_SIZE)
def compile_pattern(pattern: str) -> re2._Regexp[str]:
    """Compile `pattern` with RE2 once (UnsafePatternError says why it cannot run)."""
    if len(pattern) > MAX_REGEXP_PATTERN:
        raise UnsafePatternError(
            f"regexp pattern is {len(pattern)} characters long (at most {MAX_REGEXP_PATTERN})"
        )
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise UnsafePatternError(
            f"regexp pattern {pattern!r} is not valid RE2 syntax: {reason} (RE2 has no "
            "back-references or look-around; see https://github.com/google/re2/wiki/Syntax)"
        ) from None
    if compiled.programsize > MAX_REGEXP_PROGRAM:
        raise UnsafePatternError(
            f"regexp pattern {pattern!r} is too complex: it compiles to {compiled.programsize} "
            f"instructions (at most {MAX_REGEXP_PROGRAM}; large counted repeats such as "
            "`x{500}` cost the most)"
        )
    return compiled


@dataclass(slots=True)
class Regexp:
    """SQLite's `value REGEXP pattern`: 1 when `pattern` is found anywhere in `value`."""

    deadline: Expiry | None = None

    def __call__(self, pattern: object, value: object) -> int | None:
        if pattern is None or value is None:
            return None
        if not isinstance(pattern, str):
            raise UnsafePatternError("regexp pattern must be text")
        compiled = compile_pattern(pattern)
        if self.deadline is not None and time.monotonic() > self.deadline.expires:
            raise BudgetExceeded("the time budget ran out during REGEXP")
        if isinstance(value, bytes):
            subject = value[:MAX_REGEXP_SUBJECT]
        else:
            text = value if isinstance(value, str) else str(value)
            subject = text[:MAX_REGEXP_SUBJECT].encode("utf-8", "surrogatepass")
            subject = subject[:MAX_REGEXP_SUBJECT]
        return 1 if compiled.search(subject) is not None else 0


regexp = Regexp()
