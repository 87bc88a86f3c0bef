"""The daemon's side of every IPC method (docs/protocol.md), and the feed that turns collector
ticks into subscription notifications.

Where answers come from:
- processes: the collector's in-memory snapshot, copied on the collector's worker thread once
  per tick into a `LiveTable` that the event loop owns (lookups never wait for a tick);
  instances that are no longer live, and `query.run`, come from the store through a read-only
  connection opened per request on a small thread pool — never on the event loop;
- alerts, rules, audit: the detection engine and the audit log, reached through the narrow
  `DetectionEngine` and `AuditTrail` protocols (daemon/ipc_ports.py). Until they are attached
  (`attach_engine`, `attach_audit`) their methods answer NOT_AVAILABLE, never made-up data.

The daemon calls `start_ipc` once the store is open and `IpcRuntime.stop` when shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from daemoneye import __version__
from daemoneye.config.schema import LoadedConfig
from daemoneye.daemon.collection import Collection as Collector
from daemoneye.daemon.ipc_ports import AuditTrail, DetectionEngine, StoreAuditTrail
from daemoneye.daemon.live_table import LiveTable, TableUpdate, compute_update
from daemoneye.daemon.process_signal import (
    SignalRefused,
    StaleProcess,
    parse_signal,
    signal_instance,
)
from daemoneye.errors import QueryError, StoreError
from daemoneye.filters import FilterError, parse_filter
from daemoneye.ipc import protocol
from daemoneye.ipc.auth import Peer, actor, group_id
from daemoneye.ipc.codec import to_wire
from daemoneye.ipc.protocol import (
    AlertIdParams,
    AlertsListParams,
    ErrorCode,
    HelloParams,
    NoParams,
    ProcessDetail,
    ProcessesGetParams,
    ProcessesListParams,
    ProcessSignalParams,
    QueryRunParams,
    RuleIdParams,
    SignalResult,
    SubscribeResult,
    fit_children,
)
from daemoneye.ipc.server import Call, Connection, Limits, Method, MethodError, Raw, Reply, Server
from daemoneye.models import (
    ALERT_STATES,
    SEVERITIES,
    Alert,
    AuditVerification,
    DaemonStatus,
    HealthReport,
    Hello,
    ProcessKey,
    ProcessRecord,
    RulesReload,
    RuleStatus,
)
from daemoneye.paths import Mode
from daemoneye.store.readonly import ReadOnlyStore, open_readonly
from daemoneye.store.records import ancestry, children_of, records_for_pid

log = logging.getLogger(__name__)

T = TypeVar("T")

SOCKET_GROUP = "daemoneye"  # system mode: the socket is 0660 with this group when it exists
STORE_THREADS = 4
READY_TIMEOUT_S = 30.0
MAX_QUERY_ROWS = 100_000
SWITCH_INTERVAL_S = 0.001
_ENGINE_MISSING = "not available: the detection engine is not running"
_AUDIT_MISSING = "not available: the audit log is not running"


class DaemonService:
    """Every method of the protocol, over the collector, the store, the engine and the audit
    log. The event loop owns all of its state."""

    def __init__(
        self, config: Callable[[], LoadedConfig], collection: Collector, worker: Executor
    ) -> None:
        self._config = config
        self._collection = collection
        self._worker = worker
        self.table = LiveTable()
        self.engine: DetectionEngine | None = None
        self.audit_trail: AuditTrail | None = None
        self.server: Server | None = None
        self.health_report: HealthReport | None = None
        self._db = config().paths.db
        self._host = socket.gethostname()
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._store_pool = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="daemoneye-ipc")
        self._rules_line: bytes | None = None
        self._admin_group: tuple[str, int | None, float] = ("", None, 0.0)

    # -- plugging in the engine ------------------------------------------------------------
    def attach_engine(self, engine: DetectionEngine | None) -> None:
        """Plug in (or, with None, unplug) the detection engine: its methods answer from then
        on instead of NOT_AVAILABLE."""
        self.engine = engine

    def attach_audit(self, audit: AuditTrail | None) -> None:
        """Plug in (or unplug) the audit log that admin requests are written to."""
        self.audit_trail = audit

    def publish_alert(self, alert: Alert) -> None:
        """An alert was raised or changed: tell `alerts` subscribers. Thread-safe."""
        self._on_loop(
            self._publish,
            "alerts",
            protocol.notification(protocol.NOTIFY_ALERT, {"alert": to_wire(alert)}),
        )

    def publish_rules(self, statuses: Sequence[RuleStatus]) -> None:
        """The rule set changed (reload, enable, disable): tell `rules` subscribers.
        Thread-safe."""
        line = protocol.notification(protocol.NOTIFY_RULES, {"rules": to_wire(tuple(statuses))})
        self._on_loop(self._set_rules_line, line)

    def _set_rules_line(self, line: bytes) -> None:
        self._rules_line = line
        self._publish("rules", line)

    def _publish(self, topic: str, line: bytes) -> None:
        if self.server is not None:
            self.server.publish(topic, (line,))

    def _on_loop(self, function: Callable[..., None], *args: Any) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            function(*args)
        else:
            self._loop.call_soon_threadsafe(function, *args)

    # -- the feed: one update per collector tick ------------------------------------------
    def wake(self) -> None:
        """A tick has finished: compute the delta now instead of at the next poll."""
        self._wake.set()

    async def run_feed(self) -> None:
        """Forever: after each collector tick, diff its snapshot against the last one (on the
        collector's worker thread, which owns the scanner), then publish the delta."""
        done_ticks = 0  # nothing to show before the first scan has finished
        while True:
            interval = self._config().config.collector.interval
            if self._collection.ticks == done_ticks:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=min(max(interval / 10, 0.02), 0.25)
                    )
                continue
            done_ticks = self._collection.ticks
            try:
                update, report = await self._loop.run_in_executor(
                    self._worker, self._compute, self.table.records, self.table.seq + 1
                )
            except (StoreError, OSError) as exc:
                log.error("could not read the collector's state for IPC clients: %s", exc)
                continue
            self._apply(update, report)

    def _compute(
        self, previous: dict[ProcessKey, ProcessRecord], seq: int
    ) -> tuple[TableUpdate, HealthReport]:
        collection = self._collection
        return compute_update(previous, collection.scanner.snapshot(), seq), collection.health()

    def _apply(self, update: TableUpdate, report: HealthReport) -> None:
        self.table.apply(update)
        self.health_report = report
        self._ready.set()
        if self.server is None:
            return
        if update.delta_lines:
            self.server.publish("processes", update.delta_lines)
        if self.server.has_subscribers("health"):
            self.server.publish("health", (self._health_line(),))

    async def _wait_ready(self) -> None:
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_S)
        except TimeoutError:
            raise MethodError(
                ErrorCode.NOT_AVAILABLE,
                "not available: the daemon has not finished its first scan yet",
            ) from None

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
        assert self.health_report is not None
        clients = len(self.server.connections) if self.server is not None else 0
        engine = self.engine.status() if self.engine is not None else None
        return DaemonStatus(report=self.health_report, clients=clients, engine=engine)

    def _health_line(self) -> bytes:
        return protocol.notification(protocol.NOTIFY_HEALTH, to_wire(self.status()))

    async def audit_admin(self, call: Call, outcome: str) -> None:
        """Every admin request, refused or done, goes to the audit log with the peer."""
        detail = {
            "method": call.method,
            "params": dict(call.raw_params),
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
            "processes": lambda conn: self.table.snapshot_lines(),
            "rules": lambda conn: (self._rules_line,) if self._rules_line else (),
            "health": lambda conn: (self._health_line(),) if self.health_report else (),
        }

    # -- the methods -------------------------------------------------------------------------
    def methods(self) -> dict[str, Method]:
        table = [
            Method("hello", self.hello, HelloParams),
            Method("processes.list", self.processes_list, ProcessesListParams),
            Method("processes.get", self.processes_get, ProcessesGetParams),
            Method("alerts.list", self.alerts_list, AlertsListParams),
            Method("alerts.get", self.alerts_get, AlertIdParams),
            Method("rules.list", self.rules_list, NoParams),
            Method("query.run", self.query_run, QueryRunParams),
            Method("health", self.health, NoParams),
            Method("audit.verify", self.audit_verify, NoParams),
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
        await self._wait_ready()
        alerted = self.engine.alerted() if self.engine is not None else frozenset()
        return Raw(self.table.page(process_filter, params.after, params.limit, alerted))

    async def processes_get(self, call: Call, params: ProcessesGetParams) -> ProcessDetail:
        if params.pid < 1:
            raise _invalid("processes.get", "pid", "must be a positive process id")
        await self._wait_ready()
        live = self.table.live_detail(params.pid, params.start_time)
        if live is None:
            return await self.in_store(lambda store: _detail_from_store(store, params))
        record, chain, children = live
        instances: int | None = None
        if not self.table.chain_is_complete(chain, record):
            last = chain[-1] if chain else record
            chain = chain + await self.in_store(lambda store: ancestry(store, last))
        if params.history:
            instances = await self.in_store(
                lambda store: max(1, len(records_for_pid(store, params.pid)))
            )
        detail = ProcessDetail(
            process=record,
            live=True,
            ancestry=tuple(chain),
            children=tuple(children),
            instances=instances,
            children_total=len(children),
        )
        # init, a shell farm, a build: thousands of children would not fit in one message.
        return fit_children(detail, [len(self.table.encoded[c.key]) for c in children])

    async def query_run(self, call: Call, params: QueryRunParams) -> Raw:
        if not 0 <= params.max_rows <= MAX_QUERY_ROWS:
            raise _invalid("query.run", "max_rows", f"must be 0 to {MAX_QUERY_ROWS}")
        return Raw(
            await self.in_store(lambda store: _query_json(store, params.sql, params.max_rows))
        )

    async def health(self, call: Call, params: NoParams) -> DaemonStatus:
        await self._wait_ready()
        return self.status()

    async def alerts_list(self, call: Call, params: AlertsListParams) -> protocol.AlertsPage:
        if params.state is not None and params.state not in ALERT_STATES:
            raise _invalid("alerts.list", "state", f"must be one of {', '.join(ALERT_STATES)}")
        if params.severity is not None and params.severity not in SEVERITIES:
            raise _invalid("alerts.list", "severity", f"must be one of {', '.join(SEVERITIES)}")
        if not 1 <= params.limit <= 10_000:
            raise _invalid("alerts.list", "limit", "must be 1 to 10000")
        alerts = await self._engine().list_alerts(
            state=params.state,
            severity=params.severity,
            limit=params.limit,
            before_id=params.before_id,
        )
        return _alerts_page(alerts, params.limit)

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
        boot_time = self._collection.scanner.boot_time
        proc_root = self._collection.scanner.proc_root
        try:
            how = await asyncio.to_thread(
                signal_instance,
                params.pid,
                params.start_time,
                sig,
                boot_time=boot_time,
                proc_root=proc_root,
            )
        except StaleProcess as exc:
            raise MethodError(ErrorCode.STALE_PROCESS, str(exc)) from None
        except SignalRefused as exc:
            raise MethodError(ErrorCode.SIGNAL_FAILED, str(exc)) from None
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
                await self._wait_ready()
            rules_line = self._rules_line
            if topic == "rules" and self.engine is not None and rules_line is None:
                statuses = await self.engine.rule_statuses()
                rules_line = protocol.notification(
                    protocol.NOTIFY_RULES, {"rules": to_wire(tuple(statuses))}
                )
            # From here on nothing awaits: the answer, the initial state and the first
            # notification reach the client in that order.
            call.conn.subscribe(topic)
            if topic == "processes":
                result = SubscribeResult(topic, True, self.table.seq)
                return Reply(result, self.table.snapshot_lines(), then_topic=topic)
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


def _invalid(method: str, field: str, why: str) -> MethodError:
    return MethodError(
        ErrorCode.INVALID_PARAMS, f"invalid params for {method}: {field}: {why}", {"field": field}
    )


def _detail_from_store(store: ReadOnlyStore, params: ProcessesGetParams) -> ProcessDetail:
    instances = records_for_pid(store, params.pid)
    if params.start_time is not None:
        chosen = [r for r in instances if r.start_time == params.start_time]
    else:
        chosen = instances[:1]
    if not chosen:
        which = f"pid {params.pid}" + (
            f" started at {params.start_time}" if params.start_time is not None else ""
        )
        raise MethodError(
            ErrorCode.NOT_FOUND, f"no process instance with {which} is running or in the store"
        )
    record = chosen[0]
    children = children_of(store, record)
    detail = ProcessDetail(
        process=record,
        live=record.ended_at is None,
        ancestry=tuple(ancestry(store, record)),
        children=tuple(children),
        instances=len(instances),
        children_total=len(children),
    )
    return fit_children(detail, [len(protocol.dumps(to_wire(c))) for c in children])


def _query_json(store: ReadOnlyStore, sql: str, max_rows: int) -> bytes:
    """A QueryRows result, encoded here (off the event loop) and cut to fit one message."""
    result = store.query(sql, max_rows=max_rows)
    rows: list[bytes] = []
    size = 0
    truncated = result.truncated
    for row in result.rows:
        encoded = protocol.dumps([v.hex() if isinstance(v, bytes) else v for v in row])
        if size + len(encoded) + 1 > protocol.CHUNK_BYTES:
            truncated = True
            break
        rows.append(encoded)
        size += len(encoded) + 1
    return (
        b'{"columns":'
        + protocol.dumps(list(result.columns))
        + b',"rows":'
        + protocol.json_list(rows)
        + b',"truncated":'
        + (b"true" if truncated else b"false")
        + b"}"
    )


def _alerts_page(alerts: Sequence[Alert], limit: int) -> protocol.AlertsPage:
    kept: list[Alert] = []
    size = 0
    for alert in alerts[:limit]:
        size += len(protocol.dumps(to_wire(alert))) + 1
        if kept and size > protocol.CHUNK_BYTES:
            return protocol.AlertsPage(alerts=tuple(kept), next_before_id=kept[-1].id)
        kept.append(alert)
    return protocol.AlertsPage(alerts=tuple(kept), next_before_id=None)


def socket_permissions(mode: Mode) -> tuple[int, int | None]:
    """(file mode, group) of the socket: system mode shares it with the `daemoneye` group when
    that group exists; otherwise only the daemon's user may connect."""
    if mode is Mode.SYSTEM:
        gid = group_id(SOCKET_GROUP)
        if gid is not None:
            return 0o660, gid
    return 0o600, None


def _feed_ended(feed: asyncio.Task[None]) -> None:
    if not feed.cancelled() and feed.exception() is not None:
        log.error(
            "IPC subscribers no longer get updates: the feed failed", exc_info=feed.exception()
        )


@dataclass
class IpcRuntime:
    """The running IPC side of the daemon: what lifecycle keeps and stops."""

    service: DaemonService
    server: Server
    feed: asyncio.Task[None]

    def tick_done(self) -> None:
        """Optional: call after each collector tick for the lowest notification latency (the
        feed otherwise notices a finished tick within a tenth of the interval)."""
        self.service.wake()

    async def stop(self) -> None:
        self.feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.feed
        close_engine = getattr(self.service.engine, "close", None)
        if close_engine is not None:
            await close_engine()
        await self.server.stop()
        self.service.close()
        log.info("IPC socket %s closed", self.server.path)


async def start_ipc(
    config: Callable[[], LoadedConfig], collection: Collector, worker: Executor
) -> IpcRuntime:
    """Open the IPC socket and start feeding subscribers; `worker` is the collector's
    single worker thread (the only thread that may touch the scanner). Raises DaemonError
    when the socket cannot be had (a live daemon owns it, the path is too long, …)."""
    loaded = config()
    daemon_config = loaded.config.daemon
    service = DaemonService(config, collection, worker)
    limits = Limits(
        max_clients=daemon_config.max_clients,
        queue_bytes=daemon_config.client_queue,
        admin_reserved=daemon_config.admin_reserved_clients,
        max_clients_per_uid=daemon_config.max_clients_per_uid,
        idle_timeout_s=daemon_config.idle_timeout,
        queue_total_bytes=daemon_config.clients_queue_total,
        refused_audit_rate=float(daemon_config.refused_audit_rate),
        refused_audit_burst=daemon_config.refused_audit_burst,
    )
    path = Path(loaded.paths.socket)
    server = Server(
        path,
        service.methods(),
        admin_gid=service.admin_gid,
        limits=limits,
        on_admin=service.audit_admin,
        recover=service.recoveries(),
        on_suppressed=service.audit_suppressed,
    )
    service.server = server
    file_mode, group = socket_permissions(loaded.paths.mode)
    try:
        await server.start(file_mode=file_mode, group=group)
    except BaseException:
        service.close()
        raise
    # Answers wait for the GIL while the collector thread scans; hand it over every 1 ms instead
    # of every 5 ms so a request never waits long (it costs nothing while the loop is idle).
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    try:
        service.attach_audit(StoreAuditTrail(collection, worker, service.in_store))
    except ImportError as exc:  # an install without the engine package
        log.warning("admin requests will only be logged: no audit log (%s)", exc)
    running_engine = getattr(collection, "engine", None)
    if running_engine is not None:  # the daemon started its engine before the socket
        from daemoneye.daemon.engine_link import EngineLink

        service.attach_engine(
            EngineLink(
                running_engine,
                worker,
                service.in_store,
                config,
                service.publish_alert,
                service.publish_rules,
            )
        )
    feed = asyncio.get_running_loop().create_task(service.run_feed(), name="daemoneye-ipc-feed")
    feed.add_done_callback(_feed_ended)
    service.admin_gid()  # resolve once now, so a missing group is reported at start
    log.info(
        "IPC listening on %s (mode %04o%s, at most %d clients)",
        path,
        file_mode,
        f", group {SOCKET_GROUP}" if group is not None else "",
        limits.max_clients,
    )
    return IpcRuntime(service=service, server=server, feed=feed)
