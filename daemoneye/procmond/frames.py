"""The collector pair's protocol: length-prefixed, typed, versioned frames (docs/protocol.md).

A frame is a 5-byte header — the payload's length (4 bytes, big-endian) and its kind (1 byte) —
followed by the payload: its dataclass below as a JSON array of its fields in declaration order
(`procmond/wire.py`), so a field added to ProcessRecord travels without a change here. Every
frame is checked on receipt: its length, its kind, its JSON and every field (strict decoding:
a wrong type, a missing or an extra field names the field). A frame that fails is refused
whole with `FrameError`, which says the kind and the field.

procmond → agent: HELLO (first, once), SCAN, EVENTS, HASHES, HEALTH, SIGNAL_RESULT.
agent → procmond: SIGNAL, RESCAN — nothing else is accepted.
"""

from __future__ import annotations

import enum
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

from daemoneye.models import ConnectionsDelta, ExeHash, ProcessKey, ProcessRecord, ScanDelta
from daemoneye.procmond import wire

# 4: the task passes in Health; 3: the exec capture in Hello and Health; 2: payloads are arrays
PAIR_VERSION = 4
HEADER = struct.Struct(">IB")
# A full first scan of 10,000 processes is ~3 MiB of JSON; argv is capped by the collector.
MAX_PAYLOAD_BYTES = 256 * 1024**2
FULL_SCAN_PIECE = 500  # records per SCAN frame of a full scan: bounded memory on both sides


class Kind(enum.IntEnum):
    HELLO = 1
    SCAN = 2
    EVENTS = 3
    HASHES = 4
    HEALTH = 5
    SIGNAL_RESULT = 6
    CONNECTIONS = 7
    SIGNAL = 64
    RESCAN = 65


@dataclass(frozen=True, slots=True)
class Hello:
    """procmond's first frame: who it is and what it watches with."""

    version: int
    pid: int
    uid: int
    boot_time: float
    event_source: str  # 'netlink' or 'polling-only: <why>'
    event_filter: str  # the connector's mask and socket filter, when netlink
    sees_all: bool  # False: other users' exe/cwd/argv are hidden from procmond
    exec_capture: str  # 'eBPF' or 'off: <why>'


@dataclass(frozen=True, slots=True)
class Scan:
    """One /proc scan. `full`: the first scan of this procmond — `delta.added` holds every live
    process and the agent reconciles it against what it knew; it comes in pieces of at most
    FULL_SCAN_PIECE records, each but the last with `more` set. `evaluated`: instances in
    `delta.added`/`delta.execed` that an EVENTS frame already reported (the rules saw them)."""

    delta: ScanDelta
    full: bool
    evaluated: tuple[ProcessKey, ...]
    more: bool = False


@dataclass(frozen=True, slots=True)
class Events:
    """What the kernel's process events reported since the last EVENTS frame."""

    delta: ScanDelta


@dataclass(frozen=True, slots=True)
class Hashes:
    hashes: tuple[ExeHash, ...]


@dataclass(frozen=True, slots=True)
class Health:
    """procmond's counters, sent after every scan."""

    pid: int
    uid: int
    rss_bytes: int
    cpu_seconds: float
    processes: int
    scans_total: int
    denied_total: int
    vanished_total: int
    hash_dropped_total: int
    events_total: int
    events_lost_total: int
    events_dropped_total: int
    event_source: str
    event_filter: str
    problem: str  # '' or a sentence (e.g. the event reader stopped)
    exec_capture: str
    exec_rescued_total: int  # execs gone from /proc before the read, kept whole by the capture
    exec_uncaptured_total: int  # exec events the capture had no record for (its ring was full)
    task_passes: str  # the scanner's BPF task passes: on, resting or off (and why)


@dataclass(frozen=True, slots=True)
class SignalRequest:
    """agent → procmond: send `signal` to the instance (pid, start_time), through a pidfd."""

    request_id: int
    pid: int
    start_time: float
    signal: int


@dataclass(frozen=True, slots=True)
class SignalResult:
    """procmond → agent: `outcome` is 'pidfd' or 'kill' (sent that way), 'stale' (the instance
    is gone or its pid reused: nothing sent) or 'refused' (policy or the kernel said no)."""

    request_id: int
    outcome: str
    message: str


@dataclass(frozen=True, slots=True)
class Rescan:
    """agent → procmond: scan /proc now, in full (the agent reconciles against it)."""


wire.keep_texts_of(ProcessRecord)  # the agent keeps every live one
# and these numbers repeat across them: a tick's timestamps, an idle process's 0.0, ids
wire.keep_values_of(
    ProcessRecord,
    "first_seen",
    "last_seen",
    "cpu_percent",
    "uid",
    "gid",
    "pid_ns",
    "mnt_ns",
    "net_ns",
    "user_ns",
    "session_id",
    "loginuid",
)

PAYLOADS: dict[Kind, type[Any]] = {
    Kind.HELLO: Hello,
    Kind.SCAN: Scan,
    Kind.EVENTS: Events,
    Kind.HASHES: Hashes,
    Kind.HEALTH: Health,
    Kind.SIGNAL_RESULT: SignalResult,
    Kind.CONNECTIONS: ConnectionsDelta,
    Kind.SIGNAL: SignalRequest,
    Kind.RESCAN: Rescan,
}
KIND_OF: dict[type[Any], Kind] = {cls: kind for kind, cls in PAYLOADS.items()}
FROM_PROCMOND = frozenset(
    {
        Kind.HELLO,
        Kind.SCAN,
        Kind.EVENTS,
        Kind.HASHES,
        Kind.HEALTH,
        Kind.SIGNAL_RESULT,
        Kind.CONNECTIONS,
    }
)
FROM_AGENT = frozenset({Kind.SIGNAL, Kind.RESCAN})
SIGNAL_OUTCOMES = ("pidfd", "kill", "stale", "refused")


class FrameError(ValueError):
    """A frame that does not parse or validate; `kind` and `field` say where (either may be
    '' when the fault is before them, e.g. a bad length)."""

    def __init__(self, kind: str, field: str, reason: str) -> None:
        where = " ".join(
            part for part in (kind and f"{kind} frame", field and f"field {field}") if part
        )
        super().__init__(f"{where}: {reason}" if where else reason)
        self.kind = kind
        self.field = field
        self.reason = reason


class PairClosed(EOFError):
    """The other end closed the pair (or died)."""


def _body(payload: Any) -> tuple[Kind, str]:
    kind = KIND_OF[type(payload)]
    body = wire.dumps(payload)  # ASCII only: the text's length is its length in bytes
    if len(body) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"{kind.name} frame of {len(body)} bytes is over the limit")
    return kind, body


def encode(payload: Any) -> bytes:
    """One frame holding `payload` (an instance of a class in PAYLOADS)."""
    kind, body = _body(payload)
    return HEADER.pack(len(body), kind) + body.encode("ascii")


_SEND_CHUNK = 1 << 20


def write_frame(sock: socket.socket, payload: Any) -> None:
    """Send one frame on a blocking socket, the payload in 1 MiB pieces (no second copy of a
    large frame in memory)."""
    kind, body = _body(payload)
    sock.sendall(HEADER.pack(len(body), kind))
    for start in range(0, len(body), _SEND_CHUNK):
        sock.sendall(body[start : start + _SEND_CHUNK].encode("ascii"))


def parse_header(header: bytes, accepted: frozenset[Kind]) -> tuple[Kind, int]:
    """(kind, payload length) from a 5-byte header; FrameError when either is not acceptable."""
    length, code = HEADER.unpack(header)
    try:
        kind = Kind(code)
    except ValueError:
        raise FrameError("", "", f"unknown frame kind {code}") from None
    if kind not in accepted:
        raise FrameError(kind.name, "", "this side does not accept this kind")
    if length > MAX_PAYLOAD_BYTES:
        raise FrameError(kind.name, "", f"payload length {length} is over {MAX_PAYLOAD_BYTES}")
    return kind, length


def decode(kind: Kind, body: bytes) -> Any:
    """The payload of a `kind` frame, validated whole; FrameError naming kind and field."""
    try:
        payload = wire.loads(PAYLOADS[kind], body)
    except wire.WireError as exc:
        raise FrameError(kind.name, exc.path, exc.reason) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FrameError(kind.name, "", f"not JSON: {exc}") from None
    _check(kind, payload)
    return payload


def _check(kind: Kind, payload: Any) -> None:
    """What types alone do not say."""
    if isinstance(payload, Hello) and payload.version != PAIR_VERSION:
        raise FrameError(
            kind.name, "version", f"{payload.version}, this agent speaks {PAIR_VERSION}"
        )
    if isinstance(payload, SignalRequest):
        if not 1 <= payload.pid <= 2**22:
            raise FrameError(kind.name, "pid", f"{payload.pid} is not a process id")
        if not 1 <= payload.signal <= 64:
            raise FrameError(kind.name, "signal", f"{payload.signal} is not a signal number")
    if isinstance(payload, SignalResult) and payload.outcome not in SIGNAL_OUTCOMES:
        raise FrameError(
            kind.name, "outcome", f"{payload.outcome!r} is not one of {SIGNAL_OUTCOMES}"
        )
    if isinstance(payload, ConnectionsDelta):
        for conn in payload.opened + payload.changed + payload.closed:
            if conn.pid < 1 or conn.start_time < 0:
                raise FrameError(kind.name, "opened", f"connection of pid {conn.pid}")
    if isinstance(payload, Scan | Events):
        for record in payload.delta.added + payload.delta.updated + payload.delta.execed:
            if record.pid < 1 or record.start_time < 0:
                raise FrameError(kind.name, "delta", f"record with pid {record.pid}")


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes from a blocking socket; PairClosed at end of file."""
    chunks = []
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise PairClosed("the other end closed the pair")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, accepted: frozenset[Kind]) -> Any:
    """The next frame's payload off a blocking socket, validated (FrameError, PairClosed)."""
    kind, length = parse_header(recv_exact(sock, HEADER.size), accepted)
    return decode(kind, recv_exact(sock, length))
