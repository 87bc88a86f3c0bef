"""Starting and stopping the daemon's IPC side: the socket with its permissions and limits,
the service behind it, the engine and audit log plugged in, and the subscriber feed task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from daemoneye.config.schema import LoadedConfig
from daemoneye.daemon.collection import Collection as Collector
from daemoneye.daemon.ipc_ports import StoreAuditTrail
from daemoneye.daemon.service import DaemonService
from daemoneye.ipc.auth import group_id
from daemoneye.ipc.server import Limits, Server
from daemoneye.paths import Mode

log = logging.getLogger(__name__)

SOCKET_GROUP = "daemoneye"  # system mode: the socket is 0660 with this group when it exists
SWITCH_INTERVAL_S = 0.001


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
        self.service.feed.wake()

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
    service.feed.server = server
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
                service.feed.publish_alert,
                service.feed.publish_rules,
            )
        )
    feed = asyncio.get_running_loop().create_task(service.feed.run(), name="daemoneye-ipc-feed")
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
