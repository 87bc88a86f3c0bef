"""Alerts: detections deduplicated by (rule id, process instance), throttled per rule, moved
through open → acknowledged → closed by people, announced to sinks and audited.

Writer side: `AlertBook`, used on the store's writer thread. One `record` call writes the
alerts, their outbox rows and their audit entries in one transaction, so a crash leaves either
all of a tick's alerts with their deliveries queued, or none of them.

Dedup and its windows, per (rule, process instance):
- first detection → a new alert (`raised`): one outbox row per enabled sink, audit alert.raised;
- again while open or acknowledged → `count` + 1 and `last_seen` (`repeated`; nothing is sent);
- again while closed → counted the same way, and it stays closed — unless the rule has a
  `dedup_window_s` and the instance was quiet (no detection, no state change) for at least that
  long: then the alert reopens in place as a new `occurrence` (`reopened`: sent to the sinks
  again, audited as alert.reopened). One row per instance stays the invariant.
- `throttle_s`: at most one new alert (raised or reopened) per rule per window, measured from
  the rule's last one (kept in `rule_stats`, so it survives restarts). Detections held back are
  counted in `rule_stats.alerts_suppressed` and dropped; repeats of existing alerts are never
  throttled.

While the store cannot be written (disk full: `StoreUnwritable`), new alerts are held in memory
(`daemoneye.engine.spill`) and reach the sinks from there; `write_held` puts them into the store,
with their delivery state, once a write succeeds again — `record` tries that first, every time.

Read side: `daemoneye.engine.alert_queries` (listing with filters, one alert, counters).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import apsw

from daemoneye.engine import audit
from daemoneye.engine.alert_queries import (
    COLUMNS_SQL,
    AlertError,
    alert_from_row,
    row_json,
)
from daemoneye.engine.outbox import enqueue
from daemoneye.engine.sinks.base import iso_time
from daemoneye.engine.spill import (
    AlertSpill,
    HeldAlert,
    payload_size,
    raised_detail,
    write_held_alert,
)
from daemoneye.errors import StoreError, StoreUnwritable
from daemoneye.models import ALERT_STATES, SEVERITIES, Alert, Detection, Rule
from daemoneye.store.db import SQLValue, Store
from daemoneye.store.rows import safe_text

log = logging.getLogger(__name__)

_RETURNING = f"RETURNING {COLUMNS_SQL}, occurrence"
# Which state a person may move an alert to, from each state. Reopening is the dedup window's.
TRANSITIONS: Mapping[str, tuple[str, ...]] = {
    "open": ("acknowledged", "closed"),
    "acknowledged": ("closed",),
    "closed": (),
}
DEDUP_WINDOW_ACTOR = "daemon (dedup window)"

_INSERT = f"""
INSERT INTO alerts (rule_id, severity, title, pid, start_time, first_seen, last_seen, row)
VALUES (?, ?, ?, ?, ?, ?, ?, ?) {_RETURNING}
"""
_REOPEN = f"""
UPDATE alerts SET state = 'open', state_changed_at = ?1, state_changed_by = ?2,
    count = count + 1, last_seen = max(last_seen, ?1), occurrence = occurrence + 1,
    severity = ?3, title = ?4, row = ?5
WHERE id = ?6 {_RETURNING}
"""
_REPEAT = f"""
UPDATE alerts SET count = count + 1, last_seen = max(last_seen, ?) WHERE id = ? {_RETURNING}
"""
_SET_STATE = f"""
UPDATE alerts SET state = ?, state_changed_at = ?, state_changed_by = ? WHERE id = ? {_RETURNING}
"""
RowValue = str | int | float | None


class NoSuchAlert(AlertError):
    """No alert has the given id."""


class InvalidTransition(AlertError):
    """The alert cannot move to the requested state from the one it is in."""


@dataclass(frozen=True, slots=True)
class AlertChange:
    """What happened to one alert: raised, repeated, reopened, acknowledged or closed."""

    kind: str
    alert: Alert
    occurrence: int


def alert_payload(
    alert: Alert, rule: Rule | None, *, event: str, occurrence: int, host: str, ts: float
) -> dict[str, Any]:
    """The JSON object every sink receives for one alert occurrence. `event_id` is the same
    for every sink and every retry, so a receiver can drop duplicates."""
    return {
        "event": event,
        "event_id": f"{host}/{alert.id}/{occurrence}",
        "ts": ts,
        "time": iso_time(ts),
        "host": host,
        "alert_id": alert.id,
        "occurrence": occurrence,
        "rule_id": alert.rule_id,
        "rule_name": rule.name if rule else alert.rule_id,
        "description": rule.description if rule else "",
        "tags": list(rule.tags) if rule else [],
        "severity": alert.severity,
        "title": alert.title,
        "pid": alert.pid,
        "start_time": alert.start_time,
        "first_seen": alert.first_seen,
        "last_seen": alert.last_seen,
        "count": alert.count,
        "state": alert.state,
        "row": {column: value for column, value in alert.row},
    }


# -- writer --------------------------------------------------------------------------------


def _known_severity(detection: Detection) -> bool:
    if detection.severity in SEVERITIES:
        return True
    log.warning(
        "rule %s produced a detection with unknown severity %r; skipped",
        detection.rule_id,
        detection.severity,
    )
    return False


def _one(cursor: apsw.Cursor) -> tuple[SQLValue, ...]:
    """The one row a RETURNING statement yields."""
    row = cursor.fetchone()
    if row is None:  # pragma: no cover - RETURNING on a row that exists always yields it
        raise AssertionError("the statement returned no row")
    return tuple(row)


class AlertBook:
    """Alerts on the store's writer connection; use it from the writer's thread.

    `sinks` are the names of the enabled sinks (`enabled_sink_names(config.sinks)`): each new
    alert occurrence gets one outbox row per name. `actor` names the daemon in the audit log.
    """

    def __init__(
        self,
        store: Store,
        *,
        sinks: Sequence[str] = (),
        actor: str = "daemon",
        host: str | None = None,
    ) -> None:
        self.store = store
        self.sinks: tuple[str, ...] = tuple(sinks)
        self.actor = actor
        self.host = host or socket.gethostname()
        # Shared with the delivery threads (DeliveryWorker.spill) by the daemon.
        self.spill = AlertSpill()

    def set_sinks(self, sinks: Sequence[str]) -> None:
        """Change which sinks future alerts are queued for (after a configuration reload)."""
        self.sinks = tuple(sinks)

    def record(
        self, detections: Sequence[Detection], rules: Mapping[str, Rule], now: float
    ) -> list[AlertChange]:
        """Turn one tick's detections into alert changes, in one transaction with their outbox
        rows and audit entries (nested as a savepoint when the caller has one open). A
        detection of a rule missing from `rules` is recorded without dedup window or
        throttle."""
        changes: list[AlertChange] = []
        detections = [d for d in detections if _known_severity(d)]
        if not detections:
            return changes
        try:
            self.write_held(now)  # held alerts first: their reserved ids come before new ones
            with self.store.transaction("recording alerts") as conn:
                for detection in detections:
                    change = self._record_one(conn, detection, rules.get(detection.rule_id), now)
                    if change is not None:
                        changes.append(change)
        except StoreUnwritable:
            return self._hold(detections, rules, now)
        return changes

    # -- while the store cannot be written ---------------------------------------------------
    def _hold(
        self, detections: Sequence[Detection], rules: Mapping[str, Rule], now: float
    ) -> list[AlertChange]:
        """Dedup and throttle against the store (reads still work) and the spill, and hold
        each new alert in memory with an id reserved for it."""
        changes: list[AlertChange] = []
        for detection in detections:
            key = (detection.rule_id, detection.pid, detection.start_time)
            held = self.spill.repeat(key, now)
            if held is not None:
                changes.append(AlertChange("repeated", held.alert, 1))
                continue
            stored, max_id, last_raised = self._stored_state(detection)
            if stored is not None:
                self.spill.repeat_stored(stored, now)  # reopening waits for the store
                continue
            rule = rules.get(detection.rule_id)
            held_last = self.spill.last_raised(detection.rule_id)
            last = max((t for t in (last_raised, held_last) if t is not None), default=None)
            if (
                rule is not None
                and rule.throttle_s
                and last is not None
                and (0 <= now - last < rule.throttle_s)
            ):
                self.spill.suppress(detection.rule_id, now)
                continue
            alert = Alert(
                self.spill.reserve_id(max_id),
                detection.rule_id,
                detection.severity,
                safe_text(detection.title),
                detection.pid,
                detection.start_time,
                now,
                now,
                1,
                "open",
                None,
                None,
                tuple(detection.row),
            )
            payload = alert_payload(
                alert, rule, event="alert.raised", occurrence=1, host=self.host, ts=now
            )
            held = HeldAlert(alert, detection, payload, self.sinks, now, payload_size(payload))
            if self.spill.hold(held):
                changes.append(AlertChange("raised", alert, 1))
            elif self.spill.dropped_total == 1 or self.spill.dropped_total % 1000 == 0:
                log.error(
                    "the store cannot be written and %d alerts are already held in memory: "
                    "%d alerts dropped so far (delivery.max_held_alerts / "
                    "max_held_bytes); this one: %s",
                    len(self.spill),
                    self.spill.dropped_total,
                    safe_text(detection.title),
                )
        return changes

    def _stored_state(self, detection: Detection) -> tuple[int | None, int, float | None]:
        """The stored alert of this detection's (rule, instance), the newest alert id, and
        the rule's last raised time; nothing is known when reading fails too."""
        try:
            stored = self.store.fetch_rows(
                "SELECT id FROM alerts WHERE rule_id = ? AND pid = ? AND start_time = ?",
                (detection.rule_id, detection.pid, detection.start_time),
            )
            max_id = self.store.fetch_rows("SELECT coalesce(max(id), 0) FROM alerts")[0][0]
            last = self.store.fetch_rows(
                "SELECT last_raised_at FROM rule_stats WHERE rule_id = ?", (detection.rule_id,)
            )
        except StoreError:
            return None, 0, None
        return (
            int(cast(int, stored[0][0])) if stored else None,
            int(cast(int, max_id)),
            float(cast(float, last[0][0])) if last and last[0][0] is not None else None,
        )

    def write_held(self, now: float) -> int:
        """Write the alerts held in memory, with their delivery state, in one transaction;
        how many were written. Raises StoreUnwritable (they stay held) when it cannot."""
        if not self.spill.busy:
            return 0
        with self.spill.writing() as held:
            written: list[tuple[HeldAlert, int]] = []
            with self.store.transaction("writing the alerts held in memory") as conn:
                for alert in held.alerts:
                    written.append((alert, write_held_alert(conn, alert, self.actor)))
                for alert_id, (count, last_seen) in held.repeats.items():
                    conn.execute(
                        "UPDATE alerts SET count = count + ?, last_seen = max(last_seen, ?) "
                        "WHERE id = ?",
                        (count, last_seen, alert_id),
                    )
                for rule_id, (count, last_at) in held.suppressed.items():
                    conn.execute(
                        "INSERT INTO rule_stats (rule_id, alerts_suppressed, last_suppressed_at) "
                        "VALUES (?, ?, ?) ON CONFLICT (rule_id) DO UPDATE SET alerts_suppressed"
                        " = alerts_suppressed + excluded.alerts_suppressed, last_suppressed_at ="
                        " excluded.last_suppressed_at",
                        (rule_id, count, last_at),
                    )
            for alert, alert_id in written:
                alert.written_as = alert_id
        return len(written)

    def _record_one(
        self, conn: apsw.Connection, detection: Detection, rule: Rule | None, now: float
    ) -> AlertChange | None:
        existing = conn.execute(
            "SELECT id, state, last_seen, state_changed_at FROM alerts "
            "WHERE rule_id = ? AND pid = ? AND start_time = ?",
            (detection.rule_id, detection.pid, detection.start_time),
        ).fetchone()
        if existing is None:
            if self._throttled(conn, detection.rule_id, rule, now):
                return None
            row = _one(
                conn.execute(
                    _INSERT,
                    (
                        detection.rule_id,
                        detection.severity,
                        safe_text(detection.title),
                        detection.pid,
                        detection.start_time,
                        now,
                        now,
                        row_json(detection.row),
                    ),
                )
            )
            return self._announce(conn, row, rule, "raised", now)
        alert_id, state, last_seen, changed_at = existing
        quiet_since = max(float(last_seen), float(changed_at or last_seen))
        window = rule.dedup_window_s if rule is not None else None
        if state == "closed" and window is not None and now - quiet_since >= window:
            if self._throttled(conn, detection.rule_id, rule, now):
                return None
            row = _one(
                conn.execute(
                    _REOPEN,
                    (
                        now,
                        DEDUP_WINDOW_ACTOR,
                        detection.severity,
                        safe_text(detection.title),
                        row_json(detection.row),
                        alert_id,
                    ),
                )
            )
            return self._announce(conn, row, rule, "reopened", now)
        row = _one(conn.execute(_REPEAT, (now, alert_id)))
        return AlertChange("repeated", alert_from_row(row), int(cast(int, row[-1])))

    def _throttled(
        self, conn: apsw.Connection, rule_id: str, rule: Rule | None, now: float
    ) -> bool:
        """True (and counted) when the rule's throttle holds back a new alert now."""
        if rule is None or not rule.throttle_s:
            return False
        last = conn.execute(
            "SELECT last_raised_at FROM rule_stats WHERE rule_id = ?", (rule_id,)
        ).get
        if last is None or not 0 <= now - float(last) < rule.throttle_s:
            return False
        conn.execute(
            "INSERT INTO rule_stats (rule_id, alerts_suppressed, last_suppressed_at) "
            "VALUES (?, 1, ?) ON CONFLICT (rule_id) DO UPDATE SET "
            "alerts_suppressed = alerts_suppressed + 1, last_suppressed_at = excluded."
            "last_suppressed_at",
            (rule_id, now),
        )
        return True

    def _announce(
        self,
        conn: apsw.Connection,
        row: Sequence[SQLValue],
        rule: Rule | None,
        kind: str,
        now: float,
    ) -> AlertChange:
        """Count, queue for every sink and audit a new occurrence."""
        alert = alert_from_row(row)
        occurrence = int(cast(int, row[-1]))
        event = f"alert.{kind}"
        conn.execute(
            "INSERT INTO rule_stats (rule_id, alerts_raised, last_raised_at) VALUES (?, 1, ?) "
            "ON CONFLICT (rule_id) DO UPDATE SET alerts_raised = alerts_raised + 1, "
            "last_raised_at = excluded.last_raised_at",
            (alert.rule_id, now),
        )
        payload = alert_payload(
            alert, rule, event=event, occurrence=occurrence, host=self.host, ts=now
        )
        enqueue(conn, alert.id, self.sinks, payload, now)
        audit.append(conn, event, self.actor, raised_detail(alert, occurrence), now)
        return AlertChange(kind, alert, occurrence)

    def set_state(self, alert_id: int, state: str, actor: str, now: float) -> AlertChange:
        """Acknowledge or close an alert on behalf of `actor` ("uid N pid M"), audited in the
        same transaction. Raises NoSuchAlert, or InvalidTransition for a move the state
        machine forbids (closed is final; the dedup window alone reopens)."""
        if state not in ALERT_STATES:
            raise AlertError(
                f"unknown alert state {state!r}; expected one of {', '.join(ALERT_STATES)}"
            )
        with self.store.transaction(f"changing the state of alert {alert_id}") as conn:
            current = conn.execute("SELECT state FROM alerts WHERE id = ?", (alert_id,)).get
            if current is None:
                raise NoSuchAlert(f"no alert with id {alert_id}")
            current = str(current)
            if state == current:
                raise InvalidTransition(f"alert {alert_id} is already {current}")
            if state not in TRANSITIONS[current]:
                allowed = " or ".join(TRANSITIONS[current]) or "nothing (closed is final)"
                raise InvalidTransition(
                    f"alert {alert_id} is {current} and cannot become {state}; from {current} "
                    f"it can become {allowed}"
                )
            row = _one(conn.execute(_SET_STATE, (state, now, safe_text(actor), alert_id)))
            alert = alert_from_row(row)
            audit.append(
                conn,
                f"alert.{state}",
                actor,
                {
                    "alert_id": alert.id,
                    "rule_id": alert.rule_id,
                    "from": current,
                    "to": state,
                    "pid": alert.pid,
                    "start_time": alert.start_time,
                },
                now,
            )
        return AlertChange(state, alert, int(cast(int, row[-1])))
