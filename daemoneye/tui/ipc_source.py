"""`IpcSource`: the `DashboardSource` over the daemon's socket (`daemoneye.ipc.client`).

A thin adapter: it connects (retrying with backoff while no daemon answers), subscribes to
every topic, converts the client's events and results into the dashboard's records, and turns
every IPC failure into a `SourceError` with a sentence for the user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from daemoneye.ipc import client as ipc
from daemoneye.models import (
    Alert,
    Connection,
    DaemonStatus,
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
    Disconnected,
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

log = logging.getLogger(__name__)
T = TypeVar("T")
TOPICS = ("processes", "alerts", "rules", "health")
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0


async def _call(request: Awaitable[T]) -> T:
    """Await one client call; IPC failures become SourceError."""
    try:
        return await request
    except ipc.RpcError as exc:
        raise SourceError(
            exc.message, admin_required=exc.code == ipc.ErrorCode.FORBIDDEN, code=exc.code
        ) from None
    except ipc.ConnectionLost as exc:
        raise SourceError(f"not connected to the daemon ({exc})") from None
    except ipc.IpcError as exc:
        raise SourceError(str(exc)) from None


def convert(event: ipc.Event) -> SourceEvent:
    """One client event as a dashboard event."""
    if isinstance(event, ProcessesDelta | Alert | DaemonStatus):
        return event
    if isinstance(event, ipc.ProcessesSnapshot):
        return ProcessesReset(event.processes)
    if isinstance(event, ipc.RulesChanged):
        return RulesUpdated(event.rules)
    if isinstance(event, ipc.Connected):
        return Connected(event.hello)
    if isinstance(event, ipc.Disconnected):
        return Disconnected(event.reason, event.retry_in)
    return Resync(event.topic)


class IpcSource:
    """The dashboard's view of one `DaemonClient` (created with `reconnect=True`)."""

    def __init__(self, client: ipc.DaemonClient) -> None:
        self.client = client

    async def _connect(self) -> AsyncIterator[SourceEvent]:
        """Connect, reporting each failed attempt; the client retries after that."""
        delay = FIRST_RETRY_S
        while True:
            try:
                await self.client.connect()
                return
            except ipc.DaemonUnavailable as exc:
                yield Disconnected(str(exc), delay)
            except ipc.RpcError as exc:  # e.g. an unsupported protocol version
                yield Disconnected(exc.message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)

    async def _subscribe(self) -> None:
        for topic in TOPICS:
            try:
                await self.client.subscribe(topic)
            except (ipc.RpcError, ipc.ConnectionLost) as exc:
                log.warning("cannot subscribe to %s: %s", topic, exc)

    async def events(self) -> AsyncIterator[SourceEvent]:
        async for failure in self._connect():
            yield failure
        await self._subscribe()
        async for event in self.client.events():
            yield convert(event)

    async def close(self) -> None:
        await self.client.close()

    async def processes_list(self) -> tuple[ProcessRecord, ...]:
        return tuple(await _call(self.client.processes_list()))

    async def process_get(self, key: ProcessKey) -> ProcessDetail | None:
        try:
            detail = await _call(self.client.process_get(key.pid, key.start_time))
        except SourceError as exc:
            if exc.code == ipc.ErrorCode.NOT_FOUND:
                return None
            raise
        return ProcessDetail(detail.process, detail.ancestry, detail.children, detail.changes)

    async def connections_list(self, filter_text: str = "") -> tuple[Connection, ...]:
        page = await _call(self.client.connections_list(filter_text))
        return page.connections

    async def alerts_list(self) -> tuple[Alert, ...]:
        return tuple(await _call(self.client.alerts_list()))

    async def alert_ack(self, alert_id: int, host: str = "") -> Alert:
        return await _call(self.client.alert_ack(alert_id))

    async def alert_close(self, alert_id: int, host: str = "") -> Alert:
        return await _call(self.client.alert_close(alert_id))

    async def rules_list(self) -> tuple[RuleStatus, ...]:
        return tuple(await _call(self.client.rules_list()))

    async def rule_set_enabled(self, rule_id: str, enabled: bool) -> RuleStatus:
        if enabled:
            return await _call(self.client.rule_enable(rule_id))
        return await _call(self.client.rule_disable(rule_id))

    async def rules_reload(self) -> RulesReload:
        return await _call(self.client.rules_reload())

    async def query_run(self, sql: str) -> QueryResult:
        started = time.perf_counter()
        rows = await _call(self.client.query_run(sql))
        elapsed_ms = (time.perf_counter() - started) * 1000
        return QueryResult(rows.columns, rows.rows, rows.truncated, elapsed_ms)

    async def query_tables(self) -> tuple[TableSchema, ...]:
        return tuple(await _call(self.client.query_tables()))

    async def health(self) -> DaemonStatus:
        return await _call(self.client.health())

    async def process_signal(self, key: ProcessKey, signal_name: str) -> str:
        result = await _call(self.client.process_signal(key.pid, key.start_time, signal_name))
        return f"{result.signal} ({result.method})"

    async def timeline(
        self,
        *,
        until: float | None,
        before: TimelineCursor | None = None,
        filter_text: str = "",
        limit: int = 200,
    ) -> TimelineSlice:
        page = await _call(
            self.client.timeline_page(
                until=until, before=before, filter_text=filter_text, limit=limit
            )
        )
        return TimelineSlice(page.events, page.next, page.reach)

    async def processes_at(self, at: float) -> tuple[ProcessRecord, ...]:
        return tuple(await _call(self.client.processes_at(at)))

    async def activity(self, since: float, until: float, buckets: int) -> HistoryActivity:
        return await _call(self.client.activity(since, until, buckets))
