"""The Linux process connector's socket: subscribe, size the buffer, wait for the kernel's
acknowledgement, receive. The messages themselves are parsed by `collector.proc_events`."""

from __future__ import annotations

import errno
import logging
import math
import os
import random
import select
import socket
import time
from types import TracebackType

from daemoneye.collector.proc_events import (
    CN_IDX_PROC,
    NETLINK_CONNECTOR,
    PROC_CN_MCAST_IGNORE,
    PROC_CN_MCAST_LISTEN,
    AckEvent,
    listen_request,
    parse_messages,
)
from daemoneye.errors import CollectorError

log = logging.getLogger(__name__)

_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # absent from typeshed


class EventsUnavailable(CollectorError):
    """The process connector cannot be used here; `reason` is a sentence for the operator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectorOverrun(Exception):
    """recv() reported ENOBUFS: the kernel dropped events because our buffer was full."""


_UNPERMITTED = (errno.EPERM, errno.EACCES)
_UNSUPPORTED = (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.ENOENT)


def _reason(step: str, error: OSError) -> str:
    if error.errno in _UNPERMITTED:
        return f"not root / no CAP_NET_ADMIN ({step}: {error.strerror})"
    if error.errno in _UNSUPPORTED:
        return f"kernel has no process connector ({step}: {error.strerror})"
    return f"process connector unusable ({step}: {error.strerror or error})"


class ProcConnector:
    """One non-blocking NETLINK_CONNECTOR socket subscribed to process events.

    `open()` binds, sizes the receive buffer and waits for the kernel's acknowledgement, so a
    kernel that ignores us (no CONFIG_PROC_EVENTS, a non-initial user or PID namespace) fails
    there with EventsUnavailable instead of staying silent forever.
    """

    def __init__(
        self,
        *,
        rcvbuf_bytes: int = 4 << 20,
        rcvbuf_max_bytes: int = 64 << 20,
        recv_size: int = 64 << 10,
    ) -> None:
        self._sock: socket.socket | None = None
        self._rcvbuf_bytes = rcvbuf_bytes
        self._rcvbuf_max_bytes = max(rcvbuf_bytes, rcvbuf_max_bytes)
        self._buffer = bytearray(recv_size)
        self._view = memoryview(self._buffer)
        self._pending: list[bytes] = []
        self.overruns = 0

    @property
    def rcvbuf_bytes(self) -> int:
        """The receive buffer the kernel granted (it reports twice the usable size, and caps
        requests at net.core.rmem_max without CAP_NET_ADMIN); the request while closed."""
        sock = self._sock  # the reader thread may close it while stats are taken
        try:
            if sock is not None:
                return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        except OSError:
            pass  # closed meanwhile: report the request, as when closed
        return self._rcvbuf_bytes

    def open(self, *, ack_timeout: float = 1.0) -> None:
        """Subscribe; raise EventsUnavailable with a human reason when that is impossible."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError as error:
            raise EventsUnavailable(_reason("socket", error)) from error
        self._sock = sock
        try:
            sock.bind((0, CN_IDX_PROC))
            self._apply_rcvbuf()
            cookie = random.randrange(1, 1 << 31)
            sock.send(listen_request(PROC_CN_MCAST_LISTEN, cookie))
            self._await_ack(cookie, ack_timeout)
        except OSError as error:
            self.close()
            raise EventsUnavailable(_reason("subscribe", error)) from error
        except EventsUnavailable:
            self.close()
            raise
        sock.setblocking(False)

    def _await_ack(self, cookie: int, timeout: float) -> None:
        """Read until our ack; keep whatever else arrives first for recv()."""
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        # poll, not select: select() refuses descriptors above 1023, and a busy daemon holds
        # thousands (a stat file per process).
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        while (remaining := deadline - time.monotonic()) > 0:
            if not poller.poll(max(1, math.ceil(remaining * 1000))):
                break
            try:
                data = self._sock.recv(len(self._buffer))
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1  # events before our ack were lost; the caller reconciles
                continue
            for event in parse_messages(data):
                if isinstance(event, AckEvent) and event.cookie == cookie + 1:
                    if event.err:
                        raise EventsUnavailable(
                            f"process connector refused to listen: {os.strerror(event.err)}"
                        )
                    return
            self._pending.append(data)
        raise EventsUnavailable(
            "no acknowledgement from the process connector (kernel without "
            "CONFIG_PROC_EVENTS, or not in the initial user/PID namespace)"
        )

    def _apply_rcvbuf(self) -> None:
        assert self._sock is not None
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, self._rcvbuf_bytes)
        except PermissionError:  # no CAP_NET_ADMIN: the kernel caps us at net.core.rmem_max
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf_bytes)

    def grow_rcvbuf(self) -> int:
        """Double the receive buffer up to the cap; return the new requested size."""
        if self._sock is not None and self._rcvbuf_bytes < self._rcvbuf_max_bytes:
            self._rcvbuf_bytes = min(self._rcvbuf_bytes * 2, self._rcvbuf_max_bytes)
            self._apply_rcvbuf()
            log.info("process connector overrun: receive buffer now %d bytes", self._rcvbuf_bytes)
        return self._rcvbuf_bytes

    def fileno(self) -> int:
        if self._sock is None:
            raise ValueError("connector is closed")
        return self._sock.fileno()

    def recv(self) -> memoryview:
        """One datagram without blocking; empty when none is queued. The view is only valid
        until the next call. Raises ConnectorOverrun (after growing the buffer) on ENOBUFS."""
        if self._pending:
            return memoryview(self._pending.pop(0))
        if self._sock is None:
            raise ValueError("connector is closed")
        try:
            size = self._sock.recv_into(self._buffer)
        except BlockingIOError:
            return self._view[:0]
        except OSError as error:
            if error.errno != errno.ENOBUFS:
                raise
            self.overruns += 1
            self.grow_rcvbuf()
            raise ConnectorOverrun from error
        return self._view[:size]

    def close(self) -> None:
        """Unsubscribe (best effort) and close; safe to call twice."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.send(listen_request(PROC_CN_MCAST_IGNORE, 0))
        except OSError as error:  # the kernel forgets the listener on close anyway
            log.debug("process connector: unsubscribe failed: %s", error)
        sock.close()

    def __enter__(self) -> ProcConnector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def probe(ack_timeout: float = 1.0) -> str | None:
    """None when process events can be received here, else why not, for one log line."""
    connector = ProcConnector(rcvbuf_bytes=1 << 16)
    try:
        connector.open(ack_timeout=ack_timeout)
    except EventsUnavailable as unavailable:
        return unavailable.reason
    connector.close()
    return None
