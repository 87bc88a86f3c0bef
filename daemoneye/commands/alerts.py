"""`daemoneye alerts list|show|ack|close`.

Reads go through the read-only store. Until the IPC client lands, `ack` and `close` open the
store read-write themselves (a short BEGIN IMMEDIATE transaction; a running daemon waits for it
through its busy timeout) and are audited as "uid N pid M (cli)".
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemoneye.commands.common import (
    Context,
    format_time,
    note,
    with_daemon,
    with_daemon_or_store,
)
from daemoneye.engine.alert_queries import AlertError, AlertFilter, get_alert, list_alerts
from daemoneye.engine.alerts import AlertBook
from daemoneye.engine.audit import actor_for
from daemoneye.engine.outbox import deliveries_of
from daemoneye.errors import DaemonEyeError, StoreError
from daemoneye.ipc.client import DaemonClient
from daemoneye.ipc.protocol import DaemonUnavailable, ErrorCode, RpcError
from daemoneye.models import Alert, AlertDetail
from daemoneye.output import render
from daemoneye.store.db import RowSource, Store
from daemoneye.store.readonly import ReadOnlyStore
from daemoneye.store.schema import SCHEMA_VERSION
from daemoneye.units import parse_duration

LIST_COLUMNS: tuple[str, ...] = (
    "id", "severity", "state", "count", "last_seen", "rule_id", "pid", "title",
)  # fmt: skip
# The machine formats name the process instance whole: (pid, start_time).
MACHINE_COLUMNS = (*LIST_COLUMNS, "start_time")
FIELDS = (
    "id",
    "rule_id",
    "severity",
    "state",
    "title",
    "pid",
    "start_time",
    "first_seen",
    "last_seen",
    "count",
    "state_changed_at",
    "state_changed_by",
)
DEFAULT_LIMIT = 1000


class AlertsUsageError(DaemonEyeError):
    """A malformed option value."""

    exit_code = 2


def parse_since(text: str, now: float) -> float:
    """`--since`: a duration back from now (`90s`, `30m`, `1h30m`, `7d`, `1w`; a bare number
    is seconds; daemoneye/units.py parse_duration, as config and rules write durations) or a
    timestamp (`2024-05-01`, `2024-05-01T12:00`, local time unless it has an offset).
    Returns epoch seconds."""
    seconds = parse_duration(text)
    if seconds is not None and math.isfinite(seconds):
        return now - seconds
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AlertsUsageError(
            f"--since: expected a duration such as 30m, 1h30m, 7d or 1w, or a timestamp such as "
            f"2024-05-01T12:00, got {text!r}"
        ) from None
    return moment.timestamp()  # naive: local time


@dataclass(frozen=True, slots=True)
class ListOptions:
    severity: str | None = None
    rule: str | None = None
    state: str | None = None
    since: str | None = None
    limit: int = DEFAULT_LIMIT


def _require_alerts(store: RowSource, path: object) -> None:
    """StoreError naming what to do when the store predates alerts (schema version 1)."""
    version = int(str(store.fetch_rows("PRAGMA user_version")[0][0]))
    if version < 2:
        raise StoreError(
            f"{path}: the store is at schema version {version} and has no alerts "
            f"yet (this DaemonEye uses {SCHEMA_VERSION}); start the daemon once to "
            "migrate it"
        )


def list_alerts_cmd(ctx: Context, options: ListOptions) -> int:
    if options.limit < 1:
        raise AlertsUsageError(f"--limit must be 1 or more, not {options.limit}")
    now = time.time()
    since = None if options.since is None else parse_since(options.since, now)
    selection = AlertFilter(
        min_severity=options.severity,
        rule_id=options.rule,
        state=options.state,
        since=since,
        limit=options.limit + 1,
    )

    def from_store(store: ReadOnlyStore) -> list[Alert]:
        _require_alerts(store, store.path)
        return list_alerts(store, selection)

    alerts = with_daemon_or_store(
        ctx,
        lambda client: client.alerts_list(
            state=options.state,
            severity=options.severity,
            rule=options.rule,
            since=since,
            limit=options.limit + 1,
            by_seen=True,
        ),
        from_store,
    )
    truncated = len(alerts) > options.limit
    alerts = alerts[: options.limit]
    if ctx.output == "table":
        rows: list[tuple[Any, ...]] = [
            (
                a.id,
                a.severity,
                a.state,
                a.count,
                format_time(a.last_seen, now),
                a.rule_id,
                a.pid,
                a.title,
            )
            for a in alerts
        ]
        columns = LIST_COLUMNS
    else:
        rows = [
            (
                a.id,
                a.severity,
                a.state,
                a.count,
                a.last_seen,
                a.rule_id,
                a.pid,
                a.title,
                a.start_time,
            )
            for a in alerts
        ]
        columns = MACHINE_COLUMNS
    render(columns, rows, ctx.output, sys.stdout, keep=("id", "rule_id"))
    if truncated:
        note(f"only the {options.limit} most recent alerts are shown (--limit to change)")
    return 0


def _alert_fields(alert: Alert, occurrence: int, csv: bool) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(alert, name) for name in FIELDS}
    values["occurrence"] = occurrence
    row = dict(alert.row)
    values["row"] = json.dumps(row, ensure_ascii=False) if csv else row
    return values


def show_alert(ctx: Context, alert_id: int) -> int:
    def from_store(store: ReadOnlyStore) -> AlertDetail:
        _require_alerts(store, store.path)
        found = get_alert(store, alert_id)
        if found is None:
            raise AlertError(f"no alert with id {alert_id}")
        return AlertDetail(found[0], found[1], tuple(deliveries_of(store, alert_id)))

    async def ask(client: DaemonClient) -> AlertDetail:
        try:
            return await client.alert_show(alert_id)
        except RpcError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                raise AlertError(f"no alert with id {alert_id}") from None
            raise

    detail = with_daemon_or_store(ctx, ask, from_store)
    alert, occurrence, deliveries = detail.alert, detail.occurrence, detail.deliveries
    if ctx.output != "table":
        values = _alert_fields(alert, occurrence, csv=ctx.output == "csv")
        values["deliveries"] = [
            {
                "sink": d.sink,
                "state": d.state,
                "attempts": d.attempts,
                "next_attempt_at": d.next_attempt_at,
                "last_error": d.last_error,
                "delivered_at": d.delivered_at,
            }
            for d in deliveries
        ]
        if ctx.output == "csv":
            values["deliveries"] = json.dumps(values["deliveries"], ensure_ascii=False)
        render(tuple(values), [tuple(values.values())], ctx.output, sys.stdout)
        return 0
    now = time.time()
    rows: list[tuple[str, Any]] = []
    for name, value in _alert_fields(alert, occurrence, csv=False).items():
        if name == "row":
            rows += [(f"row.{column}", cell) for column, cell in value.items()]
        elif name in ("start_time", "first_seen", "last_seen", "state_changed_at"):
            rows.append((name, "" if value is None else f"{format_time(value, now)} ({value:.2f})"))
        else:
            rows.append((name, value))
    for d in deliveries:
        if d.state == "delivered":
            status = f"delivered {format_time(d.delivered_at, now)} after {d.attempts} attempt(s)"
        elif d.state == "pending" and d.attempts == 0:
            status = f"queued {format_time(d.created_at, now)}, not yet attempted"
        elif d.state == "pending":
            status = (
                f"pending, {d.attempts} failed attempt(s), next "
                f"{format_time(d.next_attempt_at, now)}"
            )
        else:
            status = f"dead-lettered after {d.attempts} attempt(s)"
        if d.last_error and d.state != "delivered":
            status += f": {d.last_error}"
        rows.append((f"sink.{d.sink}", status))
    render(("field", "value"), rows, "table", sys.stdout, max_width=10**6)
    return 0


def change_state(ctx: Context, alert_id: int, state: str) -> int:
    """`alerts ack` / `alerts close`: through the daemon, which checks the peer's credentials
    and audits the request; straight on the store (as its file permissions allow) only when
    no daemon runs."""
    verb = {"acknowledged": "acknowledge", "closed": "close"}[state]

    async def ask(client: DaemonClient) -> Alert:
        if state == "acknowledged":
            return await client.alert_ack(alert_id)
        return await client.alert_close(alert_id)

    try:
        alert = with_daemon(ctx, ask)
    except DaemonUnavailable as exc:
        note(f"{exc}; changing the alert in the store directly")
        alert = _change_in_store(ctx, alert_id, state, verb)
    render(
        ("id", "state", "state_changed_by", "rule_id", "title"),
        [(alert.id, alert.state, alert.state_changed_by, alert.rule_id, alert.title)],
        ctx.output,
        sys.stdout,
    )
    return 0


def _change_in_store(ctx: Context, alert_id: int, state: str, verb: str) -> Alert:
    db = ctx.loaded.paths.db
    try:
        store = Store.open_existing(db)
    except StoreError as exc:
        raise StoreError(f"cannot {verb} alert {alert_id}: {exc}") from None
    actor = actor_for(os.getuid(), os.getpid(), "cli")
    with store:
        change = AlertBook(store).set_state(alert_id, state, actor, time.time())
    return change.alert
