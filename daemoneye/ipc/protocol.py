"""The IPC wire protocol (ARCHITECTURE.md §5, docs/protocol.md): JSON-RPC 2.0 objects, one per
line, UTF-8, at most MAX_MESSAGE_BYTES each — framing, error codes, method names, and the
params/results of each method as dataclasses (encoded generically by `codec`).

Shared by the daemon (`server`) and clients (`client`); imports nothing of either.
"""

from __future__ import annotations

import enum
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemoneye.errors import DaemonEyeError
from daemoneye.ipc.codec import to_wire
from daemoneye.models import (
    Alert,
    Connection,
    HistoryReach,
    ProcessEvent,
    ProcessKey,
    ProcessRecord,
    TimelineEvent,
)

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1024 * 1024  # one JSON object, its newline included
# Lists that could exceed one message (processes, query rows, snapshots, deltas) are split so
# that every piece stays under this many bytes of payload: the envelope has room to spare.
CHUNK_BYTES = 768 * 1024
# JSON nested deeper than this is refused before it is parsed: the parser recurses once per level
# and a line of `[`s would otherwise end in RecursionError. Real messages nest a few levels.
MAX_NESTING = 64
# sun_path is 108 bytes on Linux and must end with a NUL: longer paths cannot be bound.
MAX_SOCKET_PATH_BYTES = 107


class ErrorCode(enum.IntEnum):
    """JSON-RPC error codes: the standard ones, then DaemonEye's (-32000 … -32099)."""

    PARSE_ERROR = -32700  # not JSON, not UTF-8, or not an object
    INVALID_REQUEST = -32600  # JSON, but not a JSON-RPC 2.0 request
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602  # the message names the field
    INTERNAL_ERROR = -32603
    NOT_AVAILABLE = -32000  # the part of the daemon that answers this is not running
    FORBIDDEN = -32001  # an admin method, and the peer is not an admin
    NOT_FOUND = -32002  # no such process instance, alert or rule
    HELLO_REQUIRED = -32003  # `hello` must be the first call
    UNSUPPORTED_VERSION = -32004  # the client speaks a protocol version the daemon does not
    MESSAGE_TOO_LARGE = -32005  # a line longer than MAX_MESSAGE_BYTES: the daemon closes
    READ_TIMEOUT = -32006  # half a line, then nothing: the daemon closes
    TOO_MANY_CONNECTIONS = -32007  # the connection limit is reached: the daemon closes
    QUERY_REFUSED = -32008  # query.run: not one read-only SELECT, or over its time budget
    STALE_PROCESS = -32009  # process.signal: that instance is gone (or its pid was reused)
    SIGNAL_FAILED = -32010  # process.signal: the kernel refused (EPERM …)
    STORE_ERROR = -32011  # the store could not be read
    CONFLICT = -32012  # not possible in the current state (e.g. acknowledging a closed alert)
    IDLE_TIMEOUT = -32013  # no request and no live subscription for daemon.idle_timeout
    TOO_MANY_REQUESTS = -32014  # more lines sent ahead of their answers than a client may


# Codes whose cause is the caller's input: the CLI exits 2 for them, 1 for the others.
BAD_INPUT_CODES = frozenset(
    {
        ErrorCode.INVALID_PARAMS,
        ErrorCode.QUERY_REFUSED,
        ErrorCode.METHOD_NOT_FOUND,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.PARSE_ERROR,
    }
)


class IpcError(DaemonEyeError):
    """Talking to the daemon failed."""


class DaemonUnavailable(IpcError):
    """No daemon answers on the socket (absent, refused, or not permitted)."""


class ConnectionLost(IpcError):
    """The connection closed (or was never open) while a call needed it."""


class CallTimeout(IpcError):
    """The daemon did not answer a call in time (the connection may still be fine)."""


class RpcError(IpcError):
    """The daemon answered a call with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.exit_code = 2 if code in BAD_INPUT_CODES else 1

    def __repr__(self) -> str:
        return f"RpcError({self.code}, {self.message!r})"


# -- methods -------------------------------------------------------------------------------

READ_METHODS = (
    "hello",
    "processes.list",
    "processes.get",
    "alerts.list",
    "alerts.get",
    "rules.list",
    "query.run",
    "health",
    "audit.verify",
    "query.tables",
    "connections.list",
)
ADMIN_METHODS = (
    "alerts.ack",
    "alerts.close",
    "rules.enable",
    "rules.disable",
    "rules.reload",
    "process.signal",
)
TOPICS = ("processes", "alerts", "rules", "health")
SUBSCRIPTION_METHODS = tuple(
    f"{topic}.{verb}" for topic in TOPICS for verb in ("subscribe", "unsubscribe")
)

# Notifications the daemon sends (method names on the wire).
NOTIFY_PROCESSES_SNAPSHOT = "processes.snapshot"
NOTIFY_PROCESSES_DELTA = "processes.delta"
NOTIFY_ALERT = "alerts.changed"
NOTIFY_RULES = "rules.changed"
NOTIFY_HEALTH = "health.report"
NOTIFY_RESYNC = "resync"


# -- params ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoParams:
    """Methods without parameters accept `{}` or no params at all."""


@dataclass(frozen=True, slots=True)
class HelloParams:
    protocol_version: int = PROTOCOL_VERSION
    client: str = ""  # a name for the daemon's log, e.g. "daemoneye-cli 0.1.0"


@dataclass(frozen=True, slots=True)
class ProcessesListParams:
    filter: str = ""  # the `daemoneye processes` filter language
    after: tuple[int, float] | None = None  # [pid, start_time] of the last record of a page
    limit: int = 100_000


@dataclass(frozen=True, slots=True)
class ProcessesGetParams:
    pid: int
    start_time: float | None = None  # None: the live instance, else the newest one
    history: bool = False  # also count this pid's instances in the store (not from memory)


@dataclass(frozen=True, slots=True)
class AlertsListParams:
    state: str | None = None  # open, acknowledged, closed
    severity: str | None = None  # this severity and above
    limit: int = 1000
    before_id: int | None = None  # paging: alerts with a smaller id
    rule: str | None = None  # only this rule's alerts
    since: float | None = None  # only alerts seen at or after this (epoch seconds)
    order: str = "id"  # "id": newest id first, paged by before_id; "seen": last seen first
    offset: int = 0  # paging of order "seen"


@dataclass(frozen=True, slots=True)
class ProcessesAtParams:
    at: float  # epoch seconds: the moment whose process set is asked for
    filter: str = ""  # the `daemoneye processes` filter language
    after: tuple[int, float] | None = None  # [pid, start_time] of the last record of a page
    limit: int = 10_000


@dataclass(frozen=True, slots=True)
class TimelineParams:
    since: float  # epoch seconds: the oldest event wanted
    until: float | None = None  # the newest (None: now)
    before: tuple[float, int, int] | None = None  # paging: [ts, source, id] of the last event
    kinds: tuple[str, ...] = ()  # models.TIMELINE_KINDS (empty: all)
    limit: int = 200
    filter: str = ""  # the timeline filter (daemoneye/event_filter.py), e.g. "event:exec ssh"


@dataclass(frozen=True, slots=True)
class ActivityParams:
    since: float  # epoch seconds: the start of the first bucket
    until: float  # the end of the last bucket
    buckets: int = 240  # 1 to 2000 equal buckets


@dataclass(frozen=True, slots=True)
class ConnectionsListParams:
    filter: str = ""  # the `daemoneye connections` filter language (connection_filter.py)
    after: tuple[int, float, int] | None = None  # [pid, start_time, inode] of a page's last
    limit: int = 100_000


@dataclass(frozen=True, slots=True)
class AlertIdParams:
    id: int


@dataclass(frozen=True, slots=True)
class RuleIdParams:
    id: str


@dataclass(frozen=True, slots=True)
class QueryRunParams:
    sql: str
    max_rows: int = 10_000


@dataclass(frozen=True, slots=True)
class ProcessSignalParams:
    pid: int
    start_time: float  # the instance the client saw; a reused pid is never signalled
    signal: str | int = "TERM"  # TERM, SIGTERM or 15


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    topic: str
    available: bool  # False: subscribed, but nothing produces this topic yet (no engine)
    seq: int | None = None  # processes: the snapshot that follows has this seq


@dataclass(frozen=True, slots=True)
class ProcessesPage:
    """One page of `processes.list`; `next` is the `after` of the next page, None at the end."""

    processes: tuple[ProcessRecord, ...]
    total: int  # matching processes in all pages
    next: tuple[int, float] | None


@dataclass(frozen=True, slots=True)
class ConnectionsPage:
    """One page of `connections.list`: open connections that match, by (pid, start_time,
    inode); `total` counts all that match; `next` is the `after` of the next page, None at the
    end. `at` is when they were read (the last refresh), None before the first one or when
    connection collection is off."""

    connections: tuple[Connection, ...]
    total: int
    next: tuple[int, float, int] | None
    at: float | None
    names: tuple[str | None, ...] = ()  # each holder's process name, as `connections` ordered


@dataclass(frozen=True, slots=True)
class ProcessDetail:
    """`processes.get`: one instance, its ancestry (parent first) and its live children."""

    process: ProcessRecord
    live: bool
    ancestry: tuple[ProcessRecord, ...]
    children: tuple[ProcessRecord, ...]  # the oldest ones when not all fit in one message
    # How many instances used this pid in the retention window; None when the answer came from
    # memory alone (ask with history=true to have them counted).
    instances: int | None
    children_total: int  # all live children, also those left out of `children`
    changes: tuple[ProcessEvent, ...] = ()  # its newest changes after start, oldest first


def fit_children(detail: ProcessDetail, sizes: list[int]) -> ProcessDetail:
    """`detail` with as many of its children (oldest first) as keep the answer inside one
    message; `sizes` are the encoded sizes of `children`, in order."""
    budget = CHUNK_BYTES - sum(
        len(dumps(to_wire(item))) for item in (detail.process, *detail.ancestry, *detail.changes)
    )
    kept = 0
    for size in sizes:
        budget -= size + 1
        if budget < 0:
            break
        kept += 1
    if kept == len(detail.children):
        return detail
    return ProcessDetail(
        detail.process,
        detail.live,
        detail.ancestry,
        detail.children[:kept],
        detail.instances,
        detail.children_total,
        detail.changes,
    )


@dataclass(frozen=True, slots=True)
class AlertsPage:
    """One page of `alerts.list`, newest first; `next_before_id` (order "id") or
    `next_offset` (order "seen") continues it (None: done)."""

    alerts: tuple[Alert, ...]
    next_before_id: int | None
    next_offset: int | None = None


@dataclass(frozen=True, slots=True)
class TimelinePage:
    """One page of `history.timeline`, newest first; `next` is the `before` of the next page
    (None: no more); `reach` says how far back the store's history goes."""

    events: tuple[TimelineEvent, ...]
    next: tuple[float, int, int] | None
    reach: HistoryReach


@dataclass(frozen=True, slots=True)
class QueryRows:
    """`query.run`: BLOB values arrive as hex strings."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str | int | float | None, ...], ...]
    truncated: bool  # more rows existed (max_rows, or the message size limit)


@dataclass(frozen=True, slots=True)
class SignalResult:
    pid: int
    start_time: float
    signal: str  # e.g. "SIGTERM"
    method: str  # "pidfd" (race-free) or "kill" (checked just before)


@dataclass(frozen=True, slots=True)
class ResyncParams:
    """The daemon dropped notifications of `topic` for a client that did not read them."""

    topic: str
    dropped: int
    reason: str


@dataclass(frozen=True, slots=True)
class SnapshotPart:
    """One part of a `processes.snapshot`; the parts of one seq arrive together, in order."""

    seq: int
    part: int  # 1-based
    parts: int
    processes: tuple[ProcessRecord, ...]


def after_key(record: ProcessRecord) -> tuple[int, float]:
    return (record.pid, record.start_time)


def key_of(value: tuple[int, float]) -> ProcessKey:
    return ProcessKey(value[0], value[1])


# -- framing ---------------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. NaN and infinities are refused (they are not JSON). Text from
    processes is valid Unicode already; a stray lone surrogate is escaped, never fatal."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "backslashreplace")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class TooDeep(ValueError):
    """A message nests arrays/objects deeper than MAX_NESTING."""


# A JSON string (escapes included): brackets inside one are text, not structure. Unrolled so that
# it runs in linear time without backtracking; a string that never closes runs to the end of the
# line, so the engine never retries it from the next quote (which made `"\"\"\"…` quadratic).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = tuple(1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256))


def nesting_depth(line: bytes) -> int:
    """How deeply `line` nests arrays and objects, at most (brackets inside strings do not
    count). Linear in the line's length and without recursion; exact for valid JSON and never
    lower than what a parser would reach before it fails on invalid JSON."""
    brackets = _JSON_STRING.sub(b"", line).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, *itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)))


def loads(line: bytes, max_nesting: int = MAX_NESTING) -> Any:
    """Parse one line; raises ValueError (UnicodeDecodeError, JSONDecodeError and TooDeep
    included). Nesting is bounded before parsing, so no line can exhaust the parser's
    recursion."""
    # Counting openers is cheap; only a line with many of them needs the exact scan.
    if line.count(b"[") + line.count(b"{") > max_nesting:
        depth = nesting_depth(line)
        if depth > max_nesting:
            raise TooDeep(f"nesting deeper than {max_nesting} levels ({depth})")
    return json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)


def request(request_id: int | str, method: str, params: Any = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return dumps(message) + b"\n"


def response(request_id: int | str | None, result: Any) -> bytes:
    return dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + b"\n"


def raw_response(request_id: int | str | None, result_json: bytes) -> bytes:
    """A response whose result is already encoded JSON (shared, cached encodings)."""
    return b'{"jsonrpc":"2.0","id":' + dumps(request_id) + b',"result":' + result_json + b"}\n"


def error_response(
    request_id: int | str | None, code: int, message: str, data: Any = None
) -> bytes:
    error: dict[str, Any] = {"code": int(code), "message": message}
    if data is not None:
        error["data"] = data
    return dumps({"jsonrpc": "2.0", "id": request_id, "error": error}) + b"\n"


def notification(method: str, params: Any) -> bytes:
    return dumps({"jsonrpc": "2.0", "method": method, "params": params}) + b"\n"


def raw_notification(method: str, params_json: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","method":' + dumps(method) + b',"params":' + params_json + b"}\n"


def json_list(items: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def chunks(items: Sequence[bytes], budget: int = CHUNK_BYTES) -> list[list[bytes]]:
    """Split encoded items into runs whose total size stays under `budget` (an item larger
    than the budget gets a run of its own). Always at least one (possibly empty) run."""
    runs: list[list[bytes]] = [[]]
    size = 0
    for item in items:
        if runs[-1] and size + len(item) + 1 > budget:
            runs.append([])
            size = 0
        runs[-1].append(item)
        size += len(item) + 1
    return runs


class FrameTooLarge(Exception):
    """A line (or an unfinished one) is longer than the limit."""


class LineSplitter:
    """Bytes in, complete lines out (without their newline); refuses lines over `limit`."""

    def __init__(self, limit: int = MAX_MESSAGE_BYTES) -> None:
        self._limit = limit
        self._partial = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of a line that has started but not ended."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self._partial:
                if len(self._partial) + end - start + 1 > self._limit:
                    raise FrameTooLarge
                self._partial += data[start:end]
                lines.append(bytes(self._partial))
                self._partial.clear()
            else:
                if end - start + 1 > self._limit:
                    raise FrameTooLarge
                lines.append(data[start:end])
            start = end + 1
        if start < len(data):
            if len(self._partial) + len(data) - start >= self._limit:
                raise FrameTooLarge
            self._partial += data[start:]
        return lines

    def clear(self) -> None:
        self._partial.clear()
