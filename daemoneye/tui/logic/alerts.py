"""The alert feed: which alerts are shown, in what order, and how each row reads."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from daemoneye.models import ALERT_STATES, Alert
from daemoneye.tui.logic.cells import Cell, RowView
from daemoneye.tui.logic.format import repeats, safe_cell
from daemoneye.tui.logic.keys import row_key_of
from daemoneye.tui.logic.severity import label, severity_rank, tone

ACTIVE_STATES = frozenset({"open", "acknowledged"})
ALERT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("severity", "sev"),
    ("state", "state"),
    ("seen", "seen"),
    ("rule", "rule"),
    ("pid", "pid"),
    ("title", "title"),
)


HOST_COLUMN = ("host", "host")


def alert_columns(several_hosts: bool) -> tuple[tuple[str, str], ...]:
    """The feed's columns: HOST first when the dashboard watches several hosts."""
    return (HOST_COLUMN, *ALERT_COLUMNS) if several_hosts else ALERT_COLUMNS


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts the feed shows: at least `min_severity`, of `rule_id`, in `states`, from
    `host` (with several hosts)."""

    min_severity: str | None = None
    rule_id: str | None = None
    states: frozenset[str] = ACTIVE_STATES
    host: str | None = None

    def matches(self, alert: Alert) -> bool:
        if self.min_severity is not None and (
            severity_rank(alert.severity) < severity_rank(self.min_severity)
        ):
            return False
        if self.rule_id is not None and alert.rule_id != self.rule_id:
            return False
        if self.host is not None and alert.host != self.host:
            return False
        return alert.state in self.states

    def describe(self) -> str:
        parts = [
            f"severity ≥ {self.min_severity}" if self.min_severity else "any severity",
            f"rule {self.rule_id}" if self.rule_id else "any rule",
            "all states"
            if self.states >= set(ALERT_STATES)
            else " + ".join(s for s in ALERT_STATES if s in self.states),
        ]
        if self.host is not None:
            parts.append(f"host {safe_cell(self.host, 40)}")
        return ", ".join(parts)


def newest_first(alerts: Iterable[Alert]) -> list[Alert]:
    """Most recently seen first; the higher id breaks ties so the order is stable."""
    return sorted(alerts, key=lambda alert: (alert.last_seen, alert.id), reverse=True)


def alert_key(alert: Alert) -> str:
    """An alert's key in the dashboard: ids are per daemon, so with several hosts the host
    label is part of it."""
    return f"{alert.host}/{alert.id}"


def alert_row(alert: Alert, now: float, *, several_hosts: bool = False) -> RowView:
    severity_tone = tone(alert.severity)
    state_tone = "dim" if alert.state == "closed" else ""
    host = (Cell(safe_cell(alert.host, 24), "dim"),) if several_hosts else ()
    return RowView(
        alert_key(alert),
        (
            *host,
            Cell(label(alert.severity), severity_tone),
            Cell(alert.state[:5] if alert.state != "acknowledged" else "ack", state_tone),
            Cell(repeats(alert, now)),
            Cell(safe_cell(alert.rule_id, 32)),
            Cell(str(alert.pid), right=True),
            Cell(safe_cell(alert.title, 200), state_tone),
        ),
    )


def alert_rows(
    alerts: Iterable[Alert], alert_filter: AlertFilter, now: float, *, several_hosts: bool = False
) -> list[RowView]:
    return AlertRows().rows(alerts, alert_filter, now, several_hosts=several_hosts)


class AlertRows:
    """The feed's rows, each built once per version of its alert: a refresh (any alert of any
    host changed, or the filter did) rebuilds only the rows whose alert changed. A row's text
    depends on the clock only through the date (a time today, a date before: format_time), so
    every row is built again when the local date changes. Four hosts' 4,000 alerts otherwise
    cost a full rebuild of every row on each update from any of them."""

    def __init__(self) -> None:
        self._built: dict[str, tuple[Alert, bool, RowView]] = {}
        self._date: tuple[int, int, int] | None = None

    def rows(
        self,
        alerts: Iterable[Alert],
        alert_filter: AlertFilter,
        now: float,
        *,
        several_hosts: bool = False,
    ) -> list[RowView]:
        date = time.localtime(now)[:3]
        if date != self._date:
            self._built, self._date = {}, date
        built = self._built
        kept: dict[str, tuple[Alert, bool, RowView]] = {}
        rows: list[RowView] = []
        for alert in newest_first(alerts):
            key = alert_key(alert)
            known = built.get(key)
            if not alert_filter.matches(alert):
                if known is not None:  # kept for when the filter lets it in again
                    kept[key] = known
                continue
            if (
                known is not None
                and known[1] == several_hosts
                and (known[0] is alert or known[0] == alert)
            ):
                row = known[2]
            else:
                row = alert_row(alert, now, several_hosts=several_hosts)
            kept[key] = (alert, several_hosts, row)
            rows.append(row)
        self._built = kept
        return rows


def worst_by_process(alerts: Iterable[Alert]) -> dict[str, str]:
    """For every process instance (by row key) with an open or acknowledged alert, its worst
    severity."""
    worst_for: dict[str, str] = {}
    for alert in alerts:
        if alert.state not in ACTIVE_STATES:
            continue
        key = row_key_of(alert.pid, alert.start_time)
        current = worst_for.get(key)
        if current is None or severity_rank(alert.severity) > severity_rank(current):
            worst_for[key] = alert.severity
    return worst_for


def open_counts(alerts: Iterable[Alert]) -> dict[str, int]:
    """Open (not yet acknowledged) alerts per severity."""
    counts: dict[str, int] = {}
    for alert in alerts:
        if alert.state == "open":
            counts[alert.severity] = counts.get(alert.severity, 0) + 1
    return counts


def alerts_for(key: str, alerts: Iterable[Alert]) -> list[Alert]:
    """The alerts of one process instance (by row key), newest first."""
    return newest_first(a for a in alerts if row_key_of(a.pid, a.start_time) == key)


def cycle_min_severity(current: str | None) -> str | None:
    """any → low → medium → high → critical → any (info is 'any')."""
    order: list[str | None] = [None, "low", "medium", "high", "critical"]
    return order[(order.index(current) + 1) % len(order)] if current in order else None


def cycle_states(current: frozenset[str]) -> frozenset[str]:
    """open+acknowledged → open → acknowledged → closed → all → open+acknowledged."""
    order = [
        ACTIVE_STATES,
        frozenset({"open"}),
        frozenset({"acknowledged"}),
        frozenset({"closed"}),
        frozenset(ALERT_STATES),
    ]
    return order[(order.index(current) + 1) % len(order)] if current in order else ACTIVE_STATES


def cycle_rule(current: str | None, rule_ids: Iterable[str]) -> str | None:
    """None → first rule id → … → last → None."""
    order: list[str | None] = [None, *sorted(set(rule_ids))]
    return order[(order.index(current) + 1) % len(order)] if current in order else None


def cycle_host(current: str | None, hosts: Iterable[str]) -> str | None:
    """All hosts → the first → … → the last → all hosts."""
    return cycle_rule(current, hosts)
