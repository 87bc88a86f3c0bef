"""The daemon's side of the IPC socket: connections, framing, authorization, dispatch and the
fan-out of subscriptions (ARCHITECTURE.md §5, docs/protocol.md).

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
import difflib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemoneye.errors import DaemonEyeError
from daemoneye.ipc import protocol
from daemoneye.ipc.admission import SlotCounts, SlotLimits, refusal
from daemoneye.ipc.auth import ROLE_ADMIN, Peer, peer_of, role_of
from daemoneye.ipc.budget import QueueBudget
from daemoneye.ipc.codec import CodecError, from_wire, to_wire
from daemoneye.ipc.penalty import StrikeBudget
from daemoneye.ipc.protocol import (
    MAX_MESSAGE_BYTES,
    ErrorCode,
    FrameTooLarge,
    LineSplitter,
)
from daemoneye.ipc.refusals import RefusalBudget
from daemoneye.ipc.socket_file import bind_unix_socket

log = logging.getLogger(__name__)

# Pause reading a client's requests while more than this waits to be written to it.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
# How many bad messages of one connection are logged one by one before only counting them.
_LOGGED_BAD_INPUTS = 3
_CLOSE_GRACE_S = 2.0


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


class MethodError(DaemonEyeError):
    """Raised by a method implementation: becomes a JSON-RPC error response."""

    def __init__(self, code: ErrorCode, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class Raw:
    """A result that is already encoded JSON (e.g. assembled from cached record encodings)."""

    json: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """A result plus notification lines to send right after it, with nothing in between
    (subscriptions: the answer, then the snapshot, then the first delta)."""

    result: Any
    then: Sequence[bytes] = ()
    then_topic: str | None = None  # the lines belong to this topic's bounded queue


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a method implementation sees it."""

    conn: Connection
    method: str
    raw_params: Mapping[str, Any]

    @property
    def peer(self) -> Peer:
        return self.conn.peer


MethodImpl = Callable[[Call, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    impl: MethodImpl
    params: type
    admin: bool = False


AdminHook = Callable[[Call, str], Awaitable[None]]  # (call, outcome) for every admin request
# (peer, calls not audited, window in seconds): one summary per window for a flooding uid
SuppressedHook = Callable[[Peer, int, float], Awaitable[None]]
Recover = Callable[["Connection"], Sequence[bytes]]  # a topic's fresh state after a resync


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
        self._refused = _RateLimitedLog("refused connection", interval_s=10.0)
        self.refused_admin_log = _RateLimitedLog("refused admin method", interval_s=10.0)
        self._shed_log = _RateLimitedLog("IPC queues over their total", interval_s=10.0)
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
        deadline = time.monotonic() + _CLOSE_GRACE_S
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


class Connection(asyncio.Protocol):
    """One client. All state lives on the event loop; nothing here blocks."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peer = Peer(pid=0, uid=-1, gid=-1, groups=())
        self.role = "reader"
        self.client_name = ""
        self.greeted = False
        self.topics: set[str] = set()
        self.transport: asyncio.Transport | None = None
        self._splitter = LineSplitter(MAX_MESSAGE_BYTES)
        self._backlog: deque[bytes] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._line_timer: asyncio.TimerHandle | None = None
        self._hello_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._write_paused = False
        self._closing = False
        self._eof = False
        self._resync_pending: dict[str, int] = {}  # topic -> notifications dropped
        self._bad_inputs = 0
        self._flood_logged = False
        # What waits behind the socket's write buffer: (topic or None for answers, line). The
        # lines are shared with the other subscribers; budget.py counts them in total.
        self._outbox: deque[tuple[str | None, bytes]] = deque()
        self.outbox_bytes = 0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_active = 0.0
        self._penalty_timer: asyncio.TimerHandle | None = None  # not reading until it fires

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        high = min(WRITE_HIGH_WATER, self.server.limits.queue_bytes)
        transport.set_write_buffer_limits(high=high, low=min(WRITE_LOW_WATER, high // 2))
        sock = transport.get_extra_info("socket")
        try:
            self.peer = peer_of(sock)
        except OSError as exc:
            log.warning("closing a connection whose peer is unknown: %s", exc)
            transport.abort()
            return
        self.role = self.server.role_for(self.peer)
        if not self.server.admit(self):
            return
        log.debug("connection from %s (%s)", self.peer, self.role)
        loop = asyncio.get_running_loop()
        self._hello_timer = loop.call_later(self.server.limits.hello_timeout_s, self._no_hello)
        self._last_active = loop.time()
        self._idle_timer = loop.call_later(self.server.limits.idle_timeout_s, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        for timer in (self._line_timer, self._hello_timer, self._idle_timer, self._penalty_timer):
            if timer is not None:
                timer.cancel()
        for task in self._tasks:
            task.cancel()
        self.server.forget(self)
        # Let go of what was queued for this client at once (the lines may be shared, but
        # nothing else keeps the old ones), and hand freed heap back to the system.
        self._outbox.clear()
        self.server.budget.release(self.outbox_bytes, freed=True)
        self.outbox_bytes = 0
        if self._write_paused:
            self.server.budget.freed(WRITE_HIGH_WATER)
        if self._bad_inputs > _LOGGED_BAD_INPUTS:
            log.warning(
                "%s sent %d bad messages in all (the first %d were logged)",
                self.peer,
                self._bad_inputs,
                _LOGGED_BAD_INPUTS,
            )
        log.debug("connection from %s closed", self.peer)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            lines = self._splitter.feed(data)
        except FrameTooLarge:
            self._bad_input("a message longer than the limit")
            self.refuse(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"message too large: at most {MAX_MESSAGE_BYTES} bytes per line; "
                "closing the connection",
            )
            return
        self._backlog.extend(lines)
        self._arm_line_timer()
        self._pump()

    def eof_received(self) -> bool:
        # A client may send its requests and shut down its side; answer them, then close.
        self._eof = True
        self._splitter.clear()
        self._arm_line_timer()
        self._maybe_finish()
        return True

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._flush()
        if self._write_paused:  # the socket filled up again with what was queued
            return
        if self._resync_pending and not self._closing:
            pending, self._resync_pending = self._resync_pending, {}
            for topic, dropped in pending.items():
                if topic not in self.topics:
                    continue
                log.info(
                    "%s: sending resync for %s after dropping %d notifications it did not read",
                    self.peer,
                    topic,
                    dropped,
                )
                reason = "notifications were dropped because the client did not read them"
                self._write(
                    protocol.notification(
                        protocol.NOTIFY_RESYNC,
                        to_wire(protocol.ResyncParams(topic=topic, dropped=dropped, reason=reason)),
                    )
                )
                for line in self.server.recover_lines(topic, self):
                    self._write(line)
        self._pump()

    # -- subscriptions (used by method implementations) -----------------------------------
    def subscribe(self, topic: str) -> None:
        self.topics.add(topic)
        self.server.subscribers.setdefault(topic, set()).add(self)

    def unsubscribe(self, topic: str) -> bool:
        was = topic in self.topics
        self.topics.discard(topic)
        self.server.subscribers.get(topic, set()).discard(self)
        self._resync_pending.pop(topic, None)
        return was

    def offer(self, topic: str, lines: Sequence[bytes]) -> None:
        """Queue notification lines of a subscribed topic, or drop them when this client is
        too far behind (it gets a resync once it has caught up)."""
        if self._closing or topic not in self.topics or not lines:
            return
        if topic in self._resync_pending:
            self._resync_pending[topic] += len(lines)
            return
        assert self.transport is not None
        if self.queued_bytes > self.server.limits.queue_bytes:
            log.warning(
                "%s is not reading its %s notifications: dropping them until it "
                "catches up (more than %d bytes are waiting)",
                self.peer,
                topic,
                self.server.limits.queue_bytes,
            )
            self._resync_pending[topic] = len(lines)
            return
        for line in lines:
            self._write(line, topic)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for this client: the socket's write buffer and the queue behind it."""
        buffered = self.transport.get_write_buffer_size() if self.transport is not None else 0
        return buffered + self.outbox_bytes

    def drop_notifications(self) -> None:
        """Drop every queued notification (answers stay); each topic gets a resync once the
        client has caught up."""
        kept: deque[tuple[str | None, bytes]] = deque()
        dropped_bytes = 0
        for topic, line in self._outbox:
            if topic is None:
                kept.append((topic, line))
                continue
            dropped_bytes += len(line)
            self._resync_pending[topic] = self._resync_pending.get(topic, 0) + 1
        self._outbox = kept
        self.outbox_bytes -= dropped_bytes
        self.server.budget.release(dropped_bytes, freed=True)
        log.debug(  # the server logs one rate-limited line for all clients shed at once
            "%s: dropped %d bytes of notifications it did not read (the clients' total is "
            "over daemon.clients_queue_total)",
            self.peer,
            dropped_bytes,
        )

    def send(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self._write(line)

    # -- closing ---------------------------------------------------------------------------
    def refuse(self, code: ErrorCode, message: str) -> None:
        """Send one error (id null) and close the connection. The error goes ahead of whatever
        was still queued for the client: that is dropped, the reason is not."""
        self._outbox.clear()
        self.server.budget.release(self.outbox_bytes, freed=True)
        self.outbox_bytes = 0
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(protocol.error_response(None, code, message))
        self.close()

    def close(self) -> None:
        if self.transport is None or self._closing:
            return
        self._closing = True
        self._backlog.clear()
        for task in self._tasks:
            task.cancel()
        self.transport.close()  # flushes what is buffered first
        transport = self.transport
        asyncio.get_running_loop().call_later(_CLOSE_GRACE_S, transport.abort)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- internals -------------------------------------------------------------------------
    def _write(self, data: bytes, topic: str | None = None) -> None:
        """Write now, or queue behind what waits already (so the order is kept) while the
        socket's buffer is over its high-water mark."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._write_paused or self._outbox:
            self._outbox.append((topic, data))
            self.outbox_bytes += len(data)
            self.server.budget.add(len(data))
            return
        self.transport.write(data)

    def _flush(self) -> None:
        """Hand queued lines to the socket until its buffer is over the high-water mark."""
        transport = self.transport
        while self._outbox and not self._write_paused:
            if transport is None or transport.is_closing():
                return
            _, line = self._outbox.popleft()
            self.outbox_bytes -= len(line)
            self.server.budget.release(len(line))
            transport.write(line)  # may call pause_writing()

    def _check_idle(self) -> None:
        """Close a connection that neither asked anything nor read a live subscription for
        `idle_timeout_s` (a subscriber that keeps up with its notifications is not idle)."""
        self._idle_timer = None
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout = self.server.limits.idle_timeout_s
        live = bool(self.topics) and not self._write_paused and not self._resync_pending
        if live or self._tasks:
            self._last_active = now
        remaining = self._last_active + timeout - now
        if remaining > 0:
            self._idle_timer = loop.call_later(remaining, self._check_idle)
            return
        log.info("closing the connection of %s: idle for %g s", self.peer, timeout)
        self.refuse(
            ErrorCode.IDLE_TIMEOUT,
            f"idle timeout: no request and no notification read for {timeout:g} s "
            "(daemon.idle_timeout); closing the connection",
        )

    def _no_hello(self) -> None:
        if not self.greeted and not self._closing:
            self._bad_input("no hello")
            self.refuse(
                ErrorCode.READ_TIMEOUT,
                f"no hello within {self.server.limits.hello_timeout_s:g} s; closing",
            )

    def _arm_line_timer(self) -> None:
        stalled = self._splitter.pending > 0 and not self._reading_paused
        if stalled and self._line_timer is None:
            self._line_timer = asyncio.get_running_loop().call_later(
                self.server.limits.line_timeout_s, self._line_stalled
            )
        elif not stalled and self._line_timer is not None:
            self._line_timer.cancel()
            self._line_timer = None

    def _line_stalled(self) -> None:
        self._line_timer = None
        if self._closing:
            return
        self._bad_input(f"half a message ({self._splitter.pending} bytes), then nothing")
        self.refuse(
            ErrorCode.READ_TIMEOUT,
            f"read timeout: a message was not finished within "
            f"{self.server.limits.line_timeout_s:g} s (a newline ends each message); "
            "closing the connection",
        )

    def _bad_input(self, what: str) -> None:
        self._bad_inputs += 1
        if self._bad_inputs <= _LOGGED_BAD_INPUTS:
            log.warning("bad input from %s: %s", self.peer, what)
        self._strike()

    def _strike(self) -> None:
        """Something of this reader's was refused: past its uid's budget, stop reading from
        this connection for a while (penalty.py). Admins are never slowed."""
        if self.role == ROLE_ADMIN or self._closing:
            return
        delay = self.server.strikes.strike(self.peer.uid)
        if delay <= 0 or self._penalty_timer is not None:
            return
        self._penalty_timer = asyncio.get_running_loop().call_later(delay, self._penalty_over)
        self._update_reading()

    def _penalty_over(self) -> None:
        self._penalty_timer = None
        if not self._closing:
            self._pump()

    def _update_reading(self) -> None:
        if self.transport is None or self._closing:
            return
        should_pause = (
            self._write_paused or bool(self._backlog) or self._penalty_timer is not None
        )
        if should_pause and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        elif not should_pause and self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        self._arm_line_timer()

    def _pump(self) -> None:
        limit = self.server.limits.max_inflight
        while (
            self._backlog
            and len(self._tasks) < limit
            and not self._write_paused
            and not self._closing
            and self._penalty_timer is None
        ):
            self._start(self._backlog.popleft())
        if self._backlog and not self._flood_logged and not self._closing:
            self._flood_logged = True
            log.info(
                "%s sends requests faster than they are answered: working on %d at a "
                "time, reading the rest as those finish",
                self.peer,
                limit,
            )
        self._update_reading()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if (
            self._eof
            and not self._backlog
            and not self._tasks
            and not self._outbox
            and not self._closing
        ):
            self.close()

    def _start(self, line: bytes) -> None:
        self._last_active = asyncio.get_running_loop().time()
        if not line.strip():
            return
        try:
            message = protocol.loads(line)
        except ValueError as exc:
            self._bad_input(f"not JSON ({exc})")
            self._write(
                protocol.error_response(None, ErrorCode.PARSE_ERROR, f"parse error: {_short(exc)}")
            )
            return
        checked = self._check_request(message)
        if checked is None:
            return
        request_id, has_id, method_name, params = checked
        task = asyncio.get_running_loop().create_task(
            self._run(request_id, has_id, method_name, params)
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("IPC request task failed", exc_info=task.exception())
        if not self._closing:
            self._pump()

    def _check_request(self, message: Any) -> tuple[Any, bool, str, dict[str, Any]] | None:
        """(id, has id, method, params) of a well-formed request; else answer and None."""
        if isinstance(message, list):
            self._invalid(
                None, "batch requests are not supported: send one request object per line"
            )
            return None
        if not isinstance(message, dict):
            self._invalid(None, "expected a JSON-RPC request object")
            return None
        request_id = message.get("id")
        if request_id is not None and (
            isinstance(request_id, bool) or not isinstance(request_id, int | str)
        ):
            self._invalid(None, "id must be a string, an integer or null")
            return None
        if message.get("jsonrpc") != "2.0":
            self._invalid(request_id, 'expected "jsonrpc": "2.0"')
            return None
        method = message.get("method")
        if not isinstance(method, str):
            self._invalid(request_id, "method must be a string")
            return None
        params: Any = message.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            self._bad_input(f"{method}: params not an object")
            self._write(
                protocol.error_response(
                    request_id,
                    ErrorCode.INVALID_PARAMS,
                    "invalid params: params must be an object of named parameters",
                )
            )
            return None
        return request_id, "id" in message, method, params

    def _invalid(self, request_id: Any, why: str) -> None:
        self._bad_input(f"invalid request: {why}")
        self._write(
            protocol.error_response(
                request_id, ErrorCode.INVALID_REQUEST, f"invalid request: {why}"
            )
        )

    async def _run(
        self, request_id: Any, has_id: bool, name: str, raw_params: dict[str, Any]
    ) -> None:
        try:
            reply = await self._dispatch(name, raw_params)
        except MethodError as exc:
            if has_id:
                self._write(protocol.error_response(request_id, exc.code, exc.message, exc.data))
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # the boundary: one bad request must not take the daemon down
            log.exception("IPC method %s failed for %s", name, self.peer)
            if has_id:
                self._write(
                    protocol.error_response(
                        request_id,
                        ErrorCode.INTERNAL_ERROR,
                        f"internal error in {name}; see the daemon's log",
                    )
                )
            return
        if not has_id:
            return
        result = reply.result if isinstance(reply, Reply) else reply
        if isinstance(result, Raw):
            line = protocol.raw_response(request_id, result.json)
        else:
            line = protocol.response(request_id, to_wire(result))
        if len(line) > MAX_MESSAGE_BYTES:  # methods split what can be large; this is a bug
            log.error(
                "the answer to %s for %s is %d bytes, over the message limit",
                name,
                self.peer,
                len(line),
            )
            line = protocol.error_response(
                request_id,
                ErrorCode.INTERNAL_ERROR,
                f"the answer to {name} is larger than the {MAX_MESSAGE_BYTES} bytes a message "
                "may hold; narrow the request",
            )
        self._write(line)
        if isinstance(reply, Reply) and reply.then:
            if reply.then_topic is None:
                self.send(reply.then)
            else:
                self.offer(reply.then_topic, reply.then)

    async def _dispatch(self, name: str, raw_params: dict[str, Any]) -> Any:
        method = self.server.methods.get(name)
        if method is None:
            self._bad_input(f"unknown method {name!r}")
            match = difflib.get_close_matches(name, list(self.server.methods), n=1, cutoff=0.6)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise MethodError(
                ErrorCode.METHOD_NOT_FOUND,
                f"unknown method {name!r}{hint}",
                {"methods": sorted(self.server.methods)},
            )
        if not self.greeted and name != "hello":
            raise MethodError(
                ErrorCode.HELLO_REQUIRED,
                "call hello first: it must be the first call on a connection",
            )
        call = Call(conn=self, method=name, raw_params=raw_params)
        if method.admin and self.role != ROLE_ADMIN:
            self.server.refused_admin_log.log(f"{name} for {self.peer} (not an admin)")
            self._strike()
            await self.server.audit_refused(call, "refused: not an admin")
            raise MethodError(
                ErrorCode.FORBIDDEN,
                f"permission denied: {name} is an admin method; uid "
                f"{self.peer.uid} is not root, not the daemon's user and not in "
                "the admin group (daemon.admin_group)",
            )
        try:
            params: Any = from_wire(method.params, raw_params, strict=True)
        except CodecError as exc:
            self._bad_input(f"{name}: {exc}")
            raise MethodError(
                ErrorCode.INVALID_PARAMS, f"invalid params for {name}: {exc}", {"field": exc.path}
            ) from None
        if not method.admin:
            result = await method.impl(call, params)
        else:
            try:
                result = await method.impl(call, params)
            except MethodError as exc:
                await self.server.audit_admin(call, f"failed: {exc.message}")
                raise
            await self.server.audit_admin(call, "done")
        if name == "hello":
            self.greeted = True
            if self._hello_timer is not None:
                self._hello_timer.cancel()
                self._hello_timer = None
        return result


def _short(exc: Exception, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _RateLimitedLog:
    """A warning logged at most once per interval, with the count of what was not logged."""

    what: str
    interval_s: float
    _last: float = 0.0
    _suppressed: int = field(default=0)

    def log(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        log.warning("%s: %s%s", self.what, message, extra)
        self._last = now
        self._suppressed = 0
