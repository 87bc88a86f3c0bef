"""The Linux process connector's socket: filter, subscribe, size the buffer, wait for the
kernel's acknowledgement, receive. The messages themselves are parsed by
`collector.proc_events`; the socket filter's program is `collector.connector_filter`."""

from __future__ import annotations

import ctypes
import errno
import logging
import math
import os
import random
import re
import select
import socket
import struct
import time
from types import TracebackType

from daemoneye.collector.connector_filter import pack_program, process_events_filter
from daemoneye.collector.proc_events import (
    CN_IDX_PROC,
    NETLINK_CONNECTOR,
    PROC_CN_MCAST_IGNORE,
    PROC_CN_MCAST_LISTEN,
    PROC_EVENT_ALL,
    PROC_EVENT_COMM,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_GID,
    PROC_EVENT_PTRACE,
    PROC_EVENT_UID,
    AckEvent,
    listen_request,
    parse_messages,
)
from daemoneye.errors import CollectorError

log = logging.getLogger(__name__)

_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # absent from typeshed
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_SOCK_FPROG = struct.Struct("@HP")  # struct sock_fprog {unsigned short len; sock_filter *filter}

# The event types the event source uses; forks teach it the start time of children that exit
# without exec'ing; uid, gid, comm and ptrace are changes after start. The same types about
# threads (thread forks, exits, renames, per-thread id changes) and ptrace detaches also match
# the mask: the socket filter drops them.
EVENT_MASK = (
    PROC_EVENT_FORK
    | PROC_EVENT_EXEC
    | PROC_EVENT_EXIT
    | PROC_EVENT_UID
    | PROC_EVENT_GID
    | PROC_EVENT_PTRACE
    | PROC_EVENT_COMM
)
_MASK_NAMES = (
    (PROC_EVENT_FORK, "fork"),
    (PROC_EVENT_EXEC, "exec"),
    (PROC_EVENT_EXIT, "exit"),
    (PROC_EVENT_UID, "uid"),
    (PROC_EVENT_GID, "gid"),
    (PROC_EVENT_PTRACE, "ptrace"),
    (PROC_EVENT_COMM, "comm"),
)


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


def takes_event_mask(release: str) -> bool:
    """True for a kernel release (`uname -r`) of Linux 6.6 or later, whose process connector
    reads an event mask in the listen request."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return match is not None and (int(match[1]), int(match[2])) >= (6, 6)


def attach_socket_filter(sock: socket.socket) -> None:
    """Attach `process_events_filter()` with SO_ATTACH_FILTER; raises OSError when refused."""
    program = process_events_filter()
    code = ctypes.create_string_buffer(pack_program(program))  # alive until the kernel copied it
    sock.setsockopt(
        socket.SOL_SOCKET,
        _SO_ATTACH_FILTER,
        _SOCK_FPROG.pack(len(program), ctypes.addressof(code)),
    )


class ProcConnector:
    """One non-blocking NETLINK_CONNECTOR socket subscribed to process events.

    `open()` binds, sizes the receive buffer and waits for the kernel's acknowledgement, so a
    kernel that ignores us (no CONFIG_PROC_EVENTS, a non-initial user or PID namespace) fails
    there with EventsUnavailable instead of staying silent forever.

    Fewer wake-ups: before binding, a classic BPF socket filter (`collector.connector_filter`)
    is attached so thread forks, thread exits and unused event types never reach the reader, on
    any kernel. On Linux >= 6.6 the subscription is then narrowed to `event_mask` in the kernel
    as well. A masked listen request is not acknowledged (the ack is an event the mask filters),
    so the handshake is: the legacy request and its ack (every kernel; proves we are heard),
    then a request with the mask PROC_EVENT_ALL, whose ack proves the kernel reads masks, then
    the real mask. Without that second ack the subscription stays "all events".
    With either filter, the kernel's per-CPU sequence numbers skip the events we are not sent,
    so `delivers_every_event` is False and a gap is no longer evidence of a loss; ENOBUFS is.
    """

    def __init__(
        self,
        *,
        rcvbuf_bytes: int = 4 << 20,
        rcvbuf_max_bytes: int = 64 << 20,
        recv_size: int = 64 << 10,
        event_mask: int | None = EVENT_MASK,
        socket_filter: bool = True,
        kernel_release: str | None = None,
    ) -> None:
        self._sock: socket.socket | None = None
        self._rcvbuf_bytes = rcvbuf_bytes
        self._rcvbuf_max_bytes = max(rcvbuf_bytes, rcvbuf_max_bytes)
        self._buffer = bytearray(recv_size)
        self._view = memoryview(self._buffer)
        self._pending: list[bytes] = []
        self._wanted_mask = event_mask
        self._wants_filter = socket_filter
        self._kernel_release = kernel_release if kernel_release is not None else os.uname().release
        self.overruns = 0
        self.datagrams_total = 0  # datagrams that reached this process (the reader's wake-ups)
        self.event_mask: int | None = None  # the kernel-side mask in force; None: all events
        self.socket_filter = False  # True while the BPF filter is attached

    @property
    def delivers_every_event(self) -> bool:
        """True when neither the kernel's mask nor the socket filter holds events back, so a gap
        in a CPU's sequence numbers means the kernel lost events."""
        return self.event_mask is None and not self.socket_filter

    @property
    def filtering(self) -> str:
        """What is filtered before the reader wakes, for `health`."""
        if self.event_mask is None:
            kernel = "kernel sends all events"
        else:
            names = [name for bit, name in _MASK_NAMES if self.event_mask & bit]
            kernel = "kernel mask " + "|".join(names)
        socket_part = "socket filter drops threads" if self.socket_filter else "no socket filter"
        return f"{kernel}; {socket_part}"

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
        self.event_mask = None
        self.socket_filter = False
        if self._wants_filter:
            self._attach_filter()
        try:
            sock.bind((0, CN_IDX_PROC))
            self._apply_rcvbuf()
            cookie = random.randrange(1, 1 << 31)
            sock.send(listen_request(PROC_CN_MCAST_LISTEN, cookie))
            err = self._await_ack(cookie, ack_timeout)
            if err is None:
                raise EventsUnavailable(
                    "no acknowledgement from the process connector (kernel without "
                    "CONFIG_PROC_EVENTS, or not in the initial user/PID namespace)"
                )
            if err:
                raise EventsUnavailable(f"process connector refused to listen: {os.strerror(err)}")
            if self._wanted_mask is not None and takes_event_mask(self._kernel_release):
                self._narrow_to_mask(self._wanted_mask, ack_timeout)
        except OSError as error:
            self.close()
            raise EventsUnavailable(_reason("subscribe", error)) from error
        except EventsUnavailable:
            self.close()
            raise
        sock.setblocking(False)

    def _attach_filter(self) -> None:
        assert self._sock is not None
        try:
            attach_socket_filter(self._sock)
        except OSError as error:  # a seccomp policy, a kernel without socket filters
            log.warning(
                "process connector: no socket filter (%s); thread events will wake the reader",
                error.strerror or error,
            )
            return
        self.socket_filter = True

    def _narrow_to_mask(self, mask: int, ack_timeout: float) -> None:
        """Ask for `mask` only, once the kernel proved that it reads masks (see the class)."""
        assert self._sock is not None
        cookie = random.randrange(1, 1 << 31)
        try:
            self._sock.send(listen_request(PROC_CN_MCAST_LISTEN, cookie, event_mask=PROC_EVENT_ALL))
            err = self._await_ack(cookie, ack_timeout)
            if err == 0:
                self._sock.send(listen_request(PROC_CN_MCAST_LISTEN, 0, event_mask=mask))
                self.event_mask = mask
                return
            why = "no acknowledgement" if err is None else os.strerror(err)
        except OSError as error:  # we are subscribed to all events already: keep that
            why = error.strerror or str(error)
        log.info(
            "process connector: kernel %s takes no event mask (%s); subscribed to all events",
            self._kernel_release,
            why,
        )

    def _await_ack(self, cookie: int, timeout: float) -> int | None:
        """Read until our ack and return its error (0: accepted), or None after `timeout`
        without it; keep whatever else arrives first for recv()."""
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
            self.datagrams_total += 1
            for event in parse_messages(data):
                if isinstance(event, AckEvent) and event.cookie == cookie + 1:
                    return event.err
            self._pending.append(data)
        return None

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
        self.datagrams_total += 1
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
    connector = ProcConnector(rcvbuf_bytes=1 << 16, event_mask=None, socket_filter=False)
    try:
        connector.open(ack_timeout=ack_timeout)
    except EventsUnavailable as unavailable:
        return unavailable.reason
    connector.close()
    return None
