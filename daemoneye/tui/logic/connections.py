"""The dashboard's view of the sockets processes hold (fetched with `connections.list`)."""

from __future__ import annotations

from collections.abc import Iterable

from daemoneye.models import Connection, ProcessKey

# How often the processes screen asks again: the daemon refreshes its table every
# `collector.connections_interval` (5 s by default).
CONNECTIONS_REFRESH_S = 5.0


def connections_by_instance(
    connections: Iterable[Connection],
) -> dict[ProcessKey, tuple[Connection, ...]]:
    """The connections grouped by the instance that holds them."""
    grouped: dict[ProcessKey, list[Connection]] = {}
    for conn in connections:
        grouped.setdefault(conn.key, []).append(conn)
    return {key: tuple(conns) for key, conns in grouped.items()}
