"""The dashboard's boundary to the daemon: what the app needs, independent of the IPC client.

A `DashboardSource` is one stream of typed events plus request methods. The app runs exactly one
worker over `events()` (STYLE.md 5); screens call the request methods for one-off reads and admin
actions. `IpcSource` adapts the IPC client to this protocol; `FakeSource` serves tests.

The event stream, in order, for every connection:

    Connected(hello)               the connection is up (first event, and after each reconnect)
    ProcessesReset(records)        the full live process set; follows every Connected and every
                                   Resync("processes")
    ProcessesDelta                 one tick's changes to the live set, in order
    Alert                          an alert is new or changed (count, state)
    RulesUpdated(rules)            the whole rule set (after a reload, enable or disable)
    DaemonStatus                   a health report (with clients and the engine's status)
    Resync(topic)                  notifications of `topic` were dropped: for "processes" a
                                   ProcessesReset follows; for "alerts"/"rules" the worker
                                   fetches the list again
    Disconnected(reason, retry_in) the connection is gone; the source reconnects by itself
    HostsChanged(hosts, current)   several hosts only (multi_source.py): which are up, and
                                   which one the processes, rules and health screens show

The stream ends only when the source is closed. Request methods raise `SourceError` (with
`admin_required` set when the daemon refused an admin request for this peer) and never
return wire dicts: everything is a `daemoneye.models` record or one of the records below.

This module imports nothing of Textual.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from daemoneye.errors import DaemonEyeError
from daemoneye.models import (
    Alert,
    Connection,
    DaemonStatus,
    Hello,
    HistoryActivity,
    HistoryReach,
    ProcessesDelta,
    ProcessEvent,
    ProcessKey,
    ProcessRecord,
    RulesReload,
    RuleStatus,
    TableSchema,
    TimelineEvent,
)


class SourceError(DaemonEyeError):
    """A request to the daemon failed; the message is meant for the person at the dashboard."""

    def __init__(
        self, message: str, *, admin_required: bool = False, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.admin_required = admin_required
        self.code = code


# -- stream events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The connection to the daemon is up; `hello` says who we are to it (role) and where."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection is gone. `retry_in` is the delay before the next attempt, if known."""

    reason: str
    retry_in: float | None = None


@dataclass(frozen=True, slots=True)
class ProcessesReset:
    """The complete live process set; replaces whatever the dashboard held."""

    records: tuple[ProcessRecord, ...]


@dataclass(frozen=True, slots=True)
class Resync:
    """The daemon dropped this client's pending notifications of `topic`."""

    topic: str = "processes"


@dataclass(frozen=True, slots=True)
class HostState:
    """One host of a dashboard that watches several: up, or down and why."""

    label: str
    up: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HostsChanged:
    """Several hosts (`--host a --host b`): which are up, and which one the processes, rules
    and health screens show. A single-host source never sends it."""

    hosts: tuple[HostState, ...]
    current: str


@dataclass(frozen=True, slots=True)
class RulesUpdated:
    """The complete rule set with hits and load problems."""

    rules: tuple[RuleStatus, ...]


SourceEvent = (
    Connected
    | Disconnected
    | ProcessesReset
    | Resync
    | ProcessesDelta
    | Alert
    | RulesUpdated
    | DaemonStatus
    | HostsChanged
)


# -- request results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessDetail:
    """One process instance with its ancestry (parent first) and live children."""

    record: ProcessRecord
    ancestry: tuple[ProcessRecord, ...]
    children: tuple[ProcessRecord, ...]
    changes: tuple[ProcessEvent, ...] = ()  # its newest changes after start, oldest first


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The answer to a sandboxed SQL query."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str | int | float | bool | None, ...], ...]
    truncated: bool = False
    elapsed_ms: float | None = None


TimelineCursor = tuple[float, int, int]  # (ts, source, id) of the last event of a page


@dataclass(frozen=True, slots=True)
class TimelineSlice:
    """Events newest first, where the next (older) page starts (None: no more), and how far
    back the store's history reaches."""

    events: tuple[TimelineEvent, ...]
    next: TimelineCursor | None
    reach: HistoryReach


@runtime_checkable
class DashboardSource(Protocol):
    """Everything the dashboard needs from the daemon."""

    def events(self) -> AsyncIterator[SourceEvent]:
        """The live event stream (see the module docstring); reconnects by itself."""
        ...

    async def close(self) -> None:
        """End the stream and release the connection."""
        ...

    async def processes_list(self) -> tuple[ProcessRecord, ...]:
        """The live process set."""
        ...

    async def process_get(self, key: ProcessKey) -> ProcessDetail | None:
        """One instance with ancestry and children; None when the daemon does not know it."""
        ...

    async def alerts_list(self) -> tuple[Alert, ...]:
        """Every alert the daemon keeps (all states)."""
        ...

    async def connections_list(self, filter_text: str = "") -> tuple[Connection, ...]:
        """The open connections that match a `daemoneye connections` filter."""
        ...

    async def alert_ack(self, alert_id: int, host: str = "") -> Alert:
        """Acknowledge an alert (admin); `host` is Alert.host (several hosts)."""
        ...

    async def alert_close(self, alert_id: int, host: str = "") -> Alert:
        """Close an alert (admin); `host` is Alert.host (several hosts)."""
        ...

    async def rules_list(self) -> tuple[RuleStatus, ...]:
        """Every rule with its hits and load problems."""
        ...

    async def rule_set_enabled(self, rule_id: str, enabled: bool) -> RuleStatus:
        """Enable or disable a rule (admin); the rule as it is now."""
        ...

    async def rules_reload(self) -> RulesReload:
        """Reload the rule set from disk (admin): accepted, or refused with its problems."""
        ...

    async def query_run(self, sql: str) -> QueryResult:
        """Run one sandboxed SELECT; a refused or failing query raises SourceError."""
        ...

    async def query_tables(self) -> tuple[TableSchema, ...]:
        """The tables and views SQL may read, with their columns (`.tables`, `.schema`)."""
        ...

    async def health(self) -> DaemonStatus:
        """The daemon's current health."""
        ...

    async def process_signal(self, key: ProcessKey, signal_name: str) -> str:
        """Send a signal (e.g. "TERM") to exactly this instance (admin); what was sent, e.g.
        "SIGTERM"."""
        ...

    async def timeline(
        self,
        *,
        until: float | None,
        before: TimelineCursor | None = None,
        filter_text: str = "",
        limit: int = 200,
    ) -> TimelineSlice:
        """History's events at or before `until` (None: now), newest first, at most `limit`;
        `before` pages on. A bad filter raises SourceError."""
        ...

    async def processes_at(self, at: float) -> tuple[ProcessRecord, ...]:
        """The process set as it was at `at` (epoch seconds); a moment outside the history
        raises SourceError saying what the history covers."""
        ...

    async def activity(self, since: float, until: float, buckets: int) -> HistoryActivity:
        """New process instances and alerts per bucket over [since, until)."""
        ...
