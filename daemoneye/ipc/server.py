"""The daemon's side of the IPC socket: the listening server, admission, the fan-out of
subscriptions and the audit of admin calls (ARCHITECTURE.md §5, docs/protocol.md). One client's
transport is connection.py, its requests requests.py, what a method sees methods.py.

The server knows nothing of processes or alerts: the daemon gives it a table of `Method`s and
publishes encoded notification lines per topic. It guarantees what every method relies on:

- each connection's peer is known from the kernel (SO_PEERCRED) before anything is read;
- `hello` comes first; admin methods are refused for readers (and reported to `on_admin`);
- bad input never kills the daemon: unparsable lines get an error and the connection stays
  usable; oversized lines, a line that stalls half-way and connections past the limit get an
  error and are closed — each logged once with the peer's pid and uid;
- a client's work is bounded: at most `max_inflight` requests run at once and nothing new is
  read while its answers are not being read;
- a client that does not read its notifications never slows the daemon or the others: what
  waits for it is bounded by `queue_bytes`; past that its notifications are dropped and, once
  it has caught up, it gets a `resync` (and the topic's fresh state, see `recover`); what waits
  for all clients together is bounded by `queue_total_bytes` (budget.py);
- no reader can lock out the admins: slots are reserved for them, readers are capped per uid,
  idle connections are closed (admission.py); refused admin calls are audited at a bounded
  rate per uid (refusals.py);
- a reader that keeps sending what must be refused (malformed lines, admin calls) is read more
  slowly, so its parses cannot crowd out the other clients' answers (penalty.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemoneye.errors import DaemonEyeError
from daemoneye.ipc.admission import SlotCounts, SlotLimits, refusal
from daemoneye.ipc.auth import ROLE_ADMIN, Peer, role_of
from daemoneye.ipc.budget import QueueBudget
from daemoneye.ipc.connection import CLOSE_GRACE_S, Connection
from daemoneye.ipc.methods import AdminHook, Call, Method, Recover, SuppressedHook
from daemoneye.ipc.penalty import StrikeBudget
from daemoneye.ipc.protocol import (
    ErrorCode,
)
from daemoneye.ipc.rate_log import RateLimitedLog
from daemoneye.ipc.refusals import RefusalBudget
from daemoneye.ipc.socket_file import bind_unix_socket

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the daemon."""

    max_clients: int = 128
    max_inflight: int = 8  # requests of one connection worked on at once
    queue_bytes: int = 8 * 1024 * 1024  # notifications waiting for one client, at most
    line_timeout_s: float = 10.0  # a line that has started must end within this
    hello_timeout_s: float = 10.0  # `hello` must arrive within this after connecting
    admin_reserved: int = 8  # of max_clients, slots only admins may take
    max_clients_per_uid: int = 32  # connections of one reader uid (admins exempt); 0: no cap
    idle_timeout_s: float = 300.0  # no request and no live subscription for this long: closed
    queue_total_bytes: int = 64 * 1024 * 1024  # notifications waiting for all clients, at most
    refused_audit_rate: float = 10.0  # refused admin calls audited per second and uid
    refused_audit_burst: int = 20
    refused_audit_window_s: float = 1.0  # one summary of the calls not audited per window
    strike_rate: float = 2.0  # refusals (bad lines, refused admin calls) per second and reader
    strike_burst: int = 20  # uid before its connections stop reading for a while (penalty.py)

    @property
    def slots(self) -> SlotLimits:
        return SlotLimits(self.max_clients, self.admin_reserved, self.max_clients_per_uid)


class Server:
    """Listens on a Unix socket; `start()` binds, `stop()` closes and removes the socket."""

    def __init__(
        self,
        path: Path,
        methods: Mapping[str, Method],
        *,
        admin_gid: Callable[[], int | None],
        limits: Limits | None = None,
        on_admin: AdminHook | None = None,
        recover: Mapping[str, Recover] | None = None,
        on_suppressed: SuppressedHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.methods = dict(methods)
        self.limits = limits or Limits()
        self._admin_gid = admin_gid
        self._on_admin = on_admin
        self._recover = dict(recover or {})
        self._daemon_uid = os.geteuid()
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self.connections: set[Connection] = set()
        self.subscribers: dict[str, set[Connection]] = {}
        self._refused = RateLimitedLog("refused connection", interval_s=10.0)
        self.refused_admin_log = RateLimitedLog("refused admin method", interval_s=10.0)
        self._shed_log = RateLimitedLog("IPC queues over their total", interval_s=10.0)
        self.connections_total = 0
        self.slots = SlotCounts()
        self.budget = QueueBudget(self.limits.queue_total_bytes)
        self._on_suppressed = on_suppressed
        self.strikes = StrikeBudget(self.limits.strike_rate, self.limits.strike_burst, clock)
        self.refusals = RefusalBudget(
            self.limits.refused_audit_rate, self.limits.refused_audit_burst, clock
        )
        self._summaries: dict[int, asyncio.TimerHandle] = {}
        self._audit_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, *, file_mode: int = 0o600, group: int | None = None) -> None:
        sock = bind_unix_socket(self.path, file_mode=file_mode, group=group)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        loop = asyncio.get_running_loop()
        # asyncio calls listen() again with this backlog (its default is 100).
        self._server = await loop.create_unix_server(
            lambda: Connection(self), sock=sock, backlog=socket.SOMAXCONN
        )

    async def stop(self) -> None:
        """Stop listening, close every connection and remove the socket file (only if it is
        still the one this server bound)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for timer in self._summaries.values():
            timer.cancel()
        self._summaries.clear()
        for conn in list(self.connections):
            conn.close()
        if self._inode is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(self.path)
            self._inode = None
        deadline = time.monotonic() + CLOSE_GRACE_S
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()

    # -- fan-out ---------------------------------------------------------------------------
    def publish(self, topic: str, lines: Sequence[bytes]) -> None:
        """Offer notification lines to every subscriber of `topic` (encoded once, shared)."""
        for conn in tuple(self.subscribers.get(topic, ())):
            conn.offer(topic, lines)
        if self.budget.exceeded:
            self.shed()

    def shed(self) -> None:
        """Over the total: drop the largest queues to a resync until the total fits again."""
        queued = sorted(
            (conn for conn in self.connections if conn.outbox_bytes),
            key=lambda conn: conn.outbox_bytes,
            reverse=True,
        )
        shed = 0
        for conn in queued:
            if not self.budget.exceeded:
                break
            conn.drop_notifications()
            shed += 1
        self._shed_log.log(
            f"notifications waiting for clients passed {self.limits.queue_total_bytes} bytes "
            f"(daemon.clients_queue_total): dropped the {shed} largest queues to a resync"
        )

    def has_subscribers(self, topic: str) -> bool:
        return bool(self.subscribers.get(topic))

    # -- used by connections ---------------------------------------------------------------
    def admit(self, conn: Connection) -> bool:
        why = refusal(
            self.limits.slots,
            total=len(self.connections),
            of_uid=self.slots.by_uid[conn.peer.uid],
            admin=conn.role == ROLE_ADMIN,
            uid=conn.peer.uid,
        )
        if why is not None:
            self._refused.log(f"refused {conn.peer}: {why}")
            conn.refuse(ErrorCode.TOO_MANY_CONNECTIONS, why)
            return False
        self.connections.add(conn)
        self.slots.add(conn.peer.uid)
        self.connections_total += 1
        return True

    def role_for(self, peer: Peer) -> str:
        return role_of(peer, daemon_uid=self._daemon_uid, admin_gid=self._admin_gid())

    def forget(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
            self.slots.remove(conn.peer.uid)
        for subscribers in self.subscribers.values():
            subscribers.discard(conn)

    def recover_lines(self, topic: str, conn: Connection) -> Sequence[bytes]:
        recover = self._recover.get(topic)
        return recover(conn) if recover is not None else ()

    async def audit_refused(self, call: Call, outcome: str) -> None:
        """A refused admin call: audited while the peer's uid is within its rate; past it only
        counted, and one summary entry per window says how many were left out."""
        uid = call.peer.uid
        if self.refusals.allow(uid):
            await self.audit_admin(call, outcome)
            return
        if uid not in self._summaries:
            log.warning(
                "%s calls admin methods faster than %g per second: auditing one summary per "
                "%g s instead of each call",
                call.peer,
                self.limits.refused_audit_rate,
                self.limits.refused_audit_window_s,
            )
            self._summaries[uid] = asyncio.get_running_loop().call_later(
                self.limits.refused_audit_window_s, self._summarize, call.peer
            )

    def _summarize(self, peer: Peer) -> None:
        self._summaries.pop(peer.uid, None)
        count = self.refusals.take_suppressed(peer.uid)
        if not count or self._on_suppressed is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._audit_suppressed(peer, count, self.limits.refused_audit_window_s)
        )
        self._audit_tasks.add(task)
        task.add_done_callback(self._audit_tasks.discard)

    async def _audit_suppressed(self, peer: Peer, count: int, window_s: float) -> None:
        assert self._on_suppressed is not None
        try:
            await self._on_suppressed(peer, count, window_s)
        except DaemonEyeError as exc:
            log.error("could not audit %d suppressed refusals of %s: %s", count, peer, exc)

    async def audit_admin(self, call: Call, outcome: str) -> None:
        if self._on_admin is None:
            return
        try:
            await self._on_admin(call, outcome)
        except DaemonEyeError as exc:
            log.error("could not audit admin request %s from %s: %s", call.method, call.peer, exc)
