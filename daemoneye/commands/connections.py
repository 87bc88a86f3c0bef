"""`daemoneye connections [FILTER]`: the sockets each live process holds."""

from __future__ import annotations

import sys

from daemoneye.commands.common import Context, format_time, note, with_daemon_or_store
from daemoneye.commands.health import staleness_note
from daemoneye.connection_filter import parse_connection_filter
from daemoneye.daemon.connection_answers import (
    connections_page,
    live_from_store,
    names_from_store,
)
from daemoneye.ipc.protocol import ConnectionsPage
from daemoneye.models import Connection
from daemoneye.output import render
from daemoneye.store.connections import CONNECTION_COLUMNS
from daemoneye.store.readonly import ReadOnlyStore

TABLE_COLUMNS = ("pid", "name", "proto", "local", "remote", "state", "dir", "since")
# json, ndjson, csv: every field of the connection, and the holder's name after the pid.
FULL_COLUMNS = ("pid", "name", *(c for c in CONNECTION_COLUMNS if c != "pid"))


def endpoint(address: str | None, port: int | None) -> str:
    """'10.0.0.1:443', '[2001:db8::1]:22', a unix path, or '*' for none."""
    if address is None:
        return "*" if port is None else f"*:{port}"
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _table_row(conn: Connection, name: str | None) -> tuple[object, ...]:
    return (
        conn.pid,
        name or "",
        conn.protocol,
        endpoint(conn.local_address, conn.local_port),
        endpoint(conn.remote_address, conn.remote_port) if conn.protocol != "unix" else "",
        conn.state,
        conn.direction or "",
        format_time(conn.first_seen),
    )


def _full_row(conn: Connection, name: str | None) -> tuple[object, ...]:
    values = {column: getattr(conn, column) for column in CONNECTION_COLUMNS}
    return (conn.pid, name, *(values[c] for c in FULL_COLUMNS[2:]))


def list_connections(ctx: Context, filter_text: str) -> int:
    connection_filter = parse_connection_filter(filter_text)  # a bad term fails here

    def from_store(store: ReadOnlyStore) -> ConnectionsPage:
        stale = staleness_note(ctx)
        if stale:
            note(stale)
        page = connections_page(
            live_from_store(store), connection_filter, None, 10**9, None, names_from_store(store)
        )
        return page

    page = with_daemon_or_store(
        ctx, lambda client: client.connections_list(filter_text), from_store
    )
    if page.at is None and not page.connections:
        note("no connections known: connection collection is off or has not run yet")
    names = page.names or (None,) * len(page.connections)
    if ctx.output == "table":
        rows = [_table_row(c, n) for c, n in zip(page.connections, names, strict=True)]
        render(TABLE_COLUMNS, rows, "table", sys.stdout)
    else:
        rows = [_full_row(c, n) for c, n in zip(page.connections, names, strict=True)]
        render(FULL_COLUMNS, rows, ctx.output, sys.stdout)
    return 0
