"""The daemon's side of every IPC method (docs/protocol.md). Live state comes from the
subscriber feed (daemon/subscriber_feed.py); answers from the store from daemon/store_answers.py.

Where answers come from:
- processes: the collector's in-memory snapshot, copied on the collector's worker thread once
  per tick into a `LiveTable` that the event loop owns (lookups never wait for a tick);
  instances that are no longer live, and `query.run`, come from the store through a read-only
  connection opened per request on a small thread pool — never on the event loop;
- alerts, rules, audit: the detection engine and the audit log, reached through the narrow
  `DetectionEngine` and `AuditTrail` protocols (daemon/ipc_ports.py). Until they are attached
  (`attach_engine`, `attach_audit`) their methods answer NOT_AVAILABLE, never made-up data.

The daemon starts it with `start_ipc` (daemon/ipc_runtime.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

from daemoneye import __version__
from daemoneye.config.schema import LoadedConfig
from daemoneye.connection_filter import ConnectionFilterError, parse_connection_filter
from daemoneye.daemon.collection import Collection as Collector
from daemoneye.daemon.connection_answers import connections_page, live_from_memory
from daemoneye.daemon.history_answers import activity_answer, processes_at, timeline_page
from daemoneye.daemon.host_meters import HostSampler
from daemoneye.daemon.ipc_ports import AuditTrail, DetectionEngine
from daemoneye.daemon.process_signal import parse_signal
from daemoneye.daemon.store_answers import alerts_page, query_json, stored_detail_answer
from daemoneye.daemon.subscriber_feed import SubscriberFeed
from daemoneye.errors import QueryError, StoreError
from daemoneye.filters import FilterError, parse_filter
from daemoneye.ipc import protocol
from daemoneye.ipc.auth import Peer, actor, group_id
from daemoneye.ipc.codec import to_wire
from daemoneye.ipc.connection import Connection
from daemoneye.ipc.methods import Call, Method, MethodError, Raw, Reply
from daemoneye.ipc.protocol import (
    ActivityParams,
    AlertIdParams,
    AlertsListParams,
    ConnectionsListParams,
    ErrorCode,
    HelloParams,
    NoParams,
    ProcessDetail,
    ProcessesAtParams,
    ProcessesGetParams,
    ProcessesListParams,
    ProcessSignalParams,
    QueryRunParams,
    RuleIdParams,
    SignalResult,
    SubscribeResult,
    TimelineParams,
    fit_children,
)
from daemoneye.models import (
    ALERT_STATES,
    SEVERITIES,
    Alert,
    AlertDetail,
    AuditVerification,
    DaemonStatus,
    Hello,
    HistoryActivity,
    ProcessKey,
    RulesReload,
    RuleStatus,
    TableSchema,
)
from daemoneye.store.catalogue import readable_schema
from daemoneye.store.changes import changes_of
from daemoneye.store.history import history_reach
from daemoneye.store.readonly import ReadOnlyStore, open_readonly
from daemoneye.store.records import ancestry, records_for_pid

log = logging.getLogger(__name__)

T = TypeVar("T")

STORE_THREADS = 4
MAX_QUERY_ROWS = 100_000
_ENGINE_MISSING = "not available: the detection engine is not running"
_AUDIT_MISSING = "not available: the audit log is not running"


RULES_LINE_FRESH_S = 1.0  # a rules subscriber gets hit counts at most this old


class DaemonService:
    """Every method of the protocol, over the collector, the store, the engine and the audit
    log. The event loop owns all of its state."""

    def __init__(
        self, config: Callable[[], LoadedConfig], collection: Collector, worker: Executor
    ) -> None:
        self._config = config
        self._collection = collection
        self._worker = worker
        self.feed = SubscriberFeed(config, collection, worker, self._health_line)
        self.engine: DetectionEngine | None = None
        self.audit_trail: AuditTrail | None = None
        self._db = config().paths.db
        self._host = socket.gethostname()
        self._loop = asyncio.get_running_loop()
        self._store_pool = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="daemoneye-ipc")
        self._admin_group: tuple[str, int | None, float] = ("", None, 0.0)
        self.host_meters = HostSampler()
        self._rules_line_at = float("-inf")  # time.monotonic() of a fresh rules line

    # -- plugging in the engine ------------------------------------------------------------
    def attach_engine(self, engine: DetectionEngine | None) -> None:
        """Plug in (or, with None, unplug) the detection engine: its methods answer from then
        on instead of NOT_AVAILABLE."""
        self.engine = engine

    def attach_audit(self, audit: AuditTrail | None) -> None:
        """Plug in (or unplug) the audit log that admin requests are written to."""
        self.audit_trail = audit

    # -- helpers -----------------------------------------------------------------------------
    def admin_gid(self) -> int | None:
        """The admin group's gid (looked up again when the name changes, or a minute later
        when it did not exist)."""
        name = self._config().config.daemon.admin_group
        cached_name, gid, checked = self._admin_group
        if name != cached_name or (gid is None and name and time.monotonic() - checked > 60):
            gid = group_id(name)
            if name and gid is None:
                log.warning(
                    "the admin group %r does not exist: only root and uid %d may use admin methods",
                    name,
                    os.geteuid(),
                )
            self._admin_group = (name, gid, time.monotonic())
        return gid

    async def in_store(self, work: Callable[[ReadOnlyStore], T]) -> T:
        """Run `work` on a read-only store connection of its own, on the IPC thread pool."""

        def run() -> T:
            with open_readonly(self._db) as store:
                return work(store)

        try:
            return await self._loop.run_in_executor(self._store_pool, run)
        except QueryError as exc:
            raise MethodError(ErrorCode.QUERY_REFUSED, str(exc)) from None
        except StoreError as exc:
            raise MethodError(ErrorCode.STORE_ERROR, str(exc)) from None

    def _engine(self) -> DetectionEngine:
        if self.engine is None:
            raise MethodError(ErrorCode.NOT_AVAILABLE, _ENGINE_MISSING)
        return self.engine

    def status(self) -> DaemonStatus:
        report = self.feed.health_report
        assert report is not None
        progress = self._collection.startup_evaluation
        if progress is not None:
            # As of now, not of the last tick: a rule's run may end between two ticks.
            report = dataclasses.replace(report, startup_evaluation=progress.snapshot())
        clients = len(self.feed.server.connections) if self.feed.server is not None else 0
        engine = self.engine.status() if self.engine is not None else None
        return DaemonStatus(
            report=report,
            clients=clients,
            engine=engine,
            host=self.host_meters.sample(),
        )

    def _health_line(self) -> bytes:
        return protocol.notification(protocol.NOTIFY_HEALTH, to_wire(self.status()))

    async def audit_admin(self, call: Call, outcome: str) -> None:
        """Every admin request, refused or done, goes to the audit log with the peer."""
        refused = outcome.startswith("refused")
        detail = {
            "method": call.method,
            # A refused caller's values are not kept: its names and sizes are enough to see what
            # was tried, and the caller cannot fill the audit log with text of its choosing.
            "params": _shapes(call.raw_params) if refused else dict(call.raw_params),
            "outcome": outcome,
            "client": call.conn.client_name,
        }
        if self.audit_trail is None:
            # AUDIT HOOK: without an audit log (attach_audit) admin requests are only logged.
            log.info(
                "admin request (audit log not attached) by %s: %s",
                actor(call.peer),
                json.dumps(detail, sort_keys=True, default=str),
            )
            return
        await self.audit_trail.audit(f"admin.{call.method}", actor(call.peer), detail)

    async def audit_suppressed(self, peer: Peer, count: int, window_s: float) -> None:
        """One entry for the refused admin calls of a uid that were over its audit rate."""
        detail = {
            "outcome": f"{count} refused calls from uid {peer.uid} suppressed",
            "suppressed": count,
            "uid": peer.uid,
            "window_s": window_s,
        }
        if self.audit_trail is None:
            log.info("admin requests refused (audit log not attached): %s", detail["outcome"])
            return
        await self.audit_trail.audit("admin.refused.suppressed", actor(peer), detail)

    def recoveries(self) -> dict[str, Callable[[Connection], Sequence[bytes]]]:
        """What follows a `resync` of each topic: its fresh state."""
        return {
            "processes": lambda conn: self.feed.table.snapshot_lines(),
            "rules": lambda conn: (self.feed.rules_line,) if self.feed.rules_line else (),
            "health": lambda conn: (self._health_line(),) if self.feed.health_report else (),
        }

    # -- the methods -------------------------------------------------------------------------
    def methods(self) -> dict[str, Method]:
        table = [
            Method("hello", self.hello, HelloParams),
            Method("processes.list", self.processes_list, ProcessesListParams),
            Method("processes.get", self.processes_get, ProcessesGetParams),
            Method("alerts.list", self.alerts_list, AlertsListParams),
            Method("alerts.get", self.alerts_get, AlertIdParams),
            Method("alerts.show", self.alerts_show, AlertIdParams),
            Method("rules.list", self.rules_list, NoParams),
            Method("query.run", self.query_run, QueryRunParams),
            Method("query.tables", self.query_tables, NoParams),
            Method("health", self.health, NoParams),
            Method("audit.verify", self.audit_verify, NoParams),
            Method("connections.list", self.connections_list, ConnectionsListParams),
            Method("history.processes_at", self.history_processes_at, ProcessesAtParams),
            Method("history.timeline", self.history_timeline, TimelineParams),
            Method("history.activity", self.history_activity, ActivityParams),
            Method("alerts.ack", self.alerts_ack, AlertIdParams, admin=True),
            Method("alerts.close", self.alerts_close, AlertIdParams, admin=True),
            Method("rules.enable", self.rules_enable, RuleIdParams, admin=True),
            Method("rules.disable", self.rules_disable, RuleIdParams, admin=True),
            Method("rules.reload", self.rules_reload, NoParams, admin=True),
            Method("process.signal", self.process_signal, ProcessSignalParams, admin=True),
        ]
        for topic in protocol.TOPICS:
            table.append(Method(f"{topic}.subscribe", self._subscriber(topic), NoParams))
            table.append(Method(f"{topic}.unsubscribe", self._unsubscriber(topic), NoParams))
        return {method.name: method for method in table}

    async def hello(self, call: Call, params: HelloParams) -> Hello:
        if params.protocol_version != protocol.PROTOCOL_VERSION:
            raise MethodError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {params.protocol_version} is not supported; "
                f"this daemon speaks version {protocol.PROTOCOL_VERSION}",
                {"supported": [protocol.PROTOCOL_VERSION]},
            )
        call.conn.client_name = params.client[:120]
        log.debug(
            "hello from %s (%s) as %s", call.peer, params.client or "unnamed client", call.conn.role
        )
        return Hello(
            protocol_version=protocol.PROTOCOL_VERSION,
            daemon_version=__version__,
            host=self._host,
            role=call.conn.role,
            peer_uid=call.peer.uid,
            peer_pid=call.peer.pid,
        )

    async def processes_list(self, call: Call, params: ProcessesListParams) -> Raw:
        if params.limit < 1:
            raise _invalid("processes.list", "limit", "must be 1 or more")
        try:
            process_filter = parse_filter(params.filter)
        except FilterError as exc:
            raise _invalid("processes.list", "filter", str(exc)) from None
        await self.feed.wait_ready()
        alerted = self.engine.alerted() if self.engine is not None else frozenset()
        connections = (
            self._collection.connections_by_key if process_filter.uses_connections else None
        )
        return Raw(
            self.feed.table.page(process_filter, params.after, params.limit, alerted, connections)
        )

    async def connections_list(
        self, call: Call, params: ConnectionsListParams
    ) -> protocol.ConnectionsPage:
        if params.limit < 1:
            raise _invalid("connections.list", "limit", "must be 1 or more")
        try:
            connection_filter = parse_connection_filter(params.filter)
        except ConnectionFilterError as exc:
            raise _invalid("connections.list", "filter", str(exc)) from None
        at = self._collection.connections_at
        records = self.feed.table.records

        def name_of(key: ProcessKey) -> str | None:
            record = records.get(key)
            return record.name if record is not None else None

        return connections_page(
            live_from_memory(self._collection.connections_by_key),
            connection_filter,
            params.after,
            params.limit,
            at,
            name_of,
        )

    async def processes_get(self, call: Call, params: ProcessesGetParams) -> ProcessDetail:
        if params.pid < 1:
            raise _invalid("processes.get", "pid", "must be a positive process id")
        await self.feed.wait_ready()
        live = self.feed.table.live_detail(params.pid, params.start_time)
        if live is None:
            return await self.in_store(lambda store: stored_detail_answer(store, params))
        record, chain, children = live
        instances: int | None = None
        if not self.feed.table.chain_is_complete(chain, record):
            last = chain[-1] if chain else record
            chain = chain + await self.in_store(lambda store: ancestry(store, last))
        if params.history:
            instances = await self.in_store(
                lambda store: max(1, len(records_for_pid(store, params.pid)))
            )
        changes = await self.in_store(lambda store: changes_of(store, record.key))
        detail = ProcessDetail(
            process=record,
            live=True,
            ancestry=tuple(chain),
            children=tuple(children),
            instances=instances,
            children_total=len(children),
            changes=changes,
        )
        # init, a shell farm, a build: thousands of children would not fit in one message.
        return fit_children(detail, [len(self.feed.table.encoded(c.key)) for c in children])

    async def query_run(self, call: Call, params: QueryRunParams) -> Raw:
        if not 0 <= params.max_rows <= MAX_QUERY_ROWS:
            raise _invalid("query.run", "max_rows", f"must be 0 to {MAX_QUERY_ROWS}")
        return Raw(
            await self.in_store(lambda store: query_json(store, params.sql, params.max_rows))
        )

    async def query_tables(self, call: Call, params: NoParams) -> tuple[TableSchema, ...]:
        return await self.in_store(readable_schema)

    async def history_processes_at(
        self, call: Call, params: ProcessesAtParams
    ) -> protocol.ProcessesPage:
        if not 1 <= params.limit <= 100_000:
            raise _invalid("history.processes_at", "limit", "must be 1 to 100000")
        try:
            process_filter = parse_filter(params.filter)
        except FilterError as exc:
            raise _invalid("history.processes_at", "filter", str(exc)) from None
        now = time.time()
        return await self.in_store(lambda store: processes_at(store, params, process_filter, now))

    async def history_timeline(self, call: Call, params: TimelineParams) -> protocol.TimelinePage:
        return await self.in_store(lambda store: timeline_page(store, params))

    async def history_activity(self, call: Call, params: ActivityParams) -> HistoryActivity:
        return await self.in_store(lambda store: activity_answer(store, params))

    async def health(self, call: Call, params: NoParams) -> DaemonStatus:
        await self.feed.wait_ready()
        reach = await self.in_store(history_reach)
        return dataclasses.replace(self.status(), history=reach)

    async def alerts_list(self, call: Call, params: AlertsListParams) -> protocol.AlertsPage:
        if params.state is not None and params.state not in ALERT_STATES:
            raise _invalid("alerts.list", "state", f"must be one of {', '.join(ALERT_STATES)}")
        if params.severity is not None and params.severity not in SEVERITIES:
            raise _invalid("alerts.list", "severity", f"must be one of {', '.join(SEVERITIES)}")
        if not 1 <= params.limit <= 10_000:
            raise _invalid("alerts.list", "limit", "must be 1 to 10000")
        if params.order not in ("id", "seen"):
            raise _invalid("alerts.list", "order", 'must be "id" or "seen"')
        if params.order == "seen" and params.before_id is not None:
            raise _invalid("alerts.list", "before_id", 'pages order "id"; use offset')
        if params.offset < 0 or (params.offset and params.order != "seen"):
            raise _invalid("alerts.list", "offset", 'must be 0 or more, with order "seen"')
        if params.rule is not None and len(params.rule) > 256:
            raise _invalid("alerts.list", "rule", "at most 256 characters")
        offset = params.offset if params.order == "seen" else None
        alerts = await self._engine().list_alerts(
            state=params.state,
            severity=params.severity,
            limit=params.limit,
            before_id=params.before_id,
            rule=params.rule,
            since=params.since,
            offset=offset,
        )
        return alerts_page(alerts, params.limit, offset=offset)

    async def alerts_show(self, call: Call, params: AlertIdParams) -> AlertDetail:
        detail = await self._engine().alert_detail(params.id)
        if detail is None:
            raise MethodError(ErrorCode.NOT_FOUND, f"no alert with id {params.id}")
        return detail

    async def alerts_get(self, call: Call, params: AlertIdParams) -> Alert:
        alert = await self._engine().get_alert(params.id)
        if alert is None:
            raise MethodError(ErrorCode.NOT_FOUND, f"no alert with id {params.id}")
        return alert

    async def alerts_ack(self, call: Call, params: AlertIdParams) -> Alert:
        return await self._alert_state(call, params.id, "acknowledged")

    async def alerts_close(self, call: Call, params: AlertIdParams) -> Alert:
        return await self._alert_state(call, params.id, "closed")

    async def _alert_state(self, call: Call, alert_id: int, state: str) -> Alert:
        alert = await self._engine().set_alert_state(alert_id, state, actor(call.peer))
        if alert is None:
            raise MethodError(ErrorCode.NOT_FOUND, f"no alert with id {alert_id}")
        return alert

    async def rules_list(self, call: Call, params: NoParams) -> tuple[RuleStatus, ...]:
        return tuple(await self._engine().rule_statuses())

    async def rules_enable(self, call: Call, params: RuleIdParams) -> RuleStatus:
        return await self._rule_enabled(call, params.id, True)

    async def rules_disable(self, call: Call, params: RuleIdParams) -> RuleStatus:
        return await self._rule_enabled(call, params.id, False)

    async def _rule_enabled(self, call: Call, rule_id: str, enabled: bool) -> RuleStatus:
        status = await self._engine().set_rule_enabled(rule_id, enabled, actor(call.peer))
        if status is None:
            raise MethodError(ErrorCode.NOT_FOUND, f"no rule with id {rule_id!r}")
        return status

    async def rules_reload(self, call: Call, params: NoParams) -> RulesReload:
        return await self._engine().reload_rules(actor(call.peer))

    async def audit_verify(self, call: Call, params: NoParams) -> AuditVerification:
        if self.audit_trail is None:
            raise MethodError(ErrorCode.NOT_AVAILABLE, _AUDIT_MISSING)
        return await self.audit_trail.verify()

    async def process_signal(self, call: Call, params: ProcessSignalParams) -> SignalResult:
        try:
            sig = parse_signal(params.signal)
        except ValueError as exc:
            raise _invalid("process.signal", "signal", str(exc)) from None
        link = self._collection.link
        if link is None:
            raise MethodError(ErrorCode.NOT_AVAILABLE, "not available: procmond is not running")
        # procmond sends it: the only process that may signal another (procmond/signals.py).
        result = await link.signal(params.pid, params.start_time, sig)
        if result.outcome == "stale":
            raise MethodError(ErrorCode.STALE_PROCESS, result.message)
        if result.outcome == "refused":
            raise MethodError(ErrorCode.SIGNAL_FAILED, result.message)
        how = result.outcome
        log.info(
            "sent %s to pid %d (started %.2f) for %s",
            sig.name,
            params.pid,
            params.start_time,
            actor(call.peer),
        )
        return SignalResult(
            pid=params.pid, start_time=params.start_time, signal=sig.name, method=how
        )

    def _subscriber(self, topic: str) -> Callable[[Call, NoParams], Any]:
        async def subscribe(call: Call, params: NoParams) -> Reply:
            if topic in ("processes", "health"):
                await self.feed.wait_ready()
            if topic == "processes":
                await self.feed.encode_table()  # off the loop: the snapshot is then joins
            rules_line = self.feed.rules_line
            stale = time.monotonic() - self._rules_line_at > RULES_LINE_FRESH_S
            if topic == "rules" and self.engine is not None and (rules_line is None or stale):
                # The last rules.changed holds the hit counts of its moment; a subscriber
                # (a dashboard reconnecting) gets them as of now. Reused for a second, so
                # that subscribing in a loop costs one store read a second, not one each.
                statuses = await self.engine.rule_statuses()
                rules_line = protocol.notification(
                    protocol.NOTIFY_RULES, {"rules": to_wire(tuple(statuses))}
                )
                self.feed.rules_line = rules_line
                self._rules_line_at = time.monotonic()
            # From here on nothing awaits: the answer, the initial state and the first
            # notification reach the client in that order.
            call.conn.subscribe(topic)
            if topic == "processes":
                result = SubscribeResult(topic, True, self.feed.table.seq)
                return Reply(result, self.feed.table.snapshot_lines(), then_topic=topic)
            if topic == "health":
                return Reply(SubscribeResult(topic, True), (self._health_line(),), topic)
            available = self.engine is not None
            initial = (rules_line,) if topic == "rules" and rules_line and available else ()
            return Reply(SubscribeResult(topic, available), initial, topic)

        return subscribe

    def _unsubscriber(self, topic: str) -> Callable[[Call, NoParams], Any]:
        async def unsubscribe(call: Call, params: NoParams) -> dict[str, Any]:
            return {"topic": topic, "was_subscribed": call.conn.unsubscribe(topic)}

        return unsubscribe

    def close(self) -> None:
        self._store_pool.shutdown(wait=False, cancel_futures=True)


def _shapes(params: Mapping[str, Any]) -> dict[str, str]:
    """A refused call's params as names and the size of what they held (at most 32 names)."""
    shapes: dict[str, str] = {}
    for name, value in list(params.items())[:32]:
        size = len(json.dumps(value, default=str)) if not isinstance(value, str) else len(value)
        shapes[name[:64]] = f"{type(value).__name__}, {size} chars"
    return shapes


def _invalid(method: str, field: str, why: str) -> MethodError:
    return MethodError(
        ErrorCode.INVALID_PARAMS, f"invalid params for {method}: {field}: {why}", {"field": field}
    )
