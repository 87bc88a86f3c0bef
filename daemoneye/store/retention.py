"""Retention: the store never grows without bound.

History (ended processes, events) older than the retention age is deleted; then, if the data
still exceeds the size cap, the oldest history is deleted until it is under ~90% of the cap, so
the next ticks do not immediately cross the cap again. Rows of live processes are never deleted.

Alerts last seen before the retention age go too, whatever their state, with their outbox rows
(an alert that repeats keeps its `last_seen` fresh and stays); an alert with a delivery still
pending is kept until a sink has taken it. (The delivery worker forgets delivered and dead
outbox rows of alerts that stay.) The audit log is not touched: it is append-only and
hash-chained, and grows only with what people do.
Deletes run in bounded batches, each its own transaction, so readers (which see a snapshot in
WAL mode) never wait and the WAL never has to hold one enormous transaction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import apsw

from daemoneye.store.connection import checkpoint

# Rows per delete transaction.
BATCH_ROWS = 5_000
# Size-driven deletion stops once the used pages fit in this fraction of the cap.
SIZE_TARGET_FRACTION = 0.9


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one retention pass removed and the database size before and after it."""

    processes_deleted: int
    events_deleted: int
    bytes_before: int
    bytes_after: int
    alerts_deleted: int = 0


def database_bytes(conn: apsw.Connection) -> int:
    """The size of the database file as SQLite sees it (page_count * page_size)."""
    return int(conn.pragma("page_count")) * int(conn.pragma("page_size"))


def used_bytes(conn: apsw.Connection) -> int:
    """Bytes in pages that hold data (free pages are reclaimed by incremental_vacuum)."""
    pages = int(conn.pragma("page_count")) - int(conn.pragma("freelist_count"))
    return pages * int(conn.pragma("page_size"))


# Alerts that a sink has yet to take are kept past the retention age.
_NOTHING_PENDING = (
    " AND NOT EXISTS (SELECT 1 FROM sink_outbox"
    " WHERE sink_outbox.alert_id = alerts.id AND sink_outbox.state = 'pending')"
)


def _delete_batched(
    conn: apsw.Connection, table: str, column: str, horizon: float, also: str = ""
) -> int:
    """Delete rows of `table` whose `column` is at or before `horizon` (and that meet the
    `also` condition, " AND ..."), oldest first, in batches. NULL `column` (a live process's
    ended_at) never matches."""
    sql = (
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
        f"WHERE {column} <= ?{also} ORDER BY {column} LIMIT {BATCH_ROWS})"
    )
    deleted = 0
    while True:
        with conn:
            conn.execute(sql, (horizon,))
            batch = conn.changes()  # this statement's rows, not the ones its cascades delete
        deleted += batch
        if batch < BATCH_ROWS:
            return deleted


def _nth_oldest(conn: apsw.Connection, table: str, column: str, n: int) -> float | None:
    """The `column` value of the n-th oldest row (1-based, clamped to the newest), or None."""
    value = conn.execute(
        f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL "
        f"ORDER BY {column} LIMIT 1 OFFSET ?",
        (n - 1,),
    ).get
    if value is None:
        value = conn.execute(f"SELECT max({column}) FROM {table}").get
    return None if value is None else float(value)


def _trim_to_size(conn: apsw.Connection, max_bytes: int) -> tuple[int, int]:
    """Delete the oldest history until the used pages fit under SIZE_TARGET_FRACTION of
    `max_bytes`, or only live rows remain. Returns (processes, events) deleted.

    Each round deletes about the fraction of rows the file is over target, up to one time
    horizon shared by both tables, so the oldest history goes first whichever table holds it.
    """
    target = int(max_bytes * SIZE_TARGET_FRACTION)
    processes_deleted = events_deleted = 0
    while (used := used_bytes(conn)) > target:
        excess = (used - target) / used
        ended = int(conn.execute("SELECT count(*) FROM processes WHERE ended_at IS NOT NULL").get)
        events = int(conn.execute("SELECT count(*) FROM process_events").get)
        if ended == 0 and events == 0:
            break
        horizons = [
            h
            for h in (
                _nth_oldest(conn, "processes", "ended_at", max(1, math.ceil(ended * excess)))
                if ended
                else None,
                _nth_oldest(conn, "process_events", "ts", max(1, math.ceil(events * excess)))
                if events
                else None,
            )
            if h is not None
        ]
        horizon = min(horizons)
        processes_deleted += _delete_batched(conn, "processes", "ended_at", horizon)
        events_deleted += _delete_batched(conn, "process_events", "ts", horizon)
    return processes_deleted, events_deleted


def run(conn: apsw.Connection, *, max_age_s: float, max_bytes: int, now: float) -> RetentionResult:
    """One retention pass on the writer's connection (see the module docstring)."""
    bytes_before = database_bytes(conn)
    cutoff = now - max_age_s
    # Strictly older than the cutoff: `_delete_batched` is inclusive, so step just below it.
    horizon = math.nextafter(cutoff, -math.inf)
    processes_deleted = _delete_batched(conn, "processes", "ended_at", horizon)
    events_deleted = _delete_batched(conn, "process_events", "ts", horizon)
    # Their outbox rows go with them (ON DELETE CASCADE).
    alerts_deleted = _delete_batched(conn, "alerts", "last_seen", horizon, _NOTHING_PENDING)
    if used_bytes(conn) > max_bytes:
        more_processes, more_events = _trim_to_size(conn, max_bytes)
        processes_deleted += more_processes
        events_deleted += more_events
    if int(conn.pragma("freelist_count")):
        conn.execute("PRAGMA incremental_vacuum").fetchall()
    checkpoint(conn)  # best effort: an active reader only postpones the truncation
    return RetentionResult(
        processes_deleted=processes_deleted,
        events_deleted=events_deleted,
        bytes_before=bytes_before,
        bytes_after=database_bytes(conn),
        alerts_deleted=alerts_deleted,
    )
