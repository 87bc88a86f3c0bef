"""The `connections` table: writing a refresh's changes and reading connections back.

Columns are the fields of `models.Connection`, in order (the migration in schema.py creates
them; tests/unit/test_connections_store.py checks that the two agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, Protocol

from daemoneye.models import Connection, ConnectionsDelta
from daemoneye.store.rows import safe_optional

CONNECTION_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Connection))
_COLUMN_LIST = ", ".join(CONNECTION_COLUMNS)
_CHANGING = (
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "state",
    "netns",
    "direction",
    "remote_scope",
    "last_seen",
)

# A socket seen again after a restart keeps its first_seen; one that was ended and is held
# again (a restart that missed nothing) is open again.
_UPSERT = f"""
INSERT INTO connections ({_COLUMN_LIST}) VALUES ({", ".join("?" * len(CONNECTION_COLUMNS))})
ON CONFLICT (pid, start_time, inode) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in (*_CHANGING, "protocol"))},
    first_seen = min(connections.first_seen, excluded.first_seen),
    ended_at = NULL
"""
_UPDATE = (
    f"UPDATE connections SET {', '.join(f'{c} = ?' for c in _CHANGING)} "
    "WHERE pid = ? AND start_time = ? AND inode = ?"
)
_END = (
    "UPDATE connections SET ended_at = ? "
    "WHERE pid = ? AND start_time = ? AND inode = ? AND ended_at IS NULL"
)
SELECT_CONNECTIONS = f"SELECT {_COLUMN_LIST} FROM connections"

SQLValue = int | float | str | bytes | None


class Writer(Protocol):
    def executemany(self, statement: str, sequenceofbindings: Any) -> Any: ...


class RowReader(Protocol):
    def fetch_rows(
        self, sql: str, params: Sequence[SQLValue] = ()
    ) -> list[tuple[SQLValue, ...]]: ...


def connection_row(conn: Connection) -> tuple[SQLValue, ...]:
    """The row of one connection in CONNECTION_COLUMNS order (a unix path made valid UTF-8)."""
    values: list[SQLValue] = [getattr(conn, name) for name in CONNECTION_COLUMNS]
    if conn.protocol == "unix":
        values[CONNECTION_COLUMNS.index("local_address")] = safe_optional(conn.local_address)
    return tuple(values)


def write_delta(writer: Writer, delta: ConnectionsDelta) -> None:
    """Write one refresh (inside the caller's transaction)."""
    if delta.opened:
        writer.executemany(_UPSERT, [connection_row(c) for c in delta.opened])
    if delta.changed:
        changing = [
            (
                *(
                    safe_optional(getattr(c, n)) if n == "local_address" else getattr(c, n)
                    for n in _CHANGING
                ),
                c.pid,
                c.start_time,
                c.inode,
            )
            for c in delta.changed
        ]
        writer.executemany(_UPDATE, changing)
    if delta.closed:
        writer.executemany(
            _END, [(c.ended_at or delta.ts, c.pid, c.start_time, c.inode) for c in delta.closed]
        )


def connection_from_row(row: Sequence[Any]) -> Connection:
    return Connection(*row)


def read_connections(
    store: RowReader, where: str = "", params: Sequence[SQLValue] = (), limit: int = 100_000
) -> list[Connection]:
    """Connections matching a trusted `where` clause written in this package."""
    sql = f"{SELECT_CONNECTIONS} {where} ORDER BY pid, start_time, inode LIMIT {int(limit)}"
    return [connection_from_row(row) for row in store.fetch_rows(sql, params)]


def live_connections(store: RowReader) -> list[Connection]:
    """Every connection still held, as the store last had it."""
    return read_connections(store, "WHERE ended_at IS NULL")
