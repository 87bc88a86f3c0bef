"""Reading alerts: the filters of `alerts list`, one alert, per-rule counters, and the row
codec shared with the writer (`AlertBook`). Every function takes a RowSource — the writer Store
or a ReadOnlyStore — so the daemon's IPC and the read-only CLI share one definition."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from daemoneye.errors import DaemonEyeError
from daemoneye.models import ALERT_STATES, SEVERITIES, Alert, ProcessKey
from daemoneye.store.db import RowSource, SQLValue
from daemoneye.store.rows import safe_text

ALERT_COLUMNS = (
    "id",
    "rule_id",
    "severity",
    "title",
    "pid",
    "start_time",
    "first_seen",
    "last_seen",
    "count",
    "state",
    "state_changed_at",
    "state_changed_by",
    "row",
)
COLUMNS_SQL = ", ".join(ALERT_COLUMNS)
RowValue = str | int | float | None


class AlertError(DaemonEyeError):
    """An alert operation was refused (unknown alert, a transition the state machine forbids,
    an unknown severity or state in a filter)."""


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts to list: severity at least `min_severity`, of `rule_id`, in `state`, seen
    at or after `since` (epoch seconds); most recently seen first, at most `limit`.
    `before_id` pages by id instead (ids below it, highest first), for clients that keep a
    cursor while new alerts arrive."""

    min_severity: str | None = None
    rule_id: str | None = None
    state: str | None = None
    since: float | None = None
    limit: int | None = 1000
    before_id: int | None = None
    offset: int = 0  # paging when most recently seen first: skip this many


# -- rows ----------------------------------------------------------------------------------


def _clean_value(value: object) -> RowValue:
    if value is None or isinstance(value, int | str):
        return safe_text(value) if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes):
        return value.hex()
    return safe_text(str(value))


def row_json(row: Sequence[tuple[str, object]]) -> str:
    """The result row as stored: a JSON list of [column, value] pairs, order kept."""
    pairs = [[safe_text(str(column)), _clean_value(value)] for column, value in row]
    return json.dumps(pairs, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _row_from_json(text: object) -> tuple[tuple[str, RowValue], ...]:
    try:
        pairs = json.loads(str(text))
        return tuple((str(column), _clean_value(value)) for column, value in pairs)
    except (ValueError, TypeError):
        return (("row", str(text)),)


def alert_from_row(row: Sequence[SQLValue]) -> Alert:
    """An Alert from a row selected in ALERT_COLUMNS order (extra trailing columns ignored)."""
    values = dict(zip(ALERT_COLUMNS, row[: len(ALERT_COLUMNS)], strict=True))
    changed_at = values["state_changed_at"]
    changed_by = values["state_changed_by"]
    return Alert(
        id=int(cast(int, values["id"])),
        rule_id=str(values["rule_id"]),
        severity=str(values["severity"]),
        title=str(values["title"]),
        pid=int(cast(int, values["pid"])),
        start_time=float(cast(float, values["start_time"])),
        first_seen=float(cast(float, values["first_seen"])),
        last_seen=float(cast(float, values["last_seen"])),
        count=int(cast(int, values["count"])),
        state=str(values["state"]),
        state_changed_at=None if changed_at is None else float(cast(float, changed_at)),
        state_changed_by=None if changed_by is None else str(changed_by),
        row=_row_from_json(values["row"]),
    )


# -- read side -----------------------------------------------------------------------------


def list_alerts(source: RowSource, selection: AlertFilter | None = None) -> list[Alert]:
    """Alerts matching `selection`, most recently seen first."""
    selection = selection or AlertFilter()
    where: list[str] = []
    params: list[SQLValue] = []
    if selection.min_severity is not None:
        if selection.min_severity not in SEVERITIES:
            raise AlertError(
                f"unknown severity {selection.min_severity!r}; expected one of "
                f"{', '.join(SEVERITIES)}"
            )
        levels = SEVERITIES[SEVERITIES.index(selection.min_severity) :]
        where.append(f"severity IN ({', '.join('?' * len(levels))})")
        params.extend(levels)
    if selection.rule_id is not None:
        where.append("rule_id = ?")
        params.append(selection.rule_id)
    if selection.state is not None:
        if selection.state not in ALERT_STATES:
            raise AlertError(
                f"unknown alert state {selection.state!r}; expected one of "
                f"{', '.join(ALERT_STATES)}"
            )
        where.append("state = ?")
        params.append(selection.state)
    if selection.since is not None:
        where.append("last_seen >= ?")
        params.append(selection.since)
    order = "last_seen DESC, id DESC"
    if selection.before_id is not None:
        where.append("id < ?")
        params.append(selection.before_id)
        order = "id DESC"
    params.append(-1 if selection.limit is None else selection.limit)
    params.append(selection.offset)
    rows = source.fetch_rows(
        f"SELECT {COLUMNS_SQL} FROM alerts WHERE {' AND '.join(where) or 'true'} "
        f"ORDER BY {order} LIMIT ? OFFSET ?",
        params,
    )
    return [alert_from_row(row) for row in rows]


def alerted_instances(source: RowSource) -> set[ProcessKey]:
    """Process instances with an alert that is not closed (the `alerted` filter term)."""
    rows = source.fetch_rows("SELECT DISTINCT pid, start_time FROM alerts WHERE state != 'closed'")
    return {ProcessKey(int(cast(int, pid)), float(cast(float, start))) for pid, start in rows}


def open_alert_count(source: RowSource) -> int:
    """Alerts that are open (not acknowledged, not closed)."""
    rows = source.fetch_rows("SELECT count(*) FROM alerts WHERE state = 'open'")
    return int(cast(int, rows[0][0]))


def get_alert(source: RowSource, alert_id: int) -> tuple[Alert, int] | None:
    """(alert, occurrence) for `alert_id`, or None."""
    rows = source.fetch_rows(
        f"SELECT {COLUMNS_SQL}, occurrence FROM alerts WHERE id = ?", (alert_id,)
    )
    if not rows:
        return None
    return alert_from_row(rows[0]), int(cast(int, rows[0][-1]))


@dataclass(frozen=True, slots=True)
class RuleAlertStats:
    """How many alerts a rule raised and how many its throttle held back."""

    rule_id: str
    alerts_raised: int
    alerts_suppressed: int
    last_raised_at: float | None
    last_suppressed_at: float | None


def rule_alert_stats(source: RowSource) -> dict[str, RuleAlertStats]:
    """Per-rule alert counters, by rule id (for `rules list` and health)."""
    result = {}
    for rule_id, raised, suppressed, raised_at, suppressed_at in source.fetch_rows(
        "SELECT rule_id, alerts_raised, alerts_suppressed, last_raised_at, "
        "last_suppressed_at FROM rule_stats ORDER BY rule_id"
    ):
        result[str(rule_id)] = RuleAlertStats(
            str(rule_id),
            int(cast(int, raised)),
            int(cast(int, suppressed)),
            None if raised_at is None else float(cast(float, raised_at)),
            None if suppressed_at is None else float(cast(float, suppressed_at)),
        )
    return result
