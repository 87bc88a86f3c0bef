"""A real daemon under hostile and careless clients: garbage frames, a subscriber that stops
reading, more connections than it serves, and a peer that is not allowed to administer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemoneye.ipc import protocol
from daemoneye.ipc.client import DaemonClient, ProcessesSnapshot, Resync
from daemoneye.models import ProcessesDelta
from tests.integration.conftest import wait_for
from tests.integration.ipc_support import (  # noqa: F401
    IpcHarness,
    RawClient,
    admin_entries,
    ipc_fixture,
    run_as,
)

METHODS = [*protocol.READ_METHODS, *protocol.ADMIN_METHODS, *protocol.SUBSCRIPTION_METHODS]
# Everything but process.signal: a random pid with a random start time would be refused
# anyway, but a garbage test has no business sending signals at all.
SAFE_METHODS = [m for m in METHODS if m != "process.signal"] + ["nope", "hello.world", ""]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]) | json_values,
        "id": st.integers() | st.text(max_size=8) | json_values,
        "method": st.sampled_from(SAFE_METHODS) | json_values,
        "params": st.fixed_dictionaries(
            {},
            optional={
                "pid": json_values | st.integers(1, 40000),
                "sql": st.text(max_size=60),
                "filter": st.text(max_size=20),
                "id": json_values,
                "max_rows": json_values,
                "after": json_values,
                "protocol_version": json_values,
            },
        )
        | json_values,
    },
)
frames = (
    st.binary(max_size=400)
    | json_values.map(lambda v: json.dumps(v).encode())
    | request_like.map(lambda r: json.dumps(r).encode())
    | request_like.map(lambda r: json.dumps(r).encode()[: max(1, len(json.dumps(r)) // 2)])
)


def assert_json_rpc(message: dict[str, Any]) -> None:
    assert message.get("jsonrpc") == "2.0"
    if "method" in message:  # a notification from a subscription the garbage made
        assert isinstance(message["method"], str) and "id" not in message
        return
    assert "id" in message and ("result" in message) != ("error" in message)
    if "error" in message:
        assert isinstance(message["error"]["code"], int)
        assert isinstance(message["error"]["message"], str) and message["error"]["message"]


def test_garbage_frames_never_hurt_the_daemon_or_other_clients(ipc: IpcHarness) -> None:
    ipc.start()
    bystander = RawClient(ipc.socket)
    assert "result" in (bystander.call(1, "hello") or {})
    outcomes = {"usable": 0, "closed": 0}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frame=frames)
    def check(frame: bytes) -> None:
        client = RawClient(ipc.socket)
        try:
            assert "result" in (client.call(0, "hello") or {})
            client.send(frame + b"\n" + protocol.request("probe", "hello"))
            while True:
                message = client.line()
                if message is None:  # closed: only after telling why
                    outcomes["closed"] += 1
                    break
                assert_json_rpc(message)
                if message.get("id") == "probe":
                    assert message["result"]["role"] == "admin"
                    outcomes["usable"] += 1
                    break
        finally:
            client.close()
        answer = bystander.call(2, "health")
        assert answer is not None and "result" in answer

    check()
    assert outcomes["usable"] > 100
    assert ipc.process is not None and ipc.process.poll() is None
    assert f"bad input from pid {os.getpid()} uid {os.geteuid()}" in ipc.log()
    assert "Traceback" not in ipc.log()


def test_an_oversized_message_is_refused_and_the_connection_closed(ipc: IpcHarness) -> None:
    ipc.start()
    client = RawClient(ipc.socket)
    client.call(1, "hello")
    # The daemon may close before we finish sending: its answer is still there to read.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        client.send(
            b'{"jsonrpc":"2.0","id":2,"method":"hello","params":{"client":"'
            + b"A" * (protocol.MAX_MESSAGE_BYTES + 100)
            + b'"}}\n'
        )
    answer = client.line()
    assert answer is not None
    assert answer["error"]["code"] == protocol.ErrorCode.MESSAGE_TOO_LARGE
    assert client.line() is None
    assert ipc.run(lambda c: c.health()).clients == 1


def churn(count: int, size: int) -> list[subprocess.Popen[bytes]]:
    """Short-lived processes with long command lines: big `added` entries in deltas (GNU
    sleep adds up its arguments, so zeros pad the command line)."""
    return [subprocess.Popen(["sleep", "0.4", *(["0"] * (size // 2))]) for _ in range(count)]


def test_a_subscriber_that_stops_reading_gets_a_resync_and_slows_nobody(ipc: IpcHarness) -> None:
    # Above one tick of the churn below (a reader that keeps up is never resynced), far below
    # the ~5 MB the stalled client is offered.
    ipc.env["DAEMONEYE_DAEMON__CLIENT_QUEUE"] = "1M"
    ipc.start(interval="0.1")
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(str(ipc.socket))
    stalled.sendall(protocol.request(1, "hello") + protocol.request(2, "processes.subscribe"))

    async def follow(client: DaemonClient) -> tuple[int, int]:
        await client.subscribe("processes")
        events = client.events()
        await anext(events)  # Connected
        snapshot = await anext(events)
        assert isinstance(snapshot, ProcessesSnapshot)
        seq, deltas = snapshot.seq, 0
        children: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(12):  # ~20 processes of ~20 KB each, 12 times: ~5 MB of deltas
                children += await asyncio.to_thread(churn, 20, 20_000)
                deadline = asyncio.get_running_loop().time() + 0.5
                while asyncio.get_running_loop().time() < deadline:
                    try:
                        event = await asyncio.wait_for(anext(events), 0.5)
                    except TimeoutError:
                        break
                    assert not isinstance(event, Resync), "the reading client was resynced"
                    assert isinstance(event, ProcessesDelta)
                    assert event.seq in (seq, seq + 1)  # parts of one tick share a seq
                    seq, deltas = event.seq, deltas + 1
        finally:
            for child in children:
                await asyncio.to_thread(child.wait)
        return seq, deltas

    last_seq, deltas = ipc.run(follow)
    assert deltas > 10

    # Now the stalled client reads what the daemon kept for it: a resync, then a snapshot.
    stalled.settimeout(20)
    reader = stalled.makefile("rb")
    methods: list[str] = []
    while True:
        line = reader.readline()
        assert line, "the daemon closed the stalled client instead of resyncing it"
        message = json.loads(line)
        methods.append(message.get("method", "answer"))
        if message.get("method") == "resync":
            assert message["params"]["topic"] == "processes" and message["params"]["dropped"] > 0
            following = json.loads(reader.readline())
            assert following["method"] == "processes.snapshot"
            assert following["params"]["seq"] >= last_seq - 1
            break
    assert methods[:3] == ["answer", "answer", "processes.snapshot"]
    stalled.close()
    assert "is not reading its processes notifications" in ipc.log()


def test_200_connections_at_once_get_128_served_and_the_rest_a_reason(ipc: IpcHarness) -> None:
    ipc.start()
    clients = [RawClient(ipc.socket, timeout=20) for _ in range(200)]
    try:
        for client in clients:
            # Already refused and closed: the refusal is waiting to be read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                client.send(protocol.request(1, "hello"))
        served = refused = 0
        for client in clients:
            answer = client.line()
            if answer is not None and "result" in answer:
                served += 1
                continue
            assert answer is not None, "closed without a word"
            assert answer["error"]["code"] == protocol.ErrorCode.TOO_MANY_CONNECTIONS
            assert "at most 128 clients" in answer["error"]["message"]
            assert client.line() is None
            refused += 1
        assert (served, refused) == (128, 72)
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: ipc.run(lambda c: c.health()).clients == 1, "the slots to be free")
    assert "refused connection: refused pid" in ipc.log()
    assert "serves at most 128 clients at once (daemon.max_clients)" in ipc.log()


CLIENT_CODE = """
import asyncio, json, sys
from daemoneye.ipc.client import DaemonClient, RpcError

async def main():
    out = {}
    async with DaemonClient(sys.argv[1] if len(sys.argv) > 1 else PATH) as client:
        out["role"] = client.hello.role
        out["uid"] = client.hello.peer_uid
        out["processes"] = len(await client.processes_list())
        for name, call in (("signal", client.process_signal(99999, 1.0, "KILL")),
                           ("ack", client.alert_ack(10**9)),
                           ("reload", client.rules_reload())):
            try:
                await call
                out[name] = "done"
            except RpcError as exc:
                out[name] = [exc.code, exc.message]
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
def test_another_user_reads_but_may_not_administer_unless_in_the_admin_group(
    ipc: IpcHarness,
) -> None:
    ipc.start()
    # The test makes the user-mode socket reachable for uid 65534; the daemon made it 0600.
    ipc.root.chmod(0o755)
    ipc.socket.chmod(0o666)
    code = CLIENT_CODE.replace("PATH", repr(str(ipc.socket)))
    nobody = run_as(65534, 65534, code, ipc.env)
    assert nobody["role"] == "reader" and nobody["uid"] == 65534
    assert nobody["processes"] > 10
    for method in ("signal", "ack", "reload"):
        code_number, message = nobody[method]
        assert code_number == protocol.ErrorCode.FORBIDDEN
        assert "permission denied" in message and "uid 65534" in message
    log = ipc.log()
    assert "refused admin method: process.signal for pid" in log and "uid 65534" in log

    refusals = [e for e in admin_entries(ipc.db) if e[1].startswith("uid 65534 pid ")]
    assert [kind for kind, _, _ in refusals] == [
        "admin.process.signal",
        "admin.alerts.ack",
        "admin.rules.reload",
    ]
    assert all(detail["outcome"] == "refused: not an admin" for _, _, detail in refusals)

    config = ipc.root / "config" / "daemoneye" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[daemon]\nadmin_group = "nogroup"\n')
    assert ipc.process is not None
    ipc.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in ipc.log(), "the reload")
    member = run_as(65534, 65534, code, ipc.env)
    assert member["role"] == "admin"
    assert member["signal"][0] == protocol.ErrorCode.STALE_PROCESS  # past the door
    assert member["ack"][0] == protocol.ErrorCode.NOT_FOUND
    assert member["reload"] == "done"


def test_deep_nesting_and_huge_numbers_get_proper_errors_from_a_real_daemon(
    ipc: IpcHarness,
) -> None:
    ipc.start()
    client = RawClient(ipc.socket)
    assert "result" in (client.call(1, "hello") or {})
    for _ in range(3):
        client.send(b"[" * 100_000 + b"\n")
        answer = client.line()
        assert answer is not None and answer["error"]["code"] == protocol.ErrorCode.PARSE_ERROR
        assert "nesting deeper than" in answer["error"]["message"]
    for method, params, field in (
        ("processes.get", {"pid": 2**64}, "pid"),
        ("processes.get", {"pid": 1, "start_time": 10**400}, "start_time"),
        ("alerts.get", {"id": -(2**80)}, "id"),
        ("alerts.list", {"limit": 2**63}, "limit"),
    ):
        answer = client.call(2, method, params)
        assert answer is not None, method
        assert answer["error"]["code"] == protocol.ErrorCode.INVALID_PARAMS, (method, answer)
        assert answer["error"]["data"] == {"field": field}
    client.send(b'{"jsonrpc":"2.0","id":3,"method":"processes.get","params":{"pid":1e999}}\n')
    answer = client.line()
    assert answer is not None and answer["error"]["code"] == protocol.ErrorCode.INVALID_PARAMS
    assert "result" in (client.call(4, "health") or {})
    assert "Traceback" not in ipc.log() and "RecursionError" not in ipc.log()
