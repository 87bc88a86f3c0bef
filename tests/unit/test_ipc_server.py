"""The IPC server on a real Unix socket with a small method table: framing, bad input, limits,
backpressure, slow subscribers, and the socket file itself. (A real daemon is driven in
tests/integration/test_ipc*.py; here the limits are small so every edge is reached quickly.)"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemoneye.errors import DaemonError
from daemoneye.ipc import protocol
from daemoneye.ipc.admission import SlotLimits, refusal
from daemoneye.ipc.auth import ROLE_ADMIN, ROLE_READER, Peer, peer_of, role_of
from daemoneye.ipc.budget import QueueBudget
from daemoneye.ipc.connection import MAX_BACKLOG_LINES
from daemoneye.ipc.methods import Call, Method, MethodError, Reply
from daemoneye.ipc.penalty import MAX_DEBT_S, StrikeBudget
from daemoneye.ipc.protocol import ErrorCode, NoParams
from daemoneye.ipc.refusals import RefusalBudget
from daemoneye.ipc.server import Limits, Server
from daemoneye.ipc.socket_file import bind_unix_socket


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """pytest's tmp_path can be longer than a socket path may be."""
    path = Path(tempfile.mkdtemp(prefix="de-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class EchoParams:
    text: str = ""


@dataclass(frozen=True, slots=True)
class NumberParams:
    count: int = 0
    ratio: float = 0.0
    either: str | int = ""


@dataclass(frozen=True, slots=True)
class SlowParams:
    seconds: float = 0.05


class Service:
    def __init__(self) -> None:
        self.running = 0
        self.most_running = 0
        self.audited: list[tuple[str, str]] = []
        self.suppressed: list[tuple[int, int]] = []

    async def hello(self, call: Call, params: NoParams) -> dict[str, Any]:
        return {"role": call.conn.role}

    async def echo(self, call: Call, params: EchoParams) -> str:
        return params.text

    async def numbers(self, call: Call, params: NumberParams) -> int:
        return len(str(params.count)) + len(str(params.either))

    async def slow(self, call: Call, params: SlowParams) -> int:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(params.seconds)
        finally:
            self.running -= 1
        return self.most_running

    async def fail(self, call: Call, params: NoParams) -> None:
        raise MethodError(ErrorCode.NOT_FOUND, "nothing here")

    async def crash(self, call: Call, params: NoParams) -> None:
        raise RuntimeError("a bug")

    async def subscribe(self, call: Call, params: NoParams) -> Reply:
        call.conn.subscribe("ticks")
        return Reply(
            {"ok": True}, (b'{"jsonrpc":"2.0","method":"ticks.snapshot","params":{}}\n',), "ticks"
        )

    async def on_admin(self, call: Call, outcome: str) -> None:
        self.audited.append((call.method, outcome))

    async def on_suppressed(self, peer: Peer, count: int, window_s: float) -> None:
        self.suppressed.append((peer.uid, count))

    def methods(self) -> dict[str, Method]:
        return {
            m.name: m
            for m in (
                Method("hello", self.hello, NoParams),
                Method("echo", self.echo, EchoParams),
                Method("slow", self.slow, SlowParams),
                Method("numbers", self.numbers, NumberParams),
                Method("fail", self.fail, NoParams),
                Method("crash", self.crash, NoParams),
                Method("ticks.subscribe", self.subscribe, NoParams),
                Method("admin.echo", self.echo, EchoParams, admin=True),
            )
        }


@asynccontextmanager
async def serving(
    directory: Path,
    limits: Limits | None = None,
    service: Service | None = None,
    *,
    file_mode: int = 0o600,
) -> AsyncIterator[tuple[Server, Service]]:
    service = service or Service()
    server = Server(
        directory / "s.sock",
        service.methods(),
        admin_gid=lambda: None,
        limits=limits,
        on_admin=service.on_admin,
        recover={
            "ticks": lambda conn: (b'{"jsonrpc":"2.0","method":"ticks.fresh","params":{}}\n',)
        },
        on_suppressed=service.on_suppressed,
    )
    await server.start(file_mode=file_mode)
    try:
        yield server, service
    finally:
        await server.stop()


class Peerless:
    """A raw client: bytes out, parsed lines in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.next_id = 0

    @classmethod
    async def open(cls, server: Server, hello: bool = True) -> Peerless:
        reader, writer = await asyncio.open_unix_connection(server.path, limit=2 * 1024 * 1024)
        client = cls(reader, writer)
        if hello:
            assert "result" in await client.call("hello")
        return client

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        assert raw, "the server closed the connection"
        message: dict[str, Any] = json.loads(raw)
        return message

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        await self.send(protocol.request(self.next_id, method, params or {}))
        return await self.line()

    async def closed(self, timeout: float = 5.0) -> bool:
        return await asyncio.wait_for(self.reader.read(), timeout) == b""

    def close(self) -> None:
        self.writer.close()


class RawSocket:
    """A client that reads only when told to: its socket buffers stay small and fill up."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(str(path))
        self.sock.setblocking(False)
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def line(self, timeout: float = 5.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        while b"\n" not in self.buffer:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout)
            assert chunk, "the server closed the connection"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_garbage_gets_an_error_and_the_connection_stays_usable(short_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(short_dir) as (server, _):
            client = await Peerless.open(server)
            for garbage, code in (
                (b"{not json\n", -32700),
                (b"\xff\xfe\n", -32700),
                (b"[1, 2]\n", -32600),
                (b'"text"\n', -32600),
                (b'{"jsonrpc": "1.0", "id": 1, "method": "echo"}\n', -32600),
                (b'{"jsonrpc": "2.0", "id": [], "method": "echo"}\n', -32600),
                (b'{"jsonrpc": "2.0", "id": 1, "method": 5}\n', -32600),
                (b'{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]}\n', -32602),
            ):
                await client.send(garbage)
                answer = await client.line()
                assert answer["error"]["code"] == code, garbage
            assert (await client.call("echo", {"text": "still here"}))["result"] == "still here"
            client.close()

    run(scenario())


def test_deep_nesting_gets_a_parse_error_not_a_dropped_connection(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with serving(short_dir) as (server, _):
            client = await Peerless.open(server)
            for _ in range(5):
                await client.send(b"[" * 100_000 + b"\n")
                error = (await client.line())["error"]
                assert error["code"] == ErrorCode.PARSE_ERROR
                assert "nesting deeper than 64" in error["message"]
            assert (await client.call("echo", {"text": "still here"}))["result"] == "still here"

    caplog.set_level("WARNING")
    run(scenario())
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert len(caplog.records) <= 4  # three bad inputs, then one count when it closes


def test_huge_numbers_get_invalid_params_naming_the_field(short_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(short_dir) as (server, _):
            client = await Peerless.open(server)
            for line, field in (
                (
                    b'{"jsonrpc":"2.0","id":1,"method":"numbers","params":{"count":'
                    + b"9" * 4000
                    + b"}}\n",
                    "count",
                ),
                (
                    b'{"jsonrpc":"2.0","id":1,"method":"numbers","params":{"either":'
                    + b"9" * 30
                    + b"}}\n",
                    "either",
                ),
                (
                    b'{"jsonrpc":"2.0","id":1,"method":"numbers","params":{"ratio":1e999}}\n',
                    "ratio",
                ),
                (
                    b'{"jsonrpc":"2.0","id":1,"method":"numbers","params":{"ratio":-1e999}}\n',
                    "ratio",
                ),
            ):
                await client.send(line)
                error = (await client.line())["error"]
                assert error["code"] == ErrorCode.INVALID_PARAMS, line[:80]
                assert error["data"] == {"field": field}
            await client.send(
                b'{"jsonrpc":"2.0","id":1,"method":"numbers","params":{"count":'
                + b"9" * (1024 * 1024 - 100)
                + b"}}\n"
            )
            assert (await client.line())["error"]["code"] == ErrorCode.PARSE_ERROR
            assert (await client.call("numbers", {"count": 2**63 - 1}))["result"] == 19

    run(scenario())


def test_errors_name_the_method_or_field(short_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(short_dir) as (server, _):
            fresh = await Peerless.open(server, hello=False)
            assert (await fresh.call("echo"))["error"]["code"] == ErrorCode.HELLO_REQUIRED
            client = await Peerless.open(server)
            unknown = (await client.call("ecoh"))["error"]
            assert unknown["code"] == -32601 and "did you mean 'echo'?" in unknown["message"]
            assert "echo" in unknown["data"]["methods"]
            wrong = (await client.call("echo", {"txt": "a"}))["error"]
            assert wrong["code"] == -32602 and wrong["data"] == {"field": "txt"}
            assert "did you mean 'text'?" in wrong["message"]
            assert (await client.call("fail"))["error"] == {
                "code": ErrorCode.NOT_FOUND,
                "message": "nothing here",
            }
            crash = (await client.call("crash"))["error"]
            assert crash["code"] == -32603 and "a bug" not in crash["message"]
            assert (await client.call("echo", {"text": "ok"}))["result"] == "ok"

    run(scenario())


def test_an_oversized_line_is_refused_and_closed_and_others_are_served(short_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(short_dir) as (server, _):
            bystander = await Peerless.open(server)
            client = await Peerless.open(server)
            client.writer.write(b'{"x": "' + b"a" * (protocol.MAX_MESSAGE_BYTES + 10))
            answer = await client.line()
            assert answer["error"]["code"] == ErrorCode.MESSAGE_TOO_LARGE and answer["id"] is None
            assert await client.closed()
            assert (await bystander.call("echo", {"text": "fine"}))["result"] == "fine"

    run(scenario())


def test_half_a_line_then_silence_times_out_and_no_hello_too(short_dir: Path) -> None:
    async def scenario() -> None:
        limits = Limits(line_timeout_s=0.3, hello_timeout_s=0.5)
        async with serving(short_dir, limits) as (server, _):
            stalled = await Peerless.open(server)
            await stalled.send(b'{"jsonrpc": "2.0", "id": 1, "meth')
            answer = await stalled.line(timeout=3)
            assert answer["error"]["code"] == ErrorCode.READ_TIMEOUT
            assert "newline" in answer["error"]["message"]
            assert await stalled.closed()
            silent = await Peerless.open(server, hello=False)
            assert (await silent.line(timeout=3))["error"]["code"] == ErrorCode.READ_TIMEOUT
            assert await silent.closed()
            idle = await Peerless.open(server)  # greeted and quiet: never timed out
            await asyncio.sleep(0.8)
            assert (await idle.call("echo", {"text": "awake"}))["result"] == "awake"

    run(scenario())


def test_connections_past_the_limit_are_told_why_and_closed(short_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(short_dir, Limits(max_clients=4)) as (server, _):
            opened = [await asyncio.open_unix_connection(server.path) for _ in range(10)]
            refused = served = 0
            for reader, writer in opened:
                try:  # a refused connection is told at once, unasked
                    answer = json.loads(await asyncio.wait_for(reader.readline(), 0.5))
                except TimeoutError:
                    writer.write(protocol.request(1, "hello"))
                    answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
                    assert "result" in answer
                    served += 1
                    continue
                assert answer["error"]["code"] == ErrorCode.TOO_MANY_CONNECTIONS
                assert "at most 4 clients" in answer["error"]["message"]
                assert await asyncio.wait_for(reader.read(), 5) == b""
                refused += 1
            assert (served, refused) == (4, 6)
            opened[0][1].close()
            await asyncio.sleep(0.1)
            again = await Peerless.open(server)  # a slot came free
            assert (await again.call("echo", {"text": "in"}))["result"] == "in"

    run(scenario())


def test_a_flood_of_requests_is_worked_on_a_few_at_a_time(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        limits = Limits(max_inflight=4)
        async with serving(short_dir, limits) as (server, service):
            client = await Peerless.open(server)
            await client.send(
                b"".join(protocol.request(i, "slow", {"seconds": 0.01}) for i in range(200))
            )
            answers = [await client.line() for _ in range(200)]
            assert sorted(a["id"] for a in answers) == list(range(200))
            assert service.most_running == 4

    caplog.set_level("INFO", logger="daemoneye.ipc.connection")
    run(scenario())
    floods = [r.getMessage() for r in caplog.records if "faster than" in r.getMessage()]
    assert floods == [
        f"pid {os.getpid()} uid {os.geteuid()} sends requests faster than they "
        "are answered: working on 4 at a time, reading the rest as those finish"
    ]


def test_a_client_that_sends_but_never_reads_costs_bounded_memory(short_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(short_dir) as (server, _):
            _, writer = await asyncio.open_unix_connection(server.path)
            writer.write(protocol.request(0, "hello"))
            text = "x" * 60_000
            sent = 0
            try:  # the server stops reading: our writes stop draining
                while sent < 3000:
                    writer.write(protocol.request(sent + 1, "echo", {"text": text}))
                    await asyncio.wait_for(writer.drain(), 1.0)
                    sent += 1
            except TimeoutError:
                pass
            assert sent < 3000, "the server kept reading requests nobody collects answers for"
            (conn,) = server.connections
            assert conn.transport is not None
            assert conn.transport.get_write_buffer_size() < 4 * 1024 * 1024
            other = await Peerless.open(server)
            assert (await other.call("echo", {"text": "unaffected"}))["result"] == "unaffected"
            writer.close()

    run(scenario())


def test_a_subscriber_that_does_not_read_is_resynced_and_others_get_everything(
    short_dir: Path,
) -> None:
    async def scenario() -> None:
        limits = Limits(queue_bytes=256 * 1024)
        async with serving(short_dir, limits) as (server, _):
            stalled = RawSocket(server.path)
            await stalled.send(
                protocol.request(1, "hello") + protocol.request(2, "ticks.subscribe")
            )
            assert [(await stalled.line()).get("id") for _ in range(3)] == [1, 2, None]
            reading = await Peerless.open(server)
            assert (await reading.call("ticks.subscribe"))["result"] == {"ok": True}
            assert (await reading.line())["method"] == "ticks.snapshot"
            payload = "z" * 10_000
            received: list[int] = []

            async def read_all() -> None:
                while len(received) < 400:
                    received.append((await reading.line())["params"]["n"])

            reader_task = asyncio.create_task(read_all())
            for n in range(400):  # ~4 MB for each subscriber
                server.publish(
                    "ticks", (protocol.notification("ticks.delta", {"n": n, "pad": payload}),)
                )
                await asyncio.sleep(0)
            await asyncio.wait_for(reader_task, 10)
            assert received == list(range(400))  # the reader lost nothing

            methods: list[str] = []
            while True:  # the stalled client now reads what was kept for it
                message = await stalled.line()
                methods.append(message["method"])
                if message["method"] == "resync":
                    assert message["params"]["topic"] == "ticks"
                    assert message["params"]["dropped"] > 0
                    assert (await stalled.line())["method"] == "ticks.fresh"
                    break
            kept = methods.count("ticks.delta")
            assert 0 < kept < 400
            server.publish("ticks", (protocol.notification("ticks.delta", {"n": 400}),))
            assert (await stalled.line())["params"]["n"] == 400  # back in the stream

    run(scenario())


def test_requests_sent_before_a_half_close_are_answered(short_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(short_dir) as (server, _):
            client = await Peerless.open(server)
            await client.send(protocol.request(5, "echo", {"text": "bye"}))
            client.writer.write_eof()
            assert (await client.line())["result"] == "bye"
            assert await client.closed()

    run(scenario())


def test_admin_methods_are_audited(short_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(short_dir) as (server, service):
            client = await Peerless.open(server)  # the test runs as the daemon's uid: admin
            assert (await client.call("hello"))["result"] == {"role": ROLE_ADMIN}
            assert (await client.call("admin.echo", {"text": "x"}))["result"] == "x"
            assert service.audited == [("admin.echo", "done")]

    run(scenario())


# -- peers and roles ----------------------------------------------------------------------------


def test_peer_credentials_come_from_the_kernel() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        peer = peer_of(left)
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.geteuid(), os.getegid())
    assert set(peer.groups) == set(os.getgroups())


def test_roles() -> None:
    def peer(uid: int, gid: int = 100, groups: tuple[int, ...] = ()) -> Peer:
        return Peer(pid=1, uid=uid, gid=gid, groups=groups)

    assert role_of(peer(0), daemon_uid=999, admin_gid=None) == ROLE_ADMIN
    assert role_of(peer(999), daemon_uid=999, admin_gid=None) == ROLE_ADMIN
    assert role_of(peer(1000), daemon_uid=999, admin_gid=None) == ROLE_READER
    assert role_of(peer(1000, groups=(10, 50)), daemon_uid=0, admin_gid=50) == ROLE_ADMIN
    assert role_of(peer(1000, gid=50), daemon_uid=0, admin_gid=50) == ROLE_ADMIN
    assert role_of(peer(1000, groups=(10,)), daemon_uid=0, admin_gid=50) == ROLE_READER


# -- the socket file ----------------------------------------------------------------------------


def test_system_mode_shares_the_socket_with_the_daemoneye_group_only_when_it_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from daemoneye.daemon import ipc_runtime
    from daemoneye.paths import Mode

    monkeypatch.setattr(ipc_runtime, "group_id", lambda name: 4242 if name == "daemoneye" else None)
    assert ipc_runtime.socket_permissions(Mode.SYSTEM) == (0o660, 4242)
    assert ipc_runtime.socket_permissions(Mode.USER) == (0o600, None)
    monkeypatch.setattr(ipc_runtime, "group_id", lambda name: None)
    assert ipc_runtime.socket_permissions(Mode.SYSTEM) == (0o600, None)


def test_socket_modes(short_dir: Path) -> None:
    private = bind_unix_socket(short_dir / "a.sock", file_mode=0o600, group=None)
    private.close()
    assert stat.S_IMODE(os.stat(short_dir / "a.sock").st_mode) == 0o600
    group = grp.getgrnam("nogroup").gr_gid if os.geteuid() == 0 else os.getegid()
    shared = bind_unix_socket(short_dir / "b.sock", file_mode=0o660, group=group)
    shared.close()
    st = os.stat(short_dir / "b.sock")
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == group


def test_a_stale_socket_is_replaced_and_a_live_one_is_not(short_dir: Path) -> None:
    path = short_dir / "d.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed daemon's socket
    live = bind_unix_socket(path, file_mode=0o600, group=None)
    try:
        with pytest.raises(
            DaemonError,
            match=rf"another daemon \(pid {os.getpid()}\) is "
            "already listening",
        ):
            bind_unix_socket(path, file_mode=0o600, group=None)
    finally:
        live.close()


def test_the_socket_path_is_checked_not_truncated(short_dir: Path) -> None:
    not_a_socket = short_dir / "file"
    not_a_socket.write_text("precious")
    with pytest.raises(DaemonError, match="is not a socket"):
        bind_unix_socket(not_a_socket, file_mode=0o600, group=None)
    assert not_a_socket.read_text() == "precious"
    deep = short_dir / ("d" * 60) / ("e" * 60) / "daemoneye.sock"
    with pytest.raises(DaemonError, match=r"more than the 107 bytes"):
        bind_unix_socket(deep, file_mode=0o600, group=None)
    assert not deep.parent.exists()
    open_dir = short_dir / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(DaemonError, match="writable by everyone"):
        bind_unix_socket(open_dir / "s.sock", file_mode=0o600, group=None)


# -- locking out, flooding the audit log, memory (issue 19) ---------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as other uids")


def _as_other_uid(path: str, uid: int, count: int, admin_calls: int) -> dict[str, Any]:
    """In a forked child that has become `uid`: open `count` connections, say hello on each,
    note what each got (a role or an error), optionally send admin calls on the first."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    results: list[str] = []
    socks: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        # a refused connection is answered and closed at once: its answer waits to be read
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(protocol.request(1, "hello", {}))
        answer = json.loads(sock.makefile("rb").readline())
        results.append(
            answer["error"]["message"] if "error" in answer else answer["result"]["role"]
        )
        socks.append(sock)
    codes: list[int] = []
    if admin_calls:
        socks[0].sendall(protocol.request(2, "admin.echo", {"text": "x"}) * admin_calls)
        reader = socks[0].makefile("rb")
        codes = [json.loads(reader.readline())["error"]["code"] for _ in range(admin_calls)]
    _HELD.extend(socks)  # open until the child exits
    return {"results": results, "codes": codes}


_HELD: list[socket.socket] = []


class OtherUid:
    """A forked child that holds connections as another uid until `stop()`."""

    _release_fds: list[int] = []  # noqa: RUF012  (each child must close the others' fds)

    def __init__(self, pid: int, release_fd: int) -> None:
        self.pid = pid
        self.release_fd = release_fd

    @classmethod
    async def start(
        cls, path: Path, uid: int, count: int, admin_calls: int = 0
    ) -> tuple[OtherUid, dict[str, Any]]:
        report_r, report_w = os.pipe()
        release_r, release_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no asyncio, no pytest; report, hold, exit
            status = 0
            try:
                os.close(report_r)
                os.close(release_w)
                for fd in cls._release_fds:
                    os.close(fd)
                report = _as_other_uid(str(path), uid, count, admin_calls)
                os.write(report_w, json.dumps(report).encode() + b"\n")
                os.read(release_r, 1)
            except BaseException as exc:  # the parent fails the test with the reason
                status = 1
                failure = {"error": f"{type(exc).__name__}: {exc}"}
                with contextlib.suppress(OSError):
                    os.write(report_w, json.dumps(failure).encode() + b"\n")
            finally:
                os._exit(status)
        os.close(report_w)
        os.close(release_r)
        cls._release_fds.append(release_w)
        loop = asyncio.get_running_loop()

        def read_report() -> bytes:
            with os.fdopen(report_r, "rb") as report:
                return report.readline()

        line = await asyncio.wait_for(loop.run_in_executor(None, read_report), 30)
        assert line, "the client as another uid failed without a word"
        summary: dict[str, Any] = json.loads(line)
        assert "error" not in summary, f"the client as another uid failed: {summary['error']}"
        return cls(pid, release_w), summary

    async def stop(self) -> None:
        self._release_fds.remove(self.release_fd)
        os.close(self.release_fd)
        loop = asyncio.get_running_loop()
        _, status = await loop.run_in_executor(None, os.waitpid, self.pid, 0)
        assert status == 0


def test_slot_policy_reserves_admin_slots_and_caps_each_reader_uid() -> None:
    limits = SlotLimits(max_clients=10, admin_reserved=3, max_clients_per_uid=4)

    def why(total: int, of_uid: int, admin: bool) -> str | None:
        return refusal(limits, total=total, of_uid=of_uid, admin=admin, uid=1000)

    assert why(0, 0, False) is None
    assert "daemon.max_clients_per_uid" in (why(3, 4, False) or "")
    assert "kept for admins" in (why(7, 0, False) or "")
    assert why(7, 0, True) is None and why(9, 9, True) is None  # admins: no per-uid cap
    assert "daemon.max_clients" in (why(10, 0, True) or "")


@needs_root
def test_readers_cannot_lock_root_out(short_dir: Path) -> None:
    """Readers fill every slot they may take; root still connects and administers."""

    async def scenario() -> None:
        short_dir.chmod(0o755)
        limits = Limits(max_clients=6, admin_reserved=2, max_clients_per_uid=3)
        async with serving(short_dir, limits, file_mode=0o666) as (server, service):
            first, got = await OtherUid.start(server.path, 65534, count=5)
            assert got["results"][:3] == [ROLE_READER] * 3
            for message in got["results"][3:]:
                assert "at most 3 per user (daemon.max_clients_per_uid)" in message
            second, got = await OtherUid.start(server.path, 65533, count=3)
            assert got["results"][0] == ROLE_READER  # the 4th and last reader slot
            for message in got["results"][1:]:
                assert "kept for admins" in message and "daemon.admin_reserved_clients" in message
            assert len(server.connections) == 4
            root = await Peerless.open(server)
            assert (await root.call("admin.echo", {"text": "still in"}))["result"] == "still in"
            assert ("admin.echo", "done") in service.audited
            await Peerless.open(server)
            reader, _ = await asyncio.open_unix_connection(server.path)
            full = json.loads(await asyncio.wait_for(reader.readline(), 5))
            assert full["error"]["code"] == ErrorCode.TOO_MANY_CONNECTIONS
            assert "daemon.max_clients" in full["error"]["message"]
            await first.stop()
            await second.stop()

    run(scenario())


def test_idle_connections_are_closed_and_reading_subscribers_are_not(short_dir: Path) -> None:
    async def scenario() -> None:
        limits = Limits(idle_timeout_s=0.3, queue_bytes=256 * 1024)
        async with serving(short_dir, limits) as (server, _):
            idle = await Peerless.open(server)
            stalled = RawSocket(server.path)  # subscribes, then never reads
            await stalled.send(
                protocol.request(1, "hello") + protocol.request(2, "ticks.subscribe")
            )
            reading = await Peerless.open(server)
            assert (await reading.call("ticks.subscribe"))["result"] == {"ok": True}
            assert (await reading.line())["method"] == "ticks.snapshot"
            n = 0

            async def tick() -> None:
                nonlocal n
                n += 1
                server.publish(
                    "ticks", (protocol.notification("ticks.delta", {"n": n, "pad": "p" * 20_000}),)
                )
                assert (await reading.line())["params"]["n"] == n

            told = asyncio.create_task(idle.line(timeout=30))
            while not told.done():
                await tick()
                await asyncio.sleep(0.02)
            error = told.result()["error"]
            assert error["code"] == ErrorCode.IDLE_TIMEOUT
            assert "daemon.idle_timeout" in error["message"]
            assert await idle.closed()
            # keep the reading subscriber going until the stalled one is gone too
            while len(server.connections) > 1:
                await tick()
                await asyncio.sleep(0.02)
            for _ in range(20):  # well past the timeout again: reading keeps it open
                await tick()
                await asyncio.sleep(0.05)
            assert (await reading.call("echo", {"text": "alive"}))["result"] == "alive"

    run(scenario())


def test_refused_call_budget_is_a_token_bucket_per_uid() -> None:
    now = [0.0]
    budget = RefusalBudget(rate=10.0, burst=20, clock=lambda: now[0])
    assert [budget.allow(1000) for _ in range(25)] == [True] * 20 + [False] * 5
    assert budget.allow(1001)  # another uid has its own bucket
    now[0] += 0.1  # one token back
    assert budget.allow(1000) and not budget.allow(1000)
    assert budget.take_suppressed(1000) == 6 and budget.take_suppressed(1000) == 0
    now[0] += 100.0
    budget.take_suppressed(1001)  # full buckets with nothing pending are forgotten
    assert len(budget) == 0


@needs_root
def test_refused_admin_calls_are_audited_at_a_bounded_rate(short_dir: Path) -> None:
    async def scenario() -> None:
        short_dir.chmod(0o755)
        # A rate so low that only the burst is audited, however slow the machine is.
        limits = Limits(
            refused_audit_rate=0.001,
            refused_audit_burst=5,
            refused_audit_window_s=0.2,
            strike_rate=1e6,
            strike_burst=10**6,
        )
        async with serving(short_dir, limits, file_mode=0o666) as (server, service):
            client, got = await OtherUid.start(server.path, 65534, count=1, admin_calls=300)
            assert got["codes"] == [ErrorCode.FORBIDDEN] * 300  # told every time

            def refused() -> list[str]:
                return [o for _, o in service.audited if o.startswith("refused")]

            for _ in range(500):  # until every call is either audited or summarized
                if len(refused()) + sum(count for _, count in service.suppressed) >= 300:
                    break
                await asyncio.sleep(0.02)
            assert len(refused()) == 5
            assert service.suppressed and {uid for uid, _ in service.suppressed} == {65534}
            assert sum(count for _, count in service.suppressed) == 295
            await client.stop()

    run(scenario())


def test_the_total_queued_for_all_clients_is_bounded(short_dir: Path) -> None:
    async def scenario() -> None:
        limits = Limits(queue_bytes=1024 * 1024, queue_total_bytes=2 * 1024 * 1024)
        async with serving(short_dir, limits) as (server, _):
            trims: list[int] = []

            def trim(pad: int) -> int:
                trims.append(pad)
                return 1

            server.budget = QueueBudget(limits.queue_total_bytes, trim_after=1024 * 1024, trim=trim)
            stalled = [RawSocket(server.path) for _ in range(8)]
            for client in stalled:
                await client.send(
                    protocol.request(1, "hello") + protocol.request(2, "ticks.subscribe")
                )
                assert [(await client.line()).get("id") for _ in range(3)] == [1, 2, None]
            most = 0
            for n in range(300):  # 3 MB for each client, 24 MB in all
                server.publish(
                    "ticks", (protocol.notification("ticks.delta", {"n": n, "pad": "q" * 10_000}),)
                )
                most = max(most, server.budget.total)
                await asyncio.sleep(0)
            assert most <= limits.queue_total_bytes + 8 * 11_000
            assert sum(conn.outbox_bytes for conn in server.connections) == server.budget.total
            for client in stalled:  # each one is told, once it reads again
                while (message := await client.line())["method"] != "resync":
                    pass
                assert message["params"]["dropped"] > 0
                assert (await client.line())["method"] == "ticks.fresh"
                client.sock.close()
            while server.connections:
                await asyncio.sleep(0.01)
            assert server.budget.total == 0
            assert trims  # the heap was trimmed after the release

    run(scenario())


def test_strikes_are_free_up_to_the_burst_then_push_the_uids_next_read_out() -> None:
    now = [100.0]
    budget = StrikeBudget(rate=2.0, burst=3, clock=lambda: now[0])
    assert [budget.strike(1000) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.strike(1000) == pytest.approx(0.5)
    assert budget.strike(1000) == pytest.approx(1.0)  # a second connection waits behind it
    assert budget.strike(2000) == 0.0  # another user has its own budget
    now[0] += 10.0  # rested: the bucket refills and the debt is paid
    assert budget.strike(1000) == 0.0


def test_a_reader_that_keeps_being_refused_is_no_longer_read_and_others_are_answered(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Malformed lines past the uid's strike budget stop the connection's reading (its parse
    cost bounded) while another connection of the same user is still answered."""

    async def scenario() -> None:
        limits = Limits(strike_rate=0.001, strike_burst=5)  # past the burst: a 1,000 s pause
        async with serving(short_dir, limits) as (server, _):
            monkeypatch.setattr(server, "role_for", lambda peer: "reader")
            flooder = RawSocket(server.path)
            await flooder.send(protocol.request(1, "hello") + b"not json\n" * 30)
            answers = [await flooder.line() for _ in range(7)]  # parse errors come first
            assert sum("result" in answer for answer in answers) == 1
            codes = [answer["error"]["code"] for answer in answers if "error" in answer]
            assert codes == [ErrorCode.PARSE_ERROR] * 6  # the burst, and the strike past it
            with pytest.raises(TimeoutError):
                await flooder.line(timeout=0.5)  # nothing more is parsed while it waits
            bystander = RawSocket(server.path)
            await bystander.send(protocol.request(1, "hello"))
            assert (await bystander.line())["result"]["role"] == "reader"

    run(scenario())


def test_strike_debt_is_capped_so_a_storm_does_not_stall_its_user_for_hours() -> None:
    now = [0.0]
    budget = StrikeBudget(rate=0.001, burst=1, clock=lambda: now[0])
    delays = [budget.strike(1000) for _ in range(100)]
    assert delays[0] == 0.0 and max(delays) <= MAX_DEBT_S


def test_calls_before_hello_are_strikes_and_long_method_names_are_not_echoed(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        limits = Limits(strike_rate=0.001, strike_burst=3)
        async with serving(short_dir, limits) as (server, _):
            monkeypatch.setattr(server, "role_for", lambda peer: "reader")
            client = RawSocket(server.path)
            await client.send(protocol.request(1, "x" * 100_000, {}))
            unknown = await client.line()
            assert unknown["error"]["code"] == ErrorCode.METHOD_NOT_FOUND
            assert len(unknown["error"]["message"]) < 200  # not echoed, no suggestion
            await client.send(b"".join(protocol.request(n, "echo", {}) for n in range(2, 42)))
            codes: list[int] = []
            with contextlib.suppress(TimeoutError):
                while True:
                    codes.append((await client.line(timeout=0.5))["error"]["code"])
            assert set(codes) == {ErrorCode.HELLO_REQUIRED}
            # The burst, and what was already in flight (at most max_inflight), then a pause.
            assert 2 <= len(codes) <= 2 + limits.max_inflight < 40

    run(scenario())


def test_thousands_of_lines_sent_ahead_of_their_answers_close_the_connection(
    short_dir: Path,
) -> None:
    """Each waiting line is an object: 256 KiB of `{}` lines would be 87,000 of them per
    connection. Past MAX_BACKLOG_LINES the client is told why and the connection closed."""

    async def scenario() -> None:
        async with serving(short_dir) as (server, _):
            client = RawSocket(server.path)
            with contextlib.suppress(ConnectionError):
                await client.send(protocol.request(1, "hello") + b"{}\n" * 100_000)
            answers = []
            with contextlib.suppress(AssertionError, TimeoutError, ConnectionError):
                while True:
                    answers.append(await client.line(timeout=2.0))
            codes = [a["error"]["code"] for a in answers if "error" in a]
            assert codes[-1] == ErrorCode.TOO_MANY_REQUESTS
            assert len(answers) < MAX_BACKLOG_LINES
            bystander = await Peerless.open(server)
            assert (await bystander.call("echo", {"text": "ok"}))["result"] == "ok"

    run(scenario())
