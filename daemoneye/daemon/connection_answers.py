"""`connections.list` answered from the collector's last refresh (in memory) or, without a
daemon, from the store's `live_connections`."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping

from daemoneye.collector.connections import live_connections as flatten
from daemoneye.connection_filter import ConnectionFilter
from daemoneye.ipc import protocol
from daemoneye.ipc.codec import to_wire
from daemoneye.models import Connection, ProcessKey
from daemoneye.store.connections import RowReader, live_connections


def _order(conn: Connection) -> tuple[int, float, int]:
    return (conn.pid, conn.start_time, conn.inode)


def connections_page(
    connections: Iterable[Connection],
    connection_filter: ConnectionFilter,
    after: tuple[int, float, int] | None,
    limit: int,
    at: float | None,
    name_of: Callable[[ProcessKey], str | None] = lambda key: None,
) -> protocol.ConnectionsPage:
    """One page of the matching connections (sorted by pid, start_time, inode) that fits in
    one message, with their holders' names."""
    matching = sorted((c for c in connections if connection_filter.matches(c)), key=_order)
    start = 0 if after is None else bisect.bisect_right(matching, tuple(after), key=_order)
    chosen: list[Connection] = []
    size = 0
    next_key: tuple[int, float, int] | None = None
    for conn in matching[start:]:
        item = len(protocol.dumps(to_wire(conn))) + 1
        if len(chosen) >= limit or (chosen and size + item > protocol.CHUNK_BYTES):
            next_key = _order(chosen[-1])
            break
        chosen.append(conn)
        size += item
    names = tuple(name_of(conn.key) for conn in chosen)
    return protocol.ConnectionsPage(tuple(chosen), len(matching), next_key, at, names)


def live_from_memory(
    by_key: Mapping[ProcessKey, tuple[Connection, ...]],
) -> list[Connection]:
    return flatten(by_key)


def by_instance(connections: Iterable[Connection]) -> dict[ProcessKey, tuple[Connection, ...]]:
    """Connections grouped by the instance that holds them (for `port:`/`remote:` terms)."""
    grouped: dict[ProcessKey, list[Connection]] = {}
    for conn in connections:
        grouped.setdefault(conn.key, []).append(conn)
    return {key: tuple(conns) for key, conns in grouped.items()}


def live_from_store(store: RowReader) -> list[Connection]:
    return live_connections(store)


def names_from_store(store: RowReader) -> Callable[[ProcessKey], str | None]:
    """The names of the live instances that hold a connection, as the store has them."""
    rows = store.fetch_rows(
        "SELECT pid, start_time, name FROM processes WHERE ended_at IS NULL AND EXISTS "
        "(SELECT 1 FROM live_connections c WHERE c.pid = processes.pid "
        "AND c.start_time = processes.start_time)"
    )
    names = {ProcessKey(int(pid), float(start)): str(name) for pid, start, name in rows}  # type: ignore[arg-type]
    return names.get
