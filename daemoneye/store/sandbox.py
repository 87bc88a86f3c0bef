"""The walls around user-supplied SQL (`daemoneye query`, rules): what a statement may do.

The authorizer is the main wall: SQLite asks it about every action while compiling a statement,
and it allows only reading. The read-only connection and `query_only` are the second wall; the
connection settings below close doors the authorizer is never asked about.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apsw

# Reading tables and views, calling functions, and WITH RECURSIVE (bounded by the time budget).
ALLOWED_ACTIONS = frozenset(
    {apsw.SQLITE_SELECT, apsw.SQLITE_READ, apsw.SQLITE_FUNCTION, apsw.SQLITE_RECURSIVE}
)

# Writing these is how SQLite reports CREATE/DROP/ALTER to the authorizer first.
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema"})
_TEMP_SCHEMA_TABLES = frozenset({"sqlite_temp_master", "sqlite_temp_schema"})

# A query longer than this is refused before it is compiled.
MAX_SQL_BYTES = 1024 * 1024
# No string or blob a query builds may exceed this: one `zeroblob(1e9)` would otherwise
# allocate a gigabyte in whoever runs the query (the daemon, for IPC queries).
MAX_VALUE_BYTES = 16 * 1024 * 1024


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
    details = " ".join(repr(arg) for arg in (arg1, arg2) if arg)
    return f"{words} {details}".strip()


@dataclass(slots=True)
class ReadOnlyAuthorizer:
    """Allows ALLOWED_ACTIONS and refuses everything else, remembering what it refused so the
    error can name it."""

    refused: list[str] = field(default_factory=list)

    def __call__(
        self,
        action: int,
        arg1: str | None,
        arg2: str | None,
        db_name: str | None,
        trigger_or_view: str | None,
    ) -> int:
        if action in ALLOWED_ACTIONS:
            return apsw.SQLITE_OK
        self.refused.append(describe_action(action, arg1, arg2))
        return apsw.SQLITE_DENY


def harden(conn: apsw.Connection) -> None:
    """Settings for a connection that runs user SQL: no writes even if the authorizer had a
    gap, no extensions, no attached files, bounded statement and value sizes."""
    conn.pragma("query_only", True)
    conn.enable_load_extension(False)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0)
    conn.limit(apsw.SQLITE_LIMIT_ATTACHED, 0)
    conn.limit(apsw.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES)
    conn.limit(apsw.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
