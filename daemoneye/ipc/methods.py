"""What a method implementation sees and returns: the `Method` table entry, the `Call`, a
result that is already encoded (`Raw`), a result with notification lines behind it (`Reply`),
and the `MethodError` that becomes a JSON-RPC error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemoneye.errors import DaemonEyeError
from daemoneye.ipc.auth import Peer
from daemoneye.ipc.protocol import (
    ErrorCode,
)

if TYPE_CHECKING:
    from daemoneye.ipc.connection import Connection


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
