"""The daemon's methods as typed Python calls (docs/protocol.md §6), over any transport that
provides `call`: `DaemonClient` is the one that does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from daemoneye.ipc import protocol
from daemoneye.ipc.codec import CodecError, from_wire, from_wire_many
from daemoneye.ipc.protocol import (
    AlertsPage,
    IpcError,
    ProcessDetail,
    ProcessesPage,
    QueryRows,
    SignalResult,
    SubscribeResult,
    TimelinePage,
)
from daemoneye.models import (
    Alert,
    AlertDetail,
    AuditVerification,
    Connection,
    DaemonStatus,
    HistoryActivity,
    ProcessRecord,
    RulesReload,
    RuleStatus,
    TableSchema,
    TimelineEvent,
)

T = TypeVar("T")


class DaemonCalls:
    """Typed requests; subclasses send them with `call` and remember subscribed topics."""

    _topics: set[str]

    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        raise NotImplementedError

    async def _typed(
        self, cls: type[T], method: str, params: Mapping[str, Any] | None = None, **options: Any
    ) -> T:
        result = await self.call(method, params, **options)
        try:
            return from_wire(cls, result)
        except CodecError as exc:
            raise IpcError(f"unexpected answer to {method} from the daemon: {exc}") from None

    async def processes_list(self, filter_text: str = "") -> list[ProcessRecord]:
        """Every live process matching the filter (fetched page by page), by pid."""
        records: list[ProcessRecord] = []
        after: tuple[int, float] | None = None
        while True:
            params: dict[str, Any] = {"filter": filter_text}
            if after is not None:
                params["after"] = list(after)
            page = await self._typed(ProcessesPage, "processes.list", params)
            records.extend(page.processes)
            if page.next is None:
                return records
            after = page.next

    async def connections_list(self, filter_text: str = "") -> protocol.ConnectionsPage:
        """Every open connection matching the filter (fetched page by page), by pid; `at` and
        `total` as the last page said."""
        connections: list[Connection] = []
        names: list[str | None] = []
        after: tuple[int, float, int] | None = None
        while True:
            params: dict[str, Any] = {"filter": filter_text}
            if after is not None:
                params["after"] = list(after)
            page = await self._typed(protocol.ConnectionsPage, "connections.list", params)
            connections.extend(page.connections)
            names.extend(page.names or (None,) * len(page.connections))
            if page.next is None:
                return protocol.ConnectionsPage(
                    tuple(connections), page.total, None, page.at, tuple(names)
                )
            after = page.next

    async def process_get(
        self, pid: int, start_time: float | None = None, *, history: bool = False
    ) -> ProcessDetail:
        """One instance with ancestry and children: the live one for `pid` (or exactly
        `start_time`'s), else the newest in the store. `history` also counts the instances
        of this pid in the store (slower; the fast path answers from memory)."""
        params: dict[str, Any] = {"pid": pid}
        if start_time is not None:
            params["start_time"] = start_time
        if history:
            params["history"] = True
        return await self._typed(ProcessDetail, "processes.get", params)

    async def processes_at(self, at: float, filter_text: str = "") -> list[ProcessRecord]:
        """Every process alive at `at` (epoch seconds) that matches the filter, by pid."""
        records: list[ProcessRecord] = []
        after: tuple[int, float] | None = None
        while True:
            params: dict[str, Any] = {"at": at, "filter": filter_text}
            if after is not None:
                params["after"] = list(after)
            page = await self._typed(ProcessesPage, "history.processes_at", params)
            records.extend(page.processes)
            if page.next is None:
                return records
            after = page.next

    async def timeline(
        self,
        since: float,
        until: float | None = None,
        *,
        kinds: tuple[str, ...] = (),
        limit: int = 1000,
        filter_text: str = "",
    ) -> TimelinePage:
        """Events from `since` to `until`, newest first, at most `limit` (one or more pages);
        the last page's `next` says where the history goes on."""
        events: list[TimelineEvent] = []
        before: tuple[float, int, int] | None = None
        while True:
            params = _timeline_params(
                since, until, before, filter_text, min(200, limit - len(events))
            )
            params["kinds"] = list(kinds)
            page = await self._typed(TimelinePage, "history.timeline", params)
            events.extend(page.events)
            if page.next is None or len(events) >= limit:
                return TimelinePage(events=tuple(events), next=page.next, reach=page.reach)
            before = page.next

    async def timeline_page(
        self,
        *,
        until: float | None,
        before: tuple[float, int, int] | None = None,
        filter_text: str = "",
        limit: int = 200,
    ) -> TimelinePage:
        """One page of the whole history's events at or before `until`, newest first."""
        params = _timeline_params(0.0, until, before, filter_text, limit)
        return await self._typed(TimelinePage, "history.timeline", params)

    async def activity(self, since: float, until: float, buckets: int) -> HistoryActivity:
        """New process instances and alerts per bucket over [since, until), oldest first."""
        params = {"since": since, "until": until, "buckets": buckets}
        return await self._typed(HistoryActivity, "history.activity", params)

    async def alerts_list(
        self,
        *,
        state: str | None = None,
        severity: str | None = None,
        limit: int = 1000,
        rule: str | None = None,
        since: float | None = None,
        by_seen: bool = False,
    ) -> list[Alert]:
        """Up to `limit` alerts (all pages), newest id first, or most recently seen first
        (`by_seen`, as `alerts list` shows them)."""
        alerts: list[Alert] = []
        before: int | None = None
        offset = 0
        while len(alerts) < limit:
            params: dict[str, Any] = {"limit": min(limit - len(alerts), 10_000)}
            for name, value in (
                ("state", state),
                ("severity", severity),
                ("rule", rule),
                ("since", since),
                ("before_id", before),
            ):
                if value is not None:
                    params[name] = value
            if by_seen:
                params["order"] = "seen"
                if offset:
                    params["offset"] = offset
            page = await self._typed(AlertsPage, "alerts.list", params)
            alerts.extend(page.alerts)
            if not page.alerts:
                break
            if by_seen:
                if page.next_offset is None and len(page.alerts) < params["limit"]:
                    break
                offset = page.next_offset if page.next_offset is not None else len(alerts)
            elif page.next_before_id is None and len(page.alerts) < params["limit"]:
                break
            else:
                before = page.next_before_id if page.next_before_id is not None else alerts[-1].id
        return alerts

    async def alert_show(self, alert_id: int) -> AlertDetail:
        """The alert, its occurrence and where each sink stands with it (`alerts show`)."""
        return await self._typed(AlertDetail, "alerts.show", {"id": alert_id})

    async def alert_get(self, alert_id: int) -> Alert:
        return await self._typed(Alert, "alerts.get", {"id": alert_id})

    async def alert_ack(self, alert_id: int) -> Alert:
        return await self._typed(Alert, "alerts.ack", {"id": alert_id})

    async def alert_close(self, alert_id: int) -> Alert:
        return await self._typed(Alert, "alerts.close", {"id": alert_id})

    async def rules_list(self) -> list[RuleStatus]:
        result = await self.call("rules.list")
        try:
            return list(from_wire_many(RuleStatus, result))
        except CodecError as exc:
            raise IpcError(f"unexpected answer to rules.list from the daemon: {exc}") from None

    async def rule_enable(self, rule_id: str) -> RuleStatus:
        return await self._typed(RuleStatus, "rules.enable", {"id": rule_id})

    async def rule_disable(self, rule_id: str) -> RuleStatus:
        return await self._typed(RuleStatus, "rules.disable", {"id": rule_id})

    async def rules_reload(self) -> RulesReload:
        return await self._typed(RulesReload, "rules.reload")

    async def query_run(self, sql: str, max_rows: int = 10_000) -> QueryRows:
        return await self._typed(QueryRows, "query.run", {"sql": sql, "max_rows": max_rows})

    async def query_tables(self) -> list[TableSchema]:
        """The tables and views `query.run` may read, with their columns."""
        result = await self.call("query.tables")
        try:
            return list(from_wire_many(TableSchema, result))
        except CodecError as exc:
            raise IpcError(f"unexpected answer to query.tables from the daemon: {exc}") from None

    async def health(self) -> DaemonStatus:
        return await self._typed(DaemonStatus, "health")

    async def audit_verify(self) -> AuditVerification:
        return await self._typed(AuditVerification, "audit.verify")

    async def process_signal(
        self, pid: int, start_time: float, signal: str | int = "TERM"
    ) -> SignalResult:
        """Signal the instance (pid, start_time) — never whatever holds the pid now."""
        return await self._typed(
            SignalResult, "process.signal", {"pid": pid, "start_time": start_time, "signal": signal}
        )

    async def subscribe(self, topic: str) -> SubscribeResult:
        """Start receiving `topic` notifications (processes, alerts, rules, health) through
        `events()`; kept across reconnects."""
        if topic not in protocol.TOPICS:
            raise ValueError(
                f"unknown topic {topic!r}; expected one of {', '.join(protocol.TOPICS)}"
            )
        result = await self._subscribe_call(topic)
        self._topics.add(topic)
        return result

    async def _subscribe_call(self, topic: str) -> SubscribeResult:
        return await self._typed(SubscribeResult, f"{topic}.subscribe")

    async def unsubscribe(self, topic: str) -> bool:
        self._topics.discard(topic)
        result = await self.call(f"{topic}.unsubscribe")
        return bool(isinstance(result, dict) and result.get("was_subscribed"))


def _timeline_params(
    since: float,
    until: float | None,
    before: tuple[float, int, int] | None,
    filter_text: str,
    limit: int,
) -> dict[str, Any]:
    """`history.timeline`'s params; the optional ones only when given."""
    params: dict[str, Any] = {"since": since, "limit": limit}
    if filter_text:
        params["filter"] = filter_text
    if until is not None:
        params["until"] = until
    if before is not None:
        params["before"] = list(before)
    return params
