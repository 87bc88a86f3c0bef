"""A connection's requests: parse a line, check it is a JSON-RPC request, authorize it, run
its method and write the answer. `RequestHandling` is mixed into `Connection`, which provides
the transport side it declares below."""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from daemoneye.ipc import protocol
from daemoneye.ipc.auth import ROLE_ADMIN, Peer
from daemoneye.ipc.codec import CodecError, from_wire, to_wire
from daemoneye.ipc.methods import Call, MethodError, Raw, Reply
from daemoneye.ipc.protocol import (
    MAX_MESSAGE_BYTES,
    ErrorCode,
)

if TYPE_CHECKING:
    from daemoneye.ipc.connection import Connection
    from daemoneye.ipc.server import Server

log = logging.getLogger(__name__)


class RequestHandling:
    """The request side of a connection (connection.py has the transport side)."""

    server: Server
    peer: Peer
    role: str
    greeted: bool
    _tasks: set[asyncio.Task[None]]
    _hello_timer: asyncio.TimerHandle | None
    _last_active: float
    _closing: bool

    def _write(self, data: bytes, topic: str | None = None) -> None:
        raise NotImplementedError

    def _bad_input(self, what: str) -> None:
        raise NotImplementedError

    def _strike(self) -> None:
        raise NotImplementedError

    def _pump(self) -> None:
        raise NotImplementedError

    def send(self, lines: Iterable[bytes]) -> None:
        raise NotImplementedError

    def offer(self, topic: str, lines: Sequence[bytes]) -> None:
        raise NotImplementedError

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
            self._bad_input(f"unknown method {_short_text(name)!r}")
            # Method names are short: a long one gets no (costly) suggestion and is not echoed.
            match = (
                difflib.get_close_matches(name, list(self.server.methods), n=1, cutoff=0.6)
                if len(name) <= MAX_METHOD_NAME
                else []
            )
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise MethodError(
                ErrorCode.METHOD_NOT_FOUND,
                f"unknown method {_short_text(name)!r}{hint}",
                {"methods": sorted(self.server.methods)},
            )
        if not self.greeted and name != "hello":
            self._strike()  # a peer that never says hello must not parse lines for free
            raise MethodError(
                ErrorCode.HELLO_REQUIRED,
                "call hello first: it must be the first call on a connection",
            )
        call = Call(conn=cast("Connection", self), method=name, raw_params=raw_params)
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


MAX_METHOD_NAME = 64


def _short_text(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(exc: Exception, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 1] + "…"
