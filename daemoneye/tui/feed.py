"""The one worker that owns the live stream (STYLE.md 5).

It reads `DashboardSource.events()`, keeps the live process set, and posts one dataclass
message per change. It never touches a widget: the app's handlers do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from textual.message import Message

from daemoneye.models import Alert, DaemonStatus, ProcessesDelta
from daemoneye.tui.input_priority import let_input_in
from daemoneye.tui.logic.live import LiveProcesses
from daemoneye.tui.messages import (
    AlertRaised,
    AlertsReplaced,
    DaemonConnected,
    DaemonDisconnected,
    HealthUpdated,
    HostsUpdated,
    ProcessesChanged,
    RulesChanged,
)
from daemoneye.tui.source import (
    Connected,
    DashboardSource,
    Disconnected,
    HostsChanged,
    ProcessesReset,
    Resync,
    RulesUpdated,
    SourceError,
)

log = logging.getLogger(__name__)


Post = Callable[[Message], bool]


class Feed:
    """Turns source events into app messages."""

    def __init__(self, source: DashboardSource, post: Post) -> None:
        self.source = source
        self.post = post
        self.live = LiveProcesses()

    async def run(self) -> None:
        async for event in self.source.events():
            await self.handle(event)

    async def handle(self, event: object) -> None:
        """Apply one event; request failures after a connect are reported, never fatal."""
        if isinstance(event, ProcessesDelta):
            self.live.apply(event)
            await let_input_in()
            self.post(ProcessesChanged(self.live.snapshot()))
        elif isinstance(event, Alert):
            self.post(AlertRaised(event))
        elif isinstance(event, DaemonStatus):
            self.post(HealthUpdated(event))
        elif isinstance(event, RulesUpdated):
            self.post(RulesChanged(event.rules))
        elif isinstance(event, ProcessesReset):
            self.live.reset(event.records)
            await let_input_in()
            self.post(ProcessesChanged(self.live.snapshot()))
        elif isinstance(event, Resync):
            await self._resync(event.topic)
        elif isinstance(event, Connected):
            await self._connected(event)
        elif isinstance(event, Disconnected):
            self.post(DaemonDisconnected(event.reason, event.retry_in))
        elif isinstance(event, HostsChanged):
            self.post(HostsUpdated(event))
        else:
            log.warning("ignoring an unknown event from the source: %r", type(event).__name__)

    async def _resync(self, topic: str) -> None:
        """Fetch again what dropped notifications made stale. Processes need nothing: the
        source delivers a ProcessesReset after Resync("processes")."""
        try:
            if topic == "alerts":
                self.post(AlertsReplaced(await self.source.alerts_list()))
            elif topic == "rules":
                self.post(RulesChanged(await self.source.rules_list()))
        except SourceError as exc:
            log.warning("refetching %s after a resync failed: %s", topic, exc)

    async def _connected(self, event: Connected) -> None:
        problems: list[str] = []
        alerts = rules = health = None
        try:
            alerts = await self.source.alerts_list()
        except SourceError as exc:
            problems.append(f"alerts: {exc}")
        try:
            rules = await self.source.rules_list()
        except SourceError as exc:
            problems.append(f"rules: {exc}")
        try:
            health = await self.source.health()
        except SourceError as exc:
            problems.append(f"health: {exc}")
        self.post(DaemonConnected(event.hello, alerts, rules, health, tuple(problems)))
