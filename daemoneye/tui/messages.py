"""The messages the feed worker posts to the app: one per kind of live data (STYLE.md 5).

High-rate messages implement `can_replace`: a newer `ProcessesChanged` carries the whole live
set, so it makes a pending older one redundant; likewise for health and the rule list.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from daemoneye.models import Alert, DaemonStatus, Hello, RuleStatus
from daemoneye.tui.logic.live import ProcessSet
from daemoneye.tui.source import HostsChanged


@dataclass
class ProcessesChanged(Message, bubble=False):
    """The live process set changed (a delta, a reset after connecting, or a resync)."""

    process_set: ProcessSet

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ProcessesChanged)


@dataclass
class AlertRaised(Message, bubble=False):
    """An alert is new or changed (count, state)."""

    alert: Alert


@dataclass
class AlertsReplaced(Message, bubble=False):
    """The complete alert list, fetched again (after a resync of the alerts topic)."""

    alerts: tuple[Alert, ...]


@dataclass
class RulesChanged(Message, bubble=False):
    """The complete rule list with hits and problems."""

    rules: tuple[RuleStatus, ...]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RulesChanged)


@dataclass
class HealthUpdated(Message, bubble=False):
    """A new health report."""

    status: DaemonStatus

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HealthUpdated)


@dataclass
class DaemonConnected(Message, bubble=False):
    """The connection is up; carries what was fetched right after it (None: fetch failed)."""

    hello: Hello
    alerts: tuple[Alert, ...] | None
    rules: tuple[RuleStatus, ...] | None
    health: DaemonStatus | None
    problems: tuple[str, ...] = ()


@dataclass
class DaemonDisconnected(Message, bubble=False):
    """The connection is gone; the data on screen stays until the source reconnects."""

    reason: str
    retry_in: float | None = None


@dataclass
class HostsUpdated(Message, bubble=False):
    """Several hosts: which are up, and which one the screens other than Alerts show."""

    hosts: HostsChanged

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HostsUpdated)
