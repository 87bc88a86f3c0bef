"""The Linux process connector's wire format: pure parsers for its netlink messages.

The kernel multicasts one `proc_event` per fork, exec, exit, id change, ... to sockets bound to
NETLINK_CONNECTOR group CN_IDX_PROC that sent PROC_CN_MCAST_LISTEN. Each arrives as
nlmsghdr + cn_msg + proc_event, in host byte order, with nlmsg_type NLMSG_DONE (the connector's
carrier type, not an end-of-dump marker). The parsers decode faithfully, thread events included;
filtering to process level is the event source's job (`daemoneye.collector.events`); the
socket is `daemoneye.collector.netlink`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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
PROC_EVENT_NONZERO_EXIT = 0x20000000  # only in a listen request's mask: exits with a code
PROC_EVENT_COREDUMP = 0x40000000
PROC_EVENT_EXIT = 0x80000000
# Every event type a Linux >= 6.6 listen request can ask for (enum proc_cn_event's ALL).
PROC_EVENT_ALL = (
    PROC_EVENT_FORK
    | PROC_EVENT_EXEC
    | PROC_EVENT_UID
    | PROC_EVENT_GID
    | PROC_EVENT_SID
    | PROC_EVENT_PTRACE
    | PROC_EVENT_COMM
    | PROC_EVENT_NONZERO_EXIT
    | PROC_EVENT_COREDUMP
    | PROC_EVENT_EXIT
)

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
_PREFIX = struct.Struct("=IHHIIIIIIHHIIQ")
_CN_OFFSET = _NLMSGHDR.size  # where the cn_msg starts

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
        (
            nlmsg_len,
            nlmsg_type,
            _flags,
            _nlseq,
            _pid,
            idx,
            val,
            seq,
            ack,
            data_len,
            _cnflags,
            what,
            cpu,
            timestamp_ns,
        ) = _PREFIX.unpack_from(view)
        if (
            nlmsg_type == NLMSG_DONE
            and nlmsg_len <= end <= _align4(nlmsg_len)
            and idx == CN_IDX_PROC
            and val == CN_VAL_PROC
            and _EVENT_HDR.size <= data_len <= nlmsg_len - _CN_OFFSET - _CN_MSG.size
        ):
            body = view[_PREFIX.size : _CN_OFFSET + _CN_MSG.size + data_len]
            event = _parse_body(what, cpu, seq, timestamp_ns, ack, body)
            return [
                event if event is not None else MalformedMessage(0, f"short body for {what:#x}")
            ]
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


def listen_request(op: int, cookie: int, seq: int = 0, *, event_mask: int | None = None) -> bytes:
    """The nlmsghdr + cn_msg + payload that asks the kernel to start (or stop) sending events.

    Without `event_mask` the payload is the u32 op every kernel takes ("all events"). With it,
    the payload is Linux 6.6's `struct proc_input {op; event_type}`: the kernel then sends only
    the event types in the mask, and no acknowledgement unless the mask is PROC_EVENT_ALL (the
    acknowledgement, PROC_EVENT_NONE, is filtered like any event). Older kernels ignore an
    8-byte payload without answering.
    """
    body = _U32.pack(op) if event_mask is None else _TWO_U32.pack(op, event_mask)
    cn_msg = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, cookie, len(body), 0) + body
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn_msg), NLMSG_DONE, 0, seq, 0) + cn_msg
