"""The Linux process connector: pure parsers for its netlink messages and a socket wrapper.

The kernel multicasts one `proc_event` per fork, exec, exit, id change, ... to sockets bound to
NETLINK_CONNECTOR group CN_IDX_PROC that sent PROC_CN_MCAST_LISTEN. Each arrives as
nlmsghdr + cn_msg + proc_event, in host byte order, with nlmsg_type NLMSG_DONE (the connector's
carrier type, not an end-of-dump marker). The parsers decode faithfully, thread events included;
filtering to process level is the event source's job (`daemoneye.collector.events`).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import random
import select
import socket
import struct
import time
from dataclasses import dataclass
from types import TracebackType

from daemoneye.errors import CollectorError

log = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

PROC_EVENT_NONE = 0x00000000
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_UID = 0x00000004
PROC_EVENT_GID = 0x00000040
PROC_EVENT_SID = 0x00000080
PROC_EVENT_PTRACE = 0x00000100
PROC_EVENT_COMM = 0x00000200
PROC_EVENT_COREDUMP = 0x40000000
PROC_EVENT_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT_HDR = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_TWO_U32 = struct.Struct("=II")
_FOUR_U32 = struct.Struct("=IIII")
_EXIT = struct.Struct("=IIIiII")  # exit_signal is -1 for threads
_EXIT_OLD = struct.Struct("=IIIi")
_COMM = struct.Struct("=II16s")
# nlmsghdr + cn_msg + proc_event header, for a buffer that holds a single message
_PREFIX = struct.Struct("=IHHII" "IIIIHH" "IIQ")
_CN_OFFSET = _NLMSGHDR.size  # where the cn_msg starts
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # absent from typeshed

ReadableBuffer = bytes | bytearray | memoryview


def _align4(length: int) -> int:
    return (length + 3) & ~3


@dataclass(frozen=True, slots=True)
class _Header:
    cpu: int  # CPU the event was emitted on; `seq` counts per CPU
    seq: int  # cn_msg.seq: a per-CPU counter, so a gap on one CPU is a lost event
    timestamp_ns: int  # CLOCK_MONOTONIC (ktime_get_ns) when the kernel emitted it


@dataclass(frozen=True, slots=True)
class AckEvent(_Header):
    """PROC_EVENT_NONE: the reply to a listen/ignore request. `cookie` is our cn_msg.ack + 1."""

    err: int
    cookie: int


@dataclass(frozen=True, slots=True)
class ForkEvent(_Header):
    """A task was created; a thread when child_pid != child_tgid."""

    parent_pid: int
    parent_tgid: int
    child_pid: int
    child_tgid: int

    @property
    def is_thread(self) -> bool:
        return self.child_pid != self.child_tgid


@dataclass(frozen=True, slots=True)
class ExecEvent(_Header):
    """A successful execve(); after it the task is always its group's leader (pid == tgid)."""

    pid: int
    tgid: int


@dataclass(frozen=True, slots=True)
class UidEvent(_Header):
    pid: int
    tgid: int
    ruid: int
    euid: int


@dataclass(frozen=True, slots=True)
class GidEvent(_Header):
    pid: int
    tgid: int
    rgid: int
    egid: int


@dataclass(frozen=True, slots=True)
class SidEvent(_Header):
    pid: int
    tgid: int


@dataclass(frozen=True, slots=True)
class PtraceEvent(_Header):
    """Attach (tracer set) or detach (tracer 0)."""

    pid: int
    tgid: int
    tracer_pid: int
    tracer_tgid: int


@dataclass(frozen=True, slots=True)
class CommEvent(_Header):
    pid: int
    tgid: int
    comm: str  # up to 15 bytes, undecodable bytes backslash-escaped


@dataclass(frozen=True, slots=True)
class CoredumpEvent(_Header):
    pid: int
    tgid: int
    parent_pid: int  # 0 when the kernel did not fill it in
    parent_tgid: int


@dataclass(frozen=True, slots=True)
class ExitEvent(_Header):
    """A task exited. `exit_code` is the raw wait status (task->exit_code), decoded below."""

    pid: int
    tgid: int
    exit_code: int
    exit_signal: int  # the signal the parent gets (SIGCHLD), -1 for threads
    parent_pid: int  # 0 on kernels before parent fields were added, or when unknown
    parent_tgid: int

    @property
    def is_thread(self) -> bool:
        return self.pid != self.tgid

    @property
    def exited(self) -> bool:
        """True when the task called exit(); False when a signal killed it."""
        return self.exit_code & 0x7F == 0

    @property
    def exit_status(self) -> int | None:
        """The exit(2) argument, or None after death by signal."""
        return (self.exit_code >> 8) & 0xFF if self.exited else None

    @property
    def term_signal(self) -> int | None:
        """The signal that killed the task, or None after a normal exit."""
        signal_number = self.exit_code & 0x7F
        return None if signal_number in (0, 0x7F) else signal_number

    @property
    def core_dumped(self) -> bool:
        return self.term_signal is not None and bool(self.exit_code & 0x80)


@dataclass(frozen=True, slots=True)
class UnknownEvent(_Header):
    """A `what` this parser does not know (a newer kernel); kept so it can be counted."""

    what: int


@dataclass(frozen=True, slots=True)
class NetlinkError:
    """An NLMSG_ERROR message; `error` is a positive errno (0 is a plain ack)."""

    error: int


@dataclass(frozen=True, slots=True)
class NetlinkOverrun:
    """An NLMSG_OVERRUN message: the kernel says data was lost."""


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """Bytes that could not be decoded; parsing skipped them (and, if noted, the rest)."""

    offset: int
    reason: str


ProcConnectorEvent = (
    AckEvent
    | ForkEvent
    | ExecEvent
    | UidEvent
    | GidEvent
    | SidEvent
    | PtraceEvent
    | CommEvent
    | CoredumpEvent
    | ExitEvent
    | UnknownEvent
    | NetlinkError
    | NetlinkOverrun
    | MalformedMessage
)


def parse_messages(buf: ReadableBuffer) -> list[ProcConnectorEvent]:
    """Decode every netlink message in one recv() buffer. Never raises on any input.

    A message whose nlmsg_len is below the header size or past the end of the buffer ends the
    walk with a MalformedMessage: after it there is no trustworthy boundary to resume at. Every
    step advances by at least one header, so no length value can loop.

    The kernel sends each proc connector event in a datagram of its own, so the usual buffer
    holds exactly one well-formed message: that case is decoded with one unpack of all three
    headers (the reader pays for every microsecond of this thousands of times a second). It
    gives exactly what the general walk gives; anything else takes the walk.
    """
    view = memoryview(buf).cast("B")
    end = len(view)
    if end >= _PREFIX.size:
        (nlmsg_len, nlmsg_type, _flags, _nlseq, _pid, idx, val, seq, ack, data_len, _cnflags,
         what, cpu, timestamp_ns) = _PREFIX.unpack_from(view)
        if (nlmsg_type == NLMSG_DONE and nlmsg_len <= end <= _align4(nlmsg_len)
                and idx == CN_IDX_PROC and val == CN_VAL_PROC
                and _EVENT_HDR.size <= data_len <= nlmsg_len - _CN_OFFSET - _CN_MSG.size):
            body = view[_PREFIX.size : _CN_OFFSET + _CN_MSG.size + data_len]
            event = _parse_body(what, cpu, seq, timestamp_ns, ack, body)
            return [event if event is not None else
                    MalformedMessage(0, f"short body for {what:#x}")]
    return _walk(view, end)


def _walk(view: memoryview, end: int) -> list[ProcConnectorEvent]:
    """The general decoder: every message in the buffer, in order (see `parse_messages`)."""
    events: list[ProcConnectorEvent] = []
    offset = 0
    while offset < end:
        if end - offset < _NLMSGHDR.size:
            events.append(MalformedMessage(offset, f"{end - offset} trailing bytes"))
            break
        nlmsg_len, nlmsg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(view, offset)
        if nlmsg_len < _NLMSGHDR.size:
            events.append(MalformedMessage(offset, f"nlmsg_len {nlmsg_len} below header size"))
            break
        if nlmsg_len > end - offset:
            events.append(MalformedMessage(offset, f"nlmsg_len {nlmsg_len} past end of buffer"))
            break
        payload = view[offset + _NLMSGHDR.size : offset + nlmsg_len]
        if nlmsg_type == NLMSG_DONE:
            events.append(_parse_cn_msg(payload, offset))
        elif nlmsg_type == NLMSG_ERROR:
            if len(payload) >= _I32.size:
                events.append(NetlinkError(-_I32.unpack_from(payload)[0]))
            else:
                events.append(MalformedMessage(offset, "short NLMSG_ERROR"))
        elif nlmsg_type == NLMSG_OVERRUN:
            events.append(NetlinkOverrun())
        elif nlmsg_type != NLMSG_NOOP:
            events.append(MalformedMessage(offset, f"unexpected nlmsg_type {nlmsg_type}"))
        offset += _align4(nlmsg_len)
    return events


def _parse_cn_msg(payload: memoryview, offset: int) -> ProcConnectorEvent:
    if len(payload) < _CN_MSG.size:
        return MalformedMessage(offset, "short cn_msg")
    idx, val, seq, ack, data_len, _flags = _CN_MSG.unpack_from(payload)
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC):
        return MalformedMessage(offset, f"connector id {idx}:{val} is not the proc connector")
    data = payload[_CN_MSG.size :]
    if data_len > len(data):
        return MalformedMessage(offset, f"cn_msg len {data_len} past end of message")
    data = data[:data_len]
    if len(data) < _EVENT_HDR.size:
        return MalformedMessage(offset, "short proc_event")
    what, cpu, timestamp_ns = _EVENT_HDR.unpack_from(data)
    body = data[_EVENT_HDR.size :]
    event = _parse_body(what, cpu, seq, timestamp_ns, ack, body)
    return event if event is not None else MalformedMessage(offset, f"short body for {what:#x}")


def _parse_body(
    what: int, cpu: int, seq: int, ts: int, ack: int, body: memoryview
) -> ProcConnectorEvent | None:
    size = len(body)
    if what == PROC_EVENT_FORK:
        return ForkEvent(cpu, seq, ts, *_FOUR_U32.unpack_from(body)) if size >= 16 else None
    if what == PROC_EVENT_EXEC:
        return ExecEvent(cpu, seq, ts, *_TWO_U32.unpack_from(body)) if size >= 8 else None
    if what == PROC_EVENT_EXIT:
        if size >= 24:
            return ExitEvent(cpu, seq, ts, *_EXIT.unpack_from(body))
        if size >= 16:  # kernels before the parent fields
            pid, tgid, exit_code, exit_signal = _EXIT_OLD.unpack_from(body)
            return ExitEvent(cpu, seq, ts, pid, tgid, exit_code, exit_signal, 0, 0)
        return None
    if what == PROC_EVENT_NONE:
        return AckEvent(cpu, seq, ts, _U32.unpack_from(body)[0], ack) if size >= 4 else None
    if what == PROC_EVENT_UID:
        return UidEvent(cpu, seq, ts, *_FOUR_U32.unpack_from(body)) if size >= 16 else None
    if what == PROC_EVENT_GID:
        return GidEvent(cpu, seq, ts, *_FOUR_U32.unpack_from(body)) if size >= 16 else None
    if what == PROC_EVENT_SID:
        return SidEvent(cpu, seq, ts, *_TWO_U32.unpack_from(body)) if size >= 8 else None
    if what == PROC_EVENT_PTRACE:
        return PtraceEvent(cpu, seq, ts, *_FOUR_U32.unpack_from(body)) if size >= 16 else None
    if what == PROC_EVENT_COMM:
        if size < _COMM.size:
            return None
        pid, tgid, raw = _COMM.unpack_from(body)
        return CommEvent(cpu, seq, ts, pid, tgid, _decode_comm(raw))
    if what == PROC_EVENT_COREDUMP:
        if size >= 16:
            return CoredumpEvent(cpu, seq, ts, *_FOUR_U32.unpack_from(body))
        if size >= 8:
            pid, tgid = _TWO_U32.unpack_from(body)
            return CoredumpEvent(cpu, seq, ts, pid, tgid, 0, 0)
        return None
    return UnknownEvent(cpu, seq, ts, what)


def _decode_comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def listen_request(op: int, cookie: int, seq: int = 0) -> bytes:
    """The nlmsghdr + cn_msg + u32 op that asks the kernel to start (or stop) sending events."""
    body = _U32.pack(op)
    cn_msg = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, cookie, len(body), 0) + body
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn_msg), NLMSG_DONE, 0, seq, 0) + cn_msg


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
