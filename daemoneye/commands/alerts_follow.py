"""`daemoneye alerts follow`: new alerts and state changes as they happen, like `tail -f`.

It subscribes to the daemon's `alerts` topic over IPC, prints the last `--lines` alerts that
match (oldest first), then one row per notification until ctrl-c (exit 130) or until the
daemon goes away (exit 1, with the reason on stderr). Every output format streams: see
`RowStream` in daemoneye/output.py.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from daemoneye.commands.common import Context, note
from daemoneye.errors import DaemonEyeError
from daemoneye.ipc.client import (
    Connected,
    ConnectionLost,
    DaemonClient,
    DaemonUnavailable,
    Disconnected,
    Resync,
)
from daemoneye.models import SEVERITIES, Alert
from daemoneye.output import RowStream

# The machine formats carry what happened and the whole alert, by the store's names.
COLUMNS = (
    "event", "time", "id", "severity", "state", "rule_id", "pid", "start_time", "count",
    "first_seen", "last_seen", "state_changed_at", "state_changed_by", "title",
)  # fmt: skip
# A table row says what happened (the event is the new state for a state change).
TABLE_COLUMNS = ("time", "event", "id", "severity", "rule_id", "pid", "title")
TABLE_WIDTHS = (8, 12, 5, 8, 24, 7)
EXIT_DAEMON_GONE = 1


class DaemonGone(DaemonEyeError):
    """The daemon closed the connection while alerts were followed."""

    exit_code = EXIT_DAEMON_GONE


@dataclass(frozen=True, slots=True)
class FollowOptions:
    severity: str | None = None  # at least this severity
    rule: str | None = None
    state: str | None = None
    lines: int = 10  # alerts printed from before the follow began


def _backlog_limit(options: FollowOptions) -> int:
    """How many recent alerts to fetch for the backlog: more than --lines, as --rule filters
    here, within what one `alerts.list` answers (1 to 10,000)."""
    return min(max(options.lines * 10, 100), 10_000)


def matches(alert: Alert, options: FollowOptions) -> bool:
    """Whether `alert` passes the --severity (at least), --rule and --state filters."""
    if options.rule is not None and alert.rule_id != options.rule:
        return False
    if options.state is not None and alert.state != options.state:
        return False
    if options.severity is not None:
        return SEVERITIES.index(alert.severity) >= SEVERITIES.index(options.severity)
    return True


def event_of(alert: Alert) -> tuple[str, float]:
    """What the notification says happened, and when: a state change (`acknowledged`,
    `closed`, or `reopened`) when the state changed at or after the last sighting; else
    `raised` for a first sighting and `repeated` for a later one."""
    changed = alert.state_changed_at
    if changed is not None and changed >= alert.last_seen:
        return ("reopened" if alert.state == "open" else alert.state), changed
    return ("raised" if alert.count == 1 else "repeated"), alert.last_seen


def row_of(alert: Alert, table: bool) -> tuple[Any, ...]:
    event, when = event_of(alert)
    if table:
        clock = time.strftime("%H:%M:%S", time.localtime(when))
        return (clock, event, alert.id, alert.severity, alert.rule_id, alert.pid, alert.title)
    return (
        event, when, alert.id, alert.severity, alert.state, alert.rule_id, alert.pid,
        alert.start_time, alert.count, alert.first_seen, alert.last_seen,
        alert.state_changed_at, alert.state_changed_by, alert.title,
    )  # fmt: skip


async def follow(ctx: Context, options: FollowOptions, out: TextIO) -> None:
    """Print alerts until the daemon goes away (DaemonGone) or the task is cancelled."""
    client = ctx.client()
    try:
        await client.connect()
    except DaemonUnavailable as exc:
        raise DaemonUnavailable(
            f"{exc}; `alerts follow` needs the running daemon (start it with "
            "`daemoneye daemon`, or pass --socket)"
        ) from None
    try:
        await _stream(client, ctx, options, out)
    except ConnectionLost as exc:
        raise DaemonGone(f"the daemon went away ({exc}); stopped following") from None
    finally:
        await client.close()


async def _stream(client: DaemonClient, ctx: Context, options: FollowOptions, out: TextIO) -> None:
    """Subscribe, print the backlog, then every matching notification."""
    subscribed = await client.subscribe("alerts")
    table = ctx.output == "table"
    stream = RowStream(
        TABLE_COLUMNS if table else COLUMNS,
        ctx.output,
        out,
        widths=TABLE_WIDTHS,
        flexible=("rule_id",),
    )
    if not subscribed.available:
        note("the detection engine is not running yet; its alerts will follow when it is")
    elif options.lines:
        recent = await client.alerts_list(
            state=options.state, severity=options.severity, limit=_backlog_limit(options)
        )
        chosen = [a for a in recent if matches(a, options)][: options.lines]
        for alert in reversed(chosen):
            stream.write(row_of(alert, table))
    async for event in client.events():
        if isinstance(event, Alert):
            if matches(event, options):
                stream.write(row_of(event, table))
        elif isinstance(event, Disconnected):
            raise DaemonGone(f"the daemon went away ({event.reason}); stopped following")
        elif isinstance(event, Resync) and event.topic == "alerts":
            note(
                f"{event.dropped} alert notifications were dropped ({event.reason}); "
                "`daemoneye alerts list` shows them"
            )
        elif not isinstance(event, Connected):
            continue  # other topics: not subscribed here
    raise DaemonGone("the connection to the daemon ended; stopped following")


def follow_alerts(ctx: Context, options: FollowOptions) -> int:
    """`alerts follow`: runs until ctrl-c (KeyboardInterrupt, exit 130 in cli.main) or the
    daemon's end (DaemonGone, exit 1)."""
    asyncio.run(follow(ctx, options, sys.stdout))
    return 0
