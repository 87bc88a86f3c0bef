"""The persistent outbox (`sink_outbox`) and its counters (`sink_stats`): queueing an alert for
each sink in the alert's own transaction, taking due rows, recording the outcome of each
attempt, pruning, and the read side — backlog and health per sink, deliveries of one alert —
shared by the daemon, IPC and the CLI. `daemoneye.engine.delivery` drives it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import apsw

from daemoneye.models import AlertDelivery as DeliveryStatus
from daemoneye.store.db import RowSource, SQLValue, Store
from daemoneye.text import shorten

# Delivered rows are kept this long (for `alerts show`), dead ones this long (for inspection).
DELIVERED_KEEP_S = 3600.0
DEAD_KEEP_S = 30 * 86400.0
PRUNE_EVERY_S = 60.0
# A backlog older than this, a sink failing right now, or a dead letter younger than
# DEAD_RECENT_S makes `health` unhealthy.
STUCK_AFTER_S = 60.0
DEAD_RECENT_S = 86400.0
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One pending delivery of one alert occurrence to one sink."""

    id: int
    alert_id: int
    sink: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class SinkHealth:
    """A sink's backlog and history, as `daemoneye health` shows it."""

    sink: str
    configured: bool  # False: rows are queued for a sink that is no longer enabled
    pending: int
    dead: int
    oldest_pending_at: float | None
    delivered_total: int
    failed_attempts_total: int
    dead_total: int
    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None
    last_dead_at: float | None


# -- outbox rows ---------------------------------------------------------------------------


def enqueue(
    conn: apsw.Connection,
    alert_id: int,
    sinks: Sequence[str],
    payload: Mapping[str, Any],
    now: float,
    delivered: Mapping[str, float] | None = None,
) -> None:
    """One row per sink for `payload`, on the caller's (alert) transaction: pending, or
    already delivered for a sink in `delivered` (sink -> when it took the alert while the
    alert was held in memory), which counts as that sink's success."""
    if not sinks:
        return
    taken = delivered or {}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    conn.executemany(
        "INSERT INTO sink_outbox (alert_id, sink, payload, attempts, next_attempt_at, state, "
        "created_at, delivered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (alert_id, sink, text, 1, taken[sink], "delivered", now, taken[sink])
            if sink in taken
            else (alert_id, sink, text, 0, now, "pending", now, None)
            for sink in sinks
        ],
    )
    for sink in sinks:
        if sink in taken:
            conn.execute(_BUMP_STATS, (sink, 1, 0, 0, taken[sink], None, None))


def due_items(store: Store, sink: str, now: float, limit: int) -> list[OutboxItem]:
    """The sink's pending rows whose time has come, oldest first."""
    rows = store.fetch_rows(
        "SELECT id, alert_id, payload, attempts FROM sink_outbox "
        "WHERE sink = ? AND state = 'pending' AND next_attempt_at <= ? "
        "ORDER BY next_attempt_at, id LIMIT ?",
        (sink, now, limit),
    )
    items = []
    for row_id, alert_id, payload, attempts in rows:
        items.append(
            OutboxItem(
                int(cast(int, row_id)),
                int(cast(int, alert_id)),
                sink,
                json.loads(str(payload)),
                int(cast(int, attempts)),
            )
        )
    return items


def next_due_at(store: Store, sink: str) -> float | None:
    """When the sink's earliest pending row becomes due, or None when nothing is pending."""
    rows = store.fetch_rows(
        "SELECT min(next_attempt_at) FROM sink_outbox WHERE sink = ? AND state = 'pending'", (sink,)
    )
    value = rows[0][0] if rows else None
    return None if value is None else float(cast(float, value))


_BUMP_STATS = """
INSERT INTO sink_stats (sink, delivered_total, failed_attempts_total, dead_total,
                        last_success_at, last_error, last_error_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (sink) DO UPDATE SET
    delivered_total = delivered_total + excluded.delivered_total,
    failed_attempts_total = failed_attempts_total + excluded.failed_attempts_total,
    dead_total = dead_total + excluded.dead_total,
    last_success_at = coalesce(excluded.last_success_at, last_success_at),
    last_error = CASE WHEN excluded.last_error_at IS NULL THEN last_error
                      ELSE excluded.last_error END,
    last_error_at = coalesce(excluded.last_error_at, last_error_at)
"""


def mark_delivered(store: Store, item: OutboxItem, now: float) -> None:
    mark_all_delivered(store, [item], now)


def mark_all_delivered(store: Store, items: Sequence[OutboxItem], now: float) -> None:
    """Mark rows of one sink delivered, in one transaction (a batch the sink took at once)."""
    if not items:
        return
    with store.transaction(f"marking {len(items)} outbox row(s) delivered") as conn:
        conn.executemany(
            "UPDATE sink_outbox SET state = 'delivered', delivered_at = ?, "
            "attempts = attempts + 1, last_error = NULL WHERE id = ? AND state = 'pending'",
            [(now, item.id) for item in items],
        )
        conn.execute(_BUMP_STATS, (items[0].sink, len(items), 0, 0, now, None, None))


def mark_alert_delivered(store: Store, alert_id: int, sink: str, now: float) -> int:
    """Mark the pending rows of one alert for one sink delivered (the sink took the alert
    while it was held in memory, and it was written meanwhile); how many rows that was."""
    with store.transaction(f"marking alert {alert_id} delivered to {sink}") as conn:
        before = conn.total_changes()
        conn.execute(
            "UPDATE sink_outbox SET state = 'delivered', delivered_at = ?, "
            "attempts = attempts + 1, last_error = NULL "
            "WHERE alert_id = ? AND sink = ? AND state = 'pending'",
            (now, alert_id, sink),
        )
        changed = conn.total_changes() - before
        if changed:
            conn.execute(_BUMP_STATS, (sink, changed, 0, 0, now, None, None))
        return changed


def mark_failed(
    store: Store, item: OutboxItem, error: str, now: float, *, retry_at: float | None
) -> str:
    """Charge the row one attempt; `retry_at` None dead-letters it. Returns the new state."""
    error = shorten(error, _MAX_ERROR_CHARS)
    state = "dead" if retry_at is None else "pending"
    with store.transaction(f"recording a failed delivery of outbox row {item.id}") as conn:
        conn.execute(
            "UPDATE sink_outbox SET state = ?, attempts = attempts + 1, last_error = ?, "
            "next_attempt_at = ? WHERE id = ? AND state = 'pending'",
            (state, error, now if retry_at is None else retry_at, item.id),
        )
        conn.execute(_BUMP_STATS, (item.sink, 0, 1, int(state == "dead"), None, error, now))
    return state


def prune(store: Store, sink: str, now: float) -> int:
    """Forget delivered rows older than DELIVERED_KEEP_S and dead ones older than
    DEAD_KEEP_S; the counters in sink_stats keep their history."""
    with store.transaction(f"pruning the {sink} outbox") as conn:
        before = conn.total_changes()
        conn.execute(
            "DELETE FROM sink_outbox WHERE sink = ? AND ((state = 'delivered' AND "
            "delivered_at < ?) OR (state = 'dead' AND next_attempt_at < ?))",
            (sink, now - DELIVERED_KEEP_S, now - DEAD_KEEP_S),
        )
        return conn.total_changes() - before


# -- read side (daemon, IPC, CLI) ----------------------------------------------------------


def _opt_float(value: SQLValue) -> float | None:
    return None if value is None else float(cast(float, value))


def sink_health(source: RowSource, configured: Sequence[str] = ()) -> list[SinkHealth]:
    """Backlog and counters of every sink that is configured or has outbox history."""
    backlog: dict[str, tuple[int, int, float | None, float | None]] = {}
    for sink, pending, dead, oldest, last_dead in source.fetch_rows(
        "SELECT sink, sum(state = 'pending'), sum(state = 'dead'), "
        "min(CASE WHEN state = 'pending' THEN created_at END), "
        "max(CASE WHEN state = 'dead' THEN next_attempt_at END) "
        "FROM sink_outbox WHERE state != 'delivered' GROUP BY sink"
    ):
        backlog[str(sink)] = (
            int(cast(int, pending)),
            int(cast(int, dead)),
            _opt_float(oldest),
            _opt_float(last_dead),
        )
    stats: dict[str, tuple[SQLValue, ...]] = {
        str(row[0]): row[1:]
        for row in source.fetch_rows(
            "SELECT sink, delivered_total, failed_attempts_total, dead_total, last_success_at, "
            "last_error, last_error_at FROM sink_stats"
        )
    }
    names = list(dict.fromkeys([*configured, *sorted(set(backlog) | set(stats))]))
    result = []
    for name in names:
        pending, dead, oldest, last_dead = backlog.get(name, (0, 0, None, None))
        delivered, failed, dead_total, success_at, error, error_at = stats.get(
            name, (0, 0, 0, None, None, None)
        )
        result.append(
            SinkHealth(
                sink=name,
                configured=name in configured,
                pending=pending,
                dead=dead,
                oldest_pending_at=oldest,
                delivered_total=int(cast(int, delivered)),
                failed_attempts_total=int(cast(int, failed)),
                dead_total=int(cast(int, dead_total)),
                last_success_at=_opt_float(success_at),
                last_error=None if error is None else str(error),
                last_error_at=_opt_float(error_at),
                last_dead_at=last_dead,
            )
        )
    return result


def failing_now(health: SinkHealth) -> bool:
    """True when the sink's last attempt failed (no success since its last error) and alerts
    are waiting for it."""
    return (
        health.pending > 0
        and health.last_error_at is not None
        and (health.last_success_at is None or health.last_error_at >= health.last_success_at)
    )


def health_problems(
    healths: Sequence[SinkHealth], now: float, *, stuck_after_s: float = STUCK_AFTER_S
) -> list[str]:
    """Sentences for HealthReport.problems: a sink failing right now or whose oldest waiting
    alert has waited longer than `stuck_after_s`, recent dead letters, alerts queued for a sink
    that is no longer configured."""
    problems = []
    for h in healths:
        waited = now - h.oldest_pending_at if h.oldest_pending_at is not None else 0.0
        failing = failing_now(h)
        if h.pending and h.configured and (failing or waited > stuck_after_s):
            if failing:
                # Failing since the later of its last success and its oldest waiting alert.
                since = max(h.oldest_pending_at or now, h.last_success_at or 0.0)
                state = f"failing for {max(0.0, now - since):.0f}s: {h.last_error}"
            else:
                state = f"the oldest for {waited:.0f}s"
                if h.last_error:
                    state += f"; last error: {h.last_error}"
            problems.append(f"sink {h.sink}: {h.pending} alerts waiting, {state}")
        if h.pending and not h.configured:
            problems.append(
                f"sink {h.sink}: {h.pending} alerts queued but the sink is not "
                "enabled; enable it again to deliver them"
            )
        if h.last_dead_at is not None and now - h.last_dead_at < DEAD_RECENT_S:
            problems.append(
                f"sink {h.sink}: {h.dead} alerts dead-lettered (not delivered "
                f"after retries); last error: {h.last_error or 'unknown'}"
            )
    return problems


def deliveries_of(source: RowSource, alert_id: int) -> list[DeliveryStatus]:
    """Every outbox row of one alert still kept, oldest first."""
    rows = source.fetch_rows(
        "SELECT sink, state, attempts, next_attempt_at, last_error, created_at, delivered_at "
        "FROM sink_outbox WHERE alert_id = ? ORDER BY id",
        (alert_id,),
    )
    return [
        DeliveryStatus(
            str(sink),
            str(state),
            int(cast(int, attempts)),
            float(cast(float, next_at)),
            None if error is None else str(error),
            float(cast(float, created)),
            _opt_float(delivered),
        )
        for sink, state, attempts, next_at, error, created, delivered in rows
    ]
