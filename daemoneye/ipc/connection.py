"""One client connection: the transport side — peer credentials, framing, flow control in
both directions, the bounded queue of notifications, timers for hello, stalled lines and idle
clients, and closing. What it does with a request is requests.py."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from daemoneye.ipc import protocol
from daemoneye.ipc.auth import ROLE_ADMIN, Peer, peer_of
from daemoneye.ipc.codec import to_wire
from daemoneye.ipc.protocol import (
    MAX_MESSAGE_BYTES,
    ErrorCode,
    FrameTooLarge,
    LineSplitter,
)
from daemoneye.ipc.requests import RequestHandling

if TYPE_CHECKING:
    from daemoneye.ipc.server import Server

log = logging.getLogger(__name__)

# Pause reading a client's requests while more than this waits to be written to it.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
# Lines a client may send ahead of their answers (the CLI and the dashboard send a few).
MAX_BACKLOG_LINES = 1024
# How many bad messages of one connection are logged one by one before only counting them.
_LOGGED_BAD_INPUTS = 3
CLOSE_GRACE_S = 2.0


class Connection(RequestHandling, asyncio.Protocol):
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
        if len(self._backlog) + len(lines) > MAX_BACKLOG_LINES:
            # Each waiting line is an object of its own: 256 KiB of `{}` lines is 87,000 of
            # them. No client needs to send this many requests ahead of their answers.
            self._bad_input(f"{len(self._backlog) + len(lines)} lines ahead of their answers")
            self.refuse(
                ErrorCode.TOO_MANY_REQUESTS,
                f"too many requests at once: at most {MAX_BACKLOG_LINES} may wait for their "
                "answers; closing the connection",
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
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, transport.abort)

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
        should_pause = self._write_paused or bool(self._backlog) or self._penalty_timer is not None
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
