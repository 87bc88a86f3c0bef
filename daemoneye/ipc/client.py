"""The asyncio client of the daemon's socket (docs/protocol.md): the CLI and the dashboard
reach the daemon only through this module (and `daemoneye.models`).

    async with DaemonClient(path, client_name="dashboard", reconnect=True) as client:
        await client.subscribe("processes")
        async for event in client.events():
            match event:
                case Connected(hello): ...          # also after every reconnect
                case Disconnected(reason, retry_in): ...
                case ProcessesSnapshot(): ...       # replace the whole table
                case ProcessesDelta(): apply_delta(table, event)
                case Resync(topic): ...             # a snapshot follows for processes

Calls raise `RpcError` (the daemon said no: `.code`, `.message`, `.data`), `ConnectionLost`
(no connection right now), `CallTimeout` (no answer in time) or `DaemonUnavailable` (from
`connect()`: nobody listens); all are `IpcError`s.

With `reconnect=True` a lost connection is retried with exponential backoff (with jitter);
`Disconnected` and `Connected` events mark the transitions, and every topic subscribed before
is subscribed again (so a fresh processes snapshot follows each `Connected`).

Notifications wait in a bounded queue until `events()` takes them; a consumer that falls so
far behind that the queue fills gets `Resync` events (its stale notifications are dropped and
the subscriptions renewed) — the reader itself never blocks, so calls keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import deque
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from daemoneye import __version__
from daemoneye.ipc import protocol
from daemoneye.ipc.calls import DaemonCalls
from daemoneye.ipc.codec import CodecError, from_wire, from_wire_many
from daemoneye.ipc.events import (
    CONNECTION_EVENTS,
    Connected,
    Disconnected,
    Event,
    ProcessesSnapshot,
    Resync,
    RulesChanged,
    apply_delta,
)
from daemoneye.ipc.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_SOCKET_PATH_BYTES,
    AlertsPage,
    CallTimeout,
    ConnectionLost,
    DaemonUnavailable,
    ErrorCode,
    IpcError,
    ProcessDetail,
    QueryRows,
    ResyncParams,
    RpcError,
    SignalResult,
    SnapshotPart,
    SubscribeResult,
)
from daemoneye.ipc.ssh import SshRoute, SshStream, open_ssh_stream
from daemoneye.models import (
    Alert,
    DaemonStatus,
    Hello,
    ProcessesDelta,
    ProcessRecord,
    RuleStatus,
)

__all__ = [
    "AlertsPage",
    "CallTimeout",
    "Connected",
    "ConnectionLost",
    "DaemonClient",
    "DaemonUnavailable",
    "Disconnected",
    "ErrorCode",
    "Event",
    "EventStream",
    "IpcError",
    "ProcessDetail",
    "ProcessesSnapshot",
    "QueryRows",
    "Resync",
    "RpcError",
    "RulesChanged",
    "SignalResult",
    "SshRoute",
    "SubscribeResult",
    "apply_delta",
]

log = logging.getLogger(__name__)


# -- the client ------------------------------------------------------------------------------


class EventStream(AsyncIterator[Event]):
    """The events of one client (`DaemonClient.events()`); all state lives in the client, so a
    cancelled `__anext__` (a timeout) drops nothing."""

    def __init__(self, client: DaemonClient) -> None:
        self._client = client

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        return await self._client._next_event()


class DaemonClient(DaemonCalls):
    """One connection to the daemon, optionally kept up across daemon restarts."""

    def __init__(
        self,
        socket_path: Path | str,
        *,
        client_name: str = f"daemoneye {__version__}",
        reconnect: bool = False,
        connect_timeout: float = 5.0,
        call_timeout: float = 60.0,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        max_events: int = 10_000,
        ssh: SshRoute | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        # Through ssh (`--host ssh://…`): socket_path is then the remote daemon's socket.
        self.ssh = ssh
        self._ssh_stream: SshStream | None = None
        self._ssh_failed: str | None = None  # why the last ssh ended, kept past its cleanup
        # Learning that (the ssh's exit and last words) while the connection is dropped: a
        # call failing meanwhile (a hello whose write hit the dead pipe) waits for it too.
        self._ssh_failing: asyncio.Future[str | None] | None = None
        self.client_name = client_name
        self.reconnect = reconnect
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_events = max_events
        self.hello: Hello | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._topics: set[str] = set()
        self._snapshot_parts: list[ProcessRecord] = []
        self._events: deque[Event] = deque()
        self._event_ready = asyncio.Event()
        self._closed = False
        self._finished = False  # no more events will come (closed, or lost without reconnect)
        self._established = False  # hello succeeded on the current connection

    # -- connection ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> Hello:
        """Connect and say hello. Raises DaemonUnavailable when no daemon listens."""
        if self._closed:
            raise ConnectionLost("this client was closed")
        hello = await self._open()
        self._emit(Connected(hello))
        return hello

    async def close(self) -> None:
        """Close the connection for good; `events()` ends after what is queued."""
        self._closed = True
        self._finished = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._drop_connection(ConnectionLost("the client was closed"))
        self._event_ready.set()

    async def __aenter__(self) -> DaemonClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def where(self) -> str:
        """The daemon this client talks to, for messages: a socket path or an ssh:// host."""
        return str(self.ssh.target) if self.ssh else str(self.socket_path)

    async def _open_ssh(self, route: SshRoute) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            stream = await open_ssh_stream(route.argv)
        except OSError as exc:
            raise DaemonUnavailable(
                f"cannot run {route.argv[0]!r} to reach {route.target}: {exc.strerror or exc}"
            ) from None
        self._ssh_stream = stream
        return stream.reader, stream.writer

    async def _ssh_failure(self, fallback: str) -> str:
        """Why the ssh under this connection ended, or `fallback` when it did not end."""
        stream, route = self._ssh_stream, self.ssh
        if route is None:
            return fallback
        if stream is not None:
            return await stream.failure(route.target, route.remote_program, 5.0) or fallback
        failing = self._ssh_failing
        if failing is not None and self._ssh_failed is None:
            with contextlib.suppress(Exception):
                self._ssh_failed = await asyncio.shield(failing)
        failed, self._ssh_failed = self._ssh_failed, None
        return failed or fallback

    async def _open(self) -> Hello:
        self._ssh_failed = None
        self._ssh_failing = None
        if self.ssh is not None:
            reader, writer = await self._open_ssh(self.ssh)
            return await self._greet(reader, writer, str(self.ssh.target))
        path = self.socket_path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            raise DaemonUnavailable(
                f"socket path {path} is longer than the "
                f"{MAX_SOCKET_PATH_BYTES} bytes a Unix socket path may have"
            )
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=MAX_MESSAGE_BYTES + 1),
                self.connect_timeout,
            )
        except FileNotFoundError:
            raise DaemonUnavailable(f"no daemon is running ({path} does not exist)") from None
        except ConnectionRefusedError:
            raise DaemonUnavailable(f"no daemon is listening on {path}") from None
        except PermissionError:
            raise DaemonUnavailable(
                f"permission denied connecting to {path} (in system mode "
                "the socket is open to the daemoneye group)"
            ) from None
        except TimeoutError:
            raise DaemonUnavailable(
                f"the daemon on {path} did not accept the connection "
                f"within {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise DaemonUnavailable(f"cannot connect to {path}: {exc.strerror or exc}") from None
        return await self._greet(reader, writer, str(path))

    async def _greet(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str
    ) -> Hello:
        self._reader, self._writer = reader, writer
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))
        try:
            result = await self.call(
                "hello",
                {"protocol_version": protocol.PROTOCOL_VERSION, "client": self.client_name},
                timeout=self.connect_timeout,
            )
            self.hello = from_wire(Hello, result)
        except RpcError as exc:
            await self._drop_connection(exc)
            if exc.code == ErrorCode.TOO_MANY_CONNECTIONS:
                raise DaemonUnavailable(
                    f"the daemon refused the connection: {exc.message}"
                ) from None
            raise
        except (IpcError, CodecError) as exc:  # lost, timed out, or not a DaemonEye daemon
            why = await self._ssh_failure(f"the daemon on {where} did not answer hello: {exc}")
            await self._drop_connection(ConnectionLost(str(exc)))
            raise DaemonUnavailable(why) from None
        self._established = True
        return self.hello

    async def _drop_connection(self, why: Exception) -> None:
        self._established = False
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stream, self._ssh_stream = self._ssh_stream, None
        if stream is not None and not self._closed and self.ssh is not None:
            # The channel is gone; ssh ends by itself in a moment and says why. Learn it
            # before failing the pending calls, whose handlers report it (`_ssh_failure`).
            self._ssh_failing = asyncio.ensure_future(
                stream.failure(self.ssh.target, self.ssh.remote_program, wait=5.0)
            )
            self._ssh_failed = await self._ssh_failing
        self._fail_pending(why)
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if stream is not None:
            await stream.close()

    def _fail_pending(self, why: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(why)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        reason = "the daemon closed the connection"
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError:
                    reason = "the daemon sent a message larger than the protocol allows"
                    break
                try:
                    message = protocol.loads(line)
                    self._dispatch(message)
                except (ValueError, CodecError, TypeError, KeyError) as exc:
                    log.warning("ignoring a malformed message from the daemon: %s", exc)
        except OSError as exc:
            reason = f"the connection failed: {exc.strerror or exc}"
        await self._lost(reason)

    async def _lost(self, reason: str) -> None:
        """The reader saw the connection end: fail calls, tell the consumer, maybe retry."""
        self._reader_task = None
        established, self._established = self._established, False
        if self.ssh is not None and established:
            reason = await self._ssh_failure(f"{reason} (through {self.ssh.target})")
        await self._drop_connection(ConnectionLost(reason))
        self._snapshot_parts.clear()
        if self._closed or not established:
            return  # closed on purpose, or still in _open(), which reports the failure
        if not self.reconnect:
            self._emit(Disconnected(reason, None))
            self._finished = True
            self._event_ready.set()
            return
        self._emit(Disconnected(reason, self.backoff_initial))
        self._supervisor = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = self.backoff_initial
        while not self._closed:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            try:
                hello = await self._open()
            except (DaemonUnavailable, RpcError, ConnectionLost) as exc:
                delay = min(delay * 2, self.backoff_max)
                log.debug("reconnect failed (%s); next attempt in %.1f s", exc, delay)
                continue
            self._emit(Connected(hello))
            for topic in sorted(self._topics):
                try:
                    await self._subscribe_call(topic)
                except (RpcError, ConnectionLost) as exc:
                    log.warning("could not renew the %s subscription: %s", topic, exc)
            return

    # -- messages --------------------------------------------------------------------------
    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        if "method" in message:
            self._notification(str(message["method"]), message.get("params") or {})
            return
        request_id = message.get("id")
        error = message.get("error")
        if request_id is None:
            if isinstance(error, dict):  # about the connection (limit, timeout, size): fatal
                self._fail_pending(_rpc_error(error))
            return
        future = self._pending.pop(request_id, None)
        if future is None or future.done():
            return
        if isinstance(error, dict):
            future.set_exception(_rpc_error(error))
        else:
            future.set_result(message.get("result"))

    def _notification(self, method: str, params: Mapping[str, Any]) -> None:
        if method == protocol.NOTIFY_PROCESSES_DELTA:
            self._emit(from_wire(ProcessesDelta, params))
        elif method == protocol.NOTIFY_PROCESSES_SNAPSHOT:
            part = from_wire(SnapshotPart, params)
            if part.part == 1:
                self._snapshot_parts.clear()
            self._snapshot_parts.extend(part.processes)
            if part.part == part.parts:
                records, self._snapshot_parts = tuple(self._snapshot_parts), []
                self._emit(ProcessesSnapshot(part.seq, records))
        elif method == protocol.NOTIFY_HEALTH:
            self._emit(from_wire(DaemonStatus, params))
        elif method == protocol.NOTIFY_ALERT:
            self._emit(from_wire(Alert, params["alert"]))
        elif method == protocol.NOTIFY_RULES:
            self._emit(RulesChanged(from_wire_many(RuleStatus, params["rules"])))
        elif method == protocol.NOTIFY_RESYNC:
            resync = from_wire(ResyncParams, params)
            self._emit(Resync(resync.topic, resync.reason, resync.dropped))
        else:
            log.debug("ignoring the unknown notification %r", method)

    def _emit(self, event: Event) -> None:
        if len(self._events) >= self.max_events and not isinstance(event, CONNECTION_EVENTS):
            self._overflow()
            if isinstance(event, ProcessesDelta | ProcessesSnapshot):
                return  # the renewed subscription brings a fresh snapshot
        self._events.append(event)
        self._event_ready.set()

    def _overflow(self) -> None:
        kept = [e for e in self._events if isinstance(e, CONNECTION_EVENTS)]
        dropped = len(self._events) - len(kept)
        self._events = deque(kept)
        reason = "the consumer of events() fell behind; queued notifications were dropped"
        for topic in sorted(self._topics):
            self._events.append(Resync(topic, reason, dropped))
        log.warning("%s (%d events)", reason, dropped)
        if "processes" in self._topics and self.connected:
            asyncio.get_running_loop().create_task(self._renew("processes"))

    async def _renew(self, topic: str) -> None:
        with contextlib.suppress(RpcError, ConnectionLost):
            await self._subscribe_call(topic)

    def events(self) -> EventStream:
        """Every event in order, until the client is closed (or, without reconnect, the
        connection is lost: the last event is then `Disconnected`). Safe to wait on with a
        timeout: `await asyncio.wait_for(anext(stream), 1.0)` loses nothing when it expires."""
        return EventStream(self)

    async def _next_event(self) -> Event:
        while not self._events:
            if self._finished:
                raise StopAsyncIteration
            self._event_ready.clear()
            await self._event_ready.wait()
        return self._events.popleft()

    # -- calls -----------------------------------------------------------------------------
    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """One request; returns the raw JSON result or raises RpcError / ConnectionLost."""
        writer = self._writer
        if writer is None or writer.is_closing():
            raise ConnectionLost("not connected to the daemon")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future

        async def round_trip() -> Any:
            writer.write(protocol.request(request_id, method, dict(params or {})))
            await writer.drain()
            return await future

        try:
            return await asyncio.wait_for(round_trip(), timeout or self.call_timeout)
        except TimeoutError:
            raise CallTimeout(
                f"the daemon did not answer {method} within {timeout or self.call_timeout:g} s"
            ) from None
        except OSError as exc:
            raise ConnectionLost(f"the connection failed: {exc.strerror or exc}") from None
        finally:
            self._pending.pop(request_id, None)


def _rpc_error(error: Mapping[str, Any]) -> RpcError:
    code = error.get("code")
    return RpcError(
        code if isinstance(code, int) else ErrorCode.INTERNAL_ERROR,
        str(error.get("message", "unknown error")),
        error.get("data"),
    )
