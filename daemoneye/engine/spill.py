"""Alerts held in memory while the store cannot be written (disk full, failing device).

When the transaction that records a tick's alerts fails with `StoreUnwritable`, the alert book
keeps each new alert here instead, with an alert id reserved past the store's newest, and the
delivery threads hand it to their sinks straight from here — a file sink on another filesystem
or a webhook does not wait for the disk. Once a write succeeds again the book writes every held
alert with its delivery state: an outbox row that is already `delivered` for each sink that took
it, `pending` for the others. At least once, and no sink gets a held alert twice unless it took
it in the very moment the alert was written.

The spill is bounded by count and by bytes: what does not fit is counted (`dropped_total`),
logged and shown by `health`, never kept. Thread-safe: the writer thread holds and writes,
each sink thread takes and confirms.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import apsw

from daemoneye.engine import audit
from daemoneye.engine.alert_queries import row_json
from daemoneye.engine.outbox import enqueue
from daemoneye.models import Alert, Detection

DEFAULT_MAX_ALERTS = 10_000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024

AlertKey = tuple[str, int, float]  # (rule id, pid, start time): what dedup is keyed by


@dataclass(slots=True, eq=False)
class HeldAlert:
    """One new alert the store could not take yet, and which sinks already have it."""

    alert: Alert
    detection: Detection
    payload: dict[str, Any]
    sinks: tuple[str, ...]  # the sinks it is queued for
    raised_at: float
    size: int  # bytes of its payload, for the spill's bound
    delivered: dict[str, float] = field(default_factory=dict)  # sink -> when it took it
    refused: set[str] = field(default_factory=set)  # sinks that refused it for good
    written_as: int | None = None  # the alert's id once it is in the store

    @property
    def key(self) -> AlertKey:
        return (self.alert.rule_id, self.alert.pid, self.alert.start_time)


@dataclass(frozen=True, slots=True)
class Held:
    """What a write of the spill takes: held alerts, repeats of stored alerts, throttled."""

    alerts: tuple[HeldAlert, ...]
    repeats: dict[int, tuple[int, float]]  # stored alert id -> (detections, last seen)
    suppressed: dict[str, tuple[int, float]]  # rule id -> (held back, last time)


class AlertSpill:
    """The bounded in-memory holding area (see the module docstring)."""

    def __init__(
        self, max_alerts: int = DEFAULT_MAX_ALERTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.max_alerts = max_alerts
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._alerts: dict[AlertKey, HeldAlert] = {}
        self._repeats: dict[int, tuple[int, float]] = {}
        self._suppressed: dict[str, tuple[int, float]] = {}
        self._raised_at: dict[str, float] = {}  # rule id -> its last held alert (throttle)
        self._bytes = 0
        self._next_id = 0
        self.dropped_total = 0  # alerts that did not fit: lost to the store
        self.held_total = 0  # alerts ever held
        self.written_total = 0  # held alerts written to the store since

    # -- the writer's side -----------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._alerts)

    @property
    def busy(self) -> bool:
        """True when anything waits to be written."""
        with self._lock:
            return bool(self._alerts or self._repeats or self._suppressed)

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def reserve_id(self, store_max_id: int) -> int:
        """An alert id past the store's newest and every id reserved before: the id the alert
        keeps when it is written, so sinks see the same `event_id` as the store will."""
        with self._lock:
            self._next_id = max(self._next_id, store_max_id + 1)
            reserved = self._next_id
            self._next_id += 1
            return reserved

    def get(self, key: AlertKey) -> HeldAlert | None:
        with self._lock:
            return self._alerts.get(key)

    def hold(self, held: HeldAlert) -> bool:
        """Keep `held`; False (and counted as dropped) when the spill is full."""
        with self._lock:
            if len(self._alerts) >= self.max_alerts or self._bytes + held.size > self.max_bytes:
                self.dropped_total += 1
                return False
            self._alerts[held.key] = held
            self._bytes += held.size
            self._raised_at[held.alert.rule_id] = held.raised_at
            self.held_total += 1
            return True

    def repeat(self, key: AlertKey, now: float) -> HeldAlert | None:
        """A held alert seen again: count it; None when `key` is not held."""
        with self._lock:
            held = self._alerts.get(key)
            if held is None:
                return None
            alert = held.alert
            held.alert = Alert(
                alert.id,
                alert.rule_id,
                alert.severity,
                alert.title,
                alert.pid,
                alert.start_time,
                alert.first_seen,
                max(alert.last_seen, now),
                alert.count + 1,
                alert.state,
                alert.state_changed_at,
                alert.state_changed_by,
                alert.row,
            )
            return held

    def repeat_stored(self, alert_id: int, now: float) -> None:
        """An alert already in the store seen again: its count is raised when written."""
        with self._lock:
            count, last = self._repeats.get(alert_id, (0, now))
            self._repeats[alert_id] = (count + 1, max(last, now))

    def suppress(self, rule_id: str, now: float) -> None:
        """The rule's throttle held a new alert back (counted in rule_stats when written)."""
        with self._lock:
            count, last = self._suppressed.get(rule_id, (0, now))
            self._suppressed[rule_id] = (count + 1, max(last, now))

    def last_raised(self, rule_id: str) -> float | None:
        """When the rule's newest held alert was raised (its throttle's clock while held)."""
        with self._lock:
            return self._raised_at.get(rule_id)

    @contextmanager
    def writing(self) -> Iterator[Held]:
        """Everything held, for one write transaction. The lock is kept for the write, so no
        sink confirms a delivery the write does not see; when the block ends without an error
        the alerts are gone from the spill (sinks delivering one right then are told its id)."""
        with self._lock:
            held = Held(tuple(self._alerts.values()), dict(self._repeats), dict(self._suppressed))
            yield held
            for alert in held.alerts:
                self._alerts.pop(alert.key, None)
            self._bytes = sum(a.size for a in self._alerts.values())
            self._repeats.clear()
            self._suppressed.clear()
            self._raised_at.clear()
            self.written_total += len(held.alerts)

    # -- the sink threads' side ------------------------------------------------------------
    def waiting_for(self, sink: str) -> list[HeldAlert]:
        """The held alerts queued for `sink` that it has not taken yet, oldest first."""
        with self._lock:
            return [
                a
                for a in self._alerts.values()
                if sink in a.sinks and sink not in a.delivered and sink not in a.refused
            ]

    def refused(self, held: HeldAlert, sink: str) -> None:
        """`sink` refused `held` for good: it waits for the store, whose outbox dead-letters
        it with the reason once it is written."""
        with self._lock:
            held.refused.add(sink)

    def delivered(self, held: HeldAlert, sink: str, now: float) -> int | None:
        """`sink` took `held`. None when that is recorded here (it goes into the store with the
        alert); the alert's id when the alert was written meanwhile, so the caller marks the
        store's outbox row delivered instead."""
        with self._lock:
            if held.written_as is not None:
                return held.written_as
            held.delivered[sink] = now
            return None


def payload_size(payload: dict[str, Any]) -> int:
    """Bytes a payload takes as JSON: the spill's measure of an alert."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def raised_detail(alert: Alert, occurrence: int) -> dict[str, Any]:
    """The audit log's detail of a new alert occurrence (alert.raised / alert.reopened)."""
    return {
        "alert_id": alert.id,
        "rule_id": alert.rule_id,
        "severity": alert.severity,
        "pid": alert.pid,
        "start_time": alert.start_time,
        "title": alert.title,
        "occurrence": occurrence,
    }


def write_held_alert(conn: apsw.Connection, held: HeldAlert, actor: str) -> int:
    """Write one held alert on the caller's transaction — the alert under its reserved id (a
    new id only if that one was taken), its rule's counters, one outbox row per sink (already
    delivered where the sink took it) and its audit entry — and return its id. An alert for
    the same (rule, instance) that reached the store meanwhile just counts the repeats."""
    alert = held.alert
    existing = conn.execute(
        "SELECT id FROM alerts WHERE rule_id = ? AND pid = ? AND start_time = ?",
        (alert.rule_id, alert.pid, alert.start_time),
    ).get
    if existing is not None:
        conn.execute(
            "UPDATE alerts SET count = count + ?, last_seen = max(last_seen, ?) WHERE id = ?",
            (alert.count, alert.last_seen, existing),
        )
        return int(cast(int, existing))
    taken = conn.execute("SELECT 1 FROM alerts WHERE id = ?", (alert.id,)).get is not None
    values = (
        alert.rule_id,
        alert.severity,
        alert.title,
        alert.pid,
        alert.start_time,
        alert.first_seen,
        alert.last_seen,
        alert.count,
        row_json(held.detection.row),
    )
    if taken:
        alert_id = int(conn.execute(_INSERT.format(id_column="", id_value=""), values).get)
    else:
        alert_id = int(
            conn.execute(_INSERT.format(id_column="id, ", id_value="?, "), (alert.id, *values)).get
        )
    payload = held.payload
    if alert_id != alert.id:
        payload = {
            **payload,
            "alert_id": alert_id,
            "event_id": f"{payload.get('host', '')}/{alert_id}/1",
        }
    conn.execute(
        "INSERT INTO rule_stats (rule_id, alerts_raised, last_raised_at) VALUES (?, 1, ?) "
        "ON CONFLICT (rule_id) DO UPDATE SET alerts_raised = alerts_raised + 1, "
        "last_raised_at = max(coalesce(last_raised_at, 0), excluded.last_raised_at)",
        (alert.rule_id, held.raised_at),
    )
    enqueue(conn, alert_id, held.sinks, payload, held.raised_at, delivered=held.delivered)
    detail = raised_detail(alert, 1)
    detail["alert_id"] = alert_id
    audit.append(conn, "alert.raised", actor, detail, held.raised_at)
    return alert_id


_INSERT = """
INSERT INTO alerts ({id_column}rule_id, severity, title, pid, start_time, first_seen, last_seen,
    count, row)
VALUES ({id_value}?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id
"""
