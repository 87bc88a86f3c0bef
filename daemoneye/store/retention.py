"""Retention: the store never grows without bound.

History (ended processes, events) older than the retention age is deleted; then, if the data
still exceeds the size cap, the oldest history is deleted until it is under ~90% of the cap, so
the next ticks do not immediately cross the cap again. Rows of live processes are never deleted.

Alerts last seen before the retention age go too, whatever their state, with their outbox rows
(an alert that repeats keeps its `last_seen` fresh and stays); an alert with a delivery still
pending is kept until a sink has taken it. (The delivery worker forgets delivered and dead
outbox rows of alerts that stay.)

The audit log has its own bounds (`store.audit_retention`, `store.audit_max_bytes`): the caller
passes a pruner (engine/audit_prune.py, which keeps the hash chain verifiable under a signed
checkpoint) that runs after the age pass. The size cap `max_bytes` applies to everything but
the audit log, so a large audit log (a flood of refused admin calls, say) never costs history:
history is trimmed only for its own share.

Deletes run in bounded batches, each its own transaction, so readers (which see a snapshot in
WAL mode) never wait and the WAL never has to hold one enormous transaction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import apsw

from daemoneye.errors import StoreError
from daemoneye.store.connection import checkpoint
from daemoneye.store.strings import BASE_TABLES, drop_unused

# History lives in these base tables (the views `processes` and `process_events` read them).
_PROCESSES = BASE_TABLES["processes"]
_EVENTS = BASE_TABLES["process_events"]

# Rows per delete transaction.
BATCH_ROWS = 5_000
# Size-driven deletion stops once the used pages fit in this fraction of the cap.
SIZE_TARGET_FRACTION = 0.9
# The audit log's tables: bounded by their own keys, not counted in history's share.
AUDIT_TABLES = ("audit_log", "audit_checkpoints")
# Prunes the audit log on the writer's connection at time `now`; returns entries pruned.
AuditPruner = Callable[[apsw.Connection, float], int]


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one retention pass removed and the database size before and after it."""

    processes_deleted: int
    events_deleted: int
    bytes_before: int
    bytes_after: int
    alerts_deleted: int = 0
    audit_entries_pruned: int = 0
    audit_error: str | None = None  # why the audit log could not be pruned, if it could not


def database_bytes(conn: apsw.Connection) -> int:
    """The size of the database file as SQLite sees it (page_count * page_size)."""
    return int(conn.pragma("page_count")) * int(conn.pragma("page_size"))


def used_bytes(conn: apsw.Connection) -> int:
    """Bytes in pages that hold data (free pages are reclaimed by incremental_vacuum)."""
    pages = int(conn.pragma("page_count")) - int(conn.pragma("freelist_count"))
    return pages * int(conn.pragma("page_size"))


def table_bytes(conn: apsw.Connection, tables: tuple[str, ...]) -> int:
    """Bytes in the pages of `tables` and their indexes (SQLite's dbstat; without it, an
    estimate from the audit log's row lengths, the only table this is asked about)."""
    total = 0
    try:
        for table in tables:
            total += int(
                conn.execute(
                    "SELECT coalesce(sum(pgsize), 0) FROM dbstat('main', 1) "
                    "WHERE name = ? OR name IN (SELECT name FROM sqlite_schema "
                    "WHERE type = 'index' AND tbl_name = ?)",
                    (table, table),
                ).get
            )
    except apsw.SQLError:
        total = int(
            conn.execute(
                "SELECT coalesce(sum(length(CAST(detail AS BLOB)) + length(actor) + 200), 0) "
                "FROM audit_log"
            ).get
        )
    return total


def history_bytes(conn: apsw.Connection) -> int:
    """Used bytes that count against `max_bytes`: everything but the audit log."""
    return max(0, used_bytes(conn) - table_bytes(conn, AUDIT_TABLES))


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
    """Delete the oldest history until the used pages but the audit log's fit under
    SIZE_TARGET_FRACTION of `max_bytes`, or only live rows remain. Returns (processes,
    events) deleted.

    Each round deletes about the fraction of rows the file is over target, up to one time
    horizon shared by both tables, so the oldest history goes first whichever table holds it.
    """
    target = int(max_bytes * SIZE_TARGET_FRACTION)
    processes_deleted = events_deleted = 0
    while (used := history_bytes(conn)) > target:
        excess = (used - target) / used
        ended = int(
            conn.execute(f"SELECT count(*) FROM {_PROCESSES} WHERE ended_at IS NOT NULL").get
        )
        events = int(conn.execute(f"SELECT count(*) FROM {_EVENTS}").get)
        if ended == 0 and events == 0:
            break
        horizons = [
            h
            for h in (
                _nth_oldest(conn, _PROCESSES, "ended_at", max(1, math.ceil(ended * excess)))
                if ended
                else None,
                _nth_oldest(conn, _EVENTS, "ts", max(1, math.ceil(events * excess)))
                if events
                else None,
            )
            if h is not None
        ]
        horizon = min(horizons)
        processes_deleted += _delete_batched(conn, _PROCESSES, "ended_at", horizon)
        events_deleted += _delete_batched(conn, _EVENTS, "ts", horizon)
        drop_unused(conn)
    return processes_deleted, events_deleted


def run(
    conn: apsw.Connection,
    *,
    max_age_s: float,
    max_bytes: int,
    now: float,
    prune_audit: AuditPruner | None = None,
) -> RetentionResult:
    """One retention pass on the writer's connection (see the module docstring). A pruner
    that fails (StoreError) leaves the audit log as it is and says why in the result; the
    history pass runs regardless."""
    bytes_before = database_bytes(conn)
    cutoff = now - max_age_s
    # Strictly older than the cutoff: `_delete_batched` is inclusive, so step just below it.
    horizon = math.nextafter(cutoff, -math.inf)
    processes_deleted = _delete_batched(conn, _PROCESSES, "ended_at", horizon)
    events_deleted = _delete_batched(conn, _EVENTS, "ts", horizon)
    drop_unused(conn)
    # Their outbox rows go with them (ON DELETE CASCADE).
    alerts_deleted = _delete_batched(conn, "alerts", "last_seen", horizon, _NOTHING_PENDING)
    audit_pruned, audit_error = 0, None
    if prune_audit is not None:
        try:
            audit_pruned = prune_audit(conn, now)
        except StoreError as exc:
            audit_error = str(exc)
    if history_bytes(conn) > max_bytes:
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
        audit_entries_pruned=audit_pruned,
        audit_error=audit_error,
    )
