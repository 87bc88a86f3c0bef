"""`MultiSource`: several daemons (`daemoneye --host a --host b …`) as one `DashboardSource`.

Alerts are merged: every host's alerts, each tagged with its host's label (`Alert.host`), and
acknowledging or closing one goes to the daemon that raised it. Processes, rules, health and
queries are those of the *current* host; `next_host()` moves to the next one and replays what
the dashboard needs (Connected, then the full process set) as if it had just connected there.
A host that drops out is marked in `HostsChanged` and keeps being retried by its own source;
the others go on.

This module imports nothing of Textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping

from daemoneye.models import (
    Alert,
    Connection,
    DaemonStatus,
    Hello,
    HistoryActivity,
    ProcessesDelta,
    ProcessKey,
    ProcessRecord,
    RulesReload,
    RuleStatus,
    TableSchema,
)
from daemoneye.tui.source import (
    Connected,
    DashboardSource,
    Disconnected,
    HostsChanged,
    HostState,
    ProcessDetail,
    ProcessesReset,
    QueryResult,
    Resync,
    RulesUpdated,
    SourceError,
    SourceEvent,
    TimelineCursor,
    TimelineSlice,
)

_QUEUE = 10_000  # events waiting for the dashboard, all hosts together


class MultiSource:
    """One source per host label, in the order given; the first is current at the start."""

    def __init__(self, sources: Mapping[str, DashboardSource]) -> None:
        if not sources:
            raise ValueError("MultiSource needs at least one host")
        self.sources = dict(sources)
        self.labels = tuple(self.sources)
        self.current = self.labels[0]
        self._hello: dict[str, Hello] = {}
        self._down: dict[str, str] = {label: "connecting" for label in self.labels}
        self._queue: asyncio.Queue[SourceEvent] = asyncio.Queue(_QUEUE)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- the merged stream -----------------------------------------------------------------
    def host_states(self) -> HostsChanged:
        return HostsChanged(
            tuple(
                HostState(label, label not in self._down, self._down.get(label, ""))
                for label in self.labels
            ),
            self.current,
        )

    async def events(self) -> AsyncIterator[SourceEvent]:
        if not self._tasks:
            self._tasks = [
                asyncio.get_running_loop().create_task(self._pump(label), name=f"host-{label}")
                for label in self.labels
            ]
        await self._queue.put(self.host_states())
        while not self._closed:
            yield await self._queue.get()

    async def _put(self, event: SourceEvent) -> None:
        if self._queue.full():  # the dashboard fell behind: start its view over
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:
                    self._queue.get_nowait()
            await self._queue.put(Resync("alerts"))
            await self._queue.put(Resync("processes"))
        await self._queue.put(event)

    async def _pump(self, label: str) -> None:
        async for event in self.sources[label].events():
            for out in self._route(label, event):
                await self._put(out)

    def _route(self, label: str, event: SourceEvent) -> list[SourceEvent]:
        """What the dashboard sees of one host's event."""
        current = label == self.current
        if isinstance(event, Alert):
            return [dataclasses.replace(event, host=label)]
        if isinstance(event, Connected):
            self._hello[label] = event.hello
            self._down.pop(label, None)
            # The current host's Connected makes the feed fetch everything; another host's
            # alerts come in through a refetch of the merged list.
            return [self.host_states(), event if current else Resync("alerts")]
        if isinstance(event, Disconnected):
            self._down[label] = event.reason
            return [self.host_states(), *([event] if current else [])]
        if isinstance(event, Resync):  # "processes": the host's ProcessesReset follows
            return [event] if event.topic == "alerts" or current else []
        if isinstance(event, ProcessesDelta | ProcessesReset | RulesUpdated | DaemonStatus):
            return [event] if current else []
        return []

    async def _reset(self, label: str) -> ProcessesReset:
        return ProcessesReset(tuple(await self.sources[label].processes_list()))

    async def next_host(self) -> str:
        """Make the next host current; the dashboard gets its Connected and process set."""
        index = (self.labels.index(self.current) + 1) % len(self.labels)
        self.current = self.labels[index]
        await self._put(self.host_states())
        hello = self._hello.get(self.current)
        if hello is None or self.current in self._down:
            await self._put(Disconnected(self._down.get(self.current, "not connected"), None))
            return self.current
        await self._put(Connected(hello))
        try:
            await self._put(await self._reset(self.current))
        except SourceError as exc:
            await self._put(Disconnected(str(exc), None))
        return self.current

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for source in self.sources.values():
            await source.close()

    # -- requests --------------------------------------------------------------------------
    @property
    def _here(self) -> DashboardSource:
        return self.sources[self.current]

    def _of(self, host: str) -> DashboardSource:
        try:
            return self.sources[host or self.current]
        except KeyError:
            raise SourceError(f"no host {host!r} in this dashboard") from None

    async def alerts_list(self) -> tuple[Alert, ...]:
        """Every connected host's alerts, tagged; hosts that are down are skipped (marked in
        HostsChanged), and only when none answers is it an error."""
        merged: list[Alert] = []
        failures: list[str] = []
        for label, source in self.sources.items():
            if label in self._down:
                continue
            try:
                merged.extend(
                    dataclasses.replace(a, host=label) for a in await source.alerts_list()
                )
            except SourceError as exc:
                failures.append(f"{label}: {exc}")
        if failures and not merged and len(failures) == len(self.labels) - len(self._down):
            raise SourceError("; ".join(failures))
        return tuple(merged)

    async def alert_ack(self, alert_id: int, host: str = "") -> Alert:
        changed = await self._of(host).alert_ack(alert_id)
        return dataclasses.replace(changed, host=host or self.current)

    async def alert_close(self, alert_id: int, host: str = "") -> Alert:
        changed = await self._of(host).alert_close(alert_id)
        return dataclasses.replace(changed, host=host or self.current)

    async def processes_list(self) -> tuple[ProcessRecord, ...]:
        return await self._here.processes_list()

    async def process_get(self, key: ProcessKey) -> ProcessDetail | None:
        return await self._here.process_get(key)

    async def rules_list(self) -> tuple[RuleStatus, ...]:
        return await self._here.rules_list()

    async def rule_set_enabled(self, rule_id: str, enabled: bool) -> RuleStatus:
        return await self._here.rule_set_enabled(rule_id, enabled)

    async def rules_reload(self) -> RulesReload:
        return await self._here.rules_reload()

    async def query_run(self, sql: str) -> QueryResult:
        return await self._here.query_run(sql)

    async def connections_list(self, filter_text: str = "") -> tuple[Connection, ...]:
        return await self._here.connections_list(filter_text)

    async def query_tables(self) -> tuple[TableSchema, ...]:
        return await self._here.query_tables()

    async def health(self) -> DaemonStatus:
        return await self._here.health()

    async def process_signal(self, key: ProcessKey, signal_name: str) -> str:
        return await self._here.process_signal(key, signal_name)

    async def timeline(
        self,
        *,
        until: float | None,
        before: TimelineCursor | None = None,
        filter_text: str = "",
        limit: int = 200,
    ) -> TimelineSlice:
        return await self._here.timeline(
            until=until, before=before, filter_text=filter_text, limit=limit
        )

    async def processes_at(self, at: float) -> tuple[ProcessRecord, ...]:
        return await self._here.processes_at(at)

    async def activity(self, since: float, until: float, buckets: int) -> HistoryActivity:
        return await self._here.activity(since, until, buckets)
