"""`--host ssh://…` against a real sshd the test starts on 127.0.0.1 with throw-away keys: the
CLI and the client reach a real daemon through the user's ssh and the remote `bridge`, the
peer's rights are the SSH user's, and each way it can fail is a clear error."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.config.remote_values import parse_ssh_target
from daemoneye.ipc.client import Connected, DaemonClient, Disconnected
from daemoneye.ipc.ssh import SshRoute, ssh_route
from tests.integration.conftest import DaemonHarness
from tests.sshd_server import SSHD, Sshd, start_sshd, stop_sshd

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="sshd logs users in only when run as root"),
    pytest.mark.skipif(
        not Path(SSHD).exists() or shutil.which("ssh") is None,
        reason="openssh-server/ssh not installed (.ci/run installs openssh-server)",
    ),
]
# What sshd runs for the bridge: this interpreter's daemoneye (not on a login PATH here).
REMOTE_COMMAND = f"{sys.executable} -m daemoneye"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = start_sshd(tmp_path / "ssh")
    yield server
    stop_sshd(server)


def _remote_cli(
    harness: DaemonHarness, sshd: Sshd, *args: str, command: str = REMOTE_COMMAND
) -> subprocess.CompletedProcess[str]:
    """`daemoneye --host … ARGS` from a directory with no local daemon or store of its own."""
    elsewhere = harness.root / "elsewhere"
    env = {
        **harness.env,
        "XDG_RUNTIME_DIR": str(elsewhere),
        "XDG_STATE_HOME": str(elsewhere),
        "DAEMONEYE_REMOTE__SSH": str(sshd.ssh),
        "DAEMONEYE_REMOTE__COMMAND": command,
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "daemoneye",
            "--host",
            sshd.url(),
            "--socket",
            str(harness.root / "daemoneye.sock"),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )


def _route(harness: DaemonHarness, sshd: Sshd, command: str = REMOTE_COMMAND) -> SshRoute:
    return ssh_route(
        parse_ssh_target(sshd.url()),
        ssh=(str(sshd.ssh),),
        remote_command=tuple(command.split()),
        remote_socket=str(harness.root / "daemoneye.sock"),
    )


def test_cli_commands_run_against_the_remote_daemon(harness: DaemonHarness, sshd: Sshd) -> None:
    harness.start()
    result = _remote_cli(harness, sshd, "-o", "json", "health")
    assert result.returncode == 0, result.stderr
    (health,) = json.loads(result.stdout)
    assert health["ticks"] >= 1
    result = _remote_cli(harness, sshd, "-o", "json", "processes", f"pid:{os.getpid()}")
    assert result.returncode == 0, result.stderr
    assert [row["pid"] for row in json.loads(result.stdout)] == [os.getpid()]
    # Commands that read a store when no daemon runs ask that host's daemon, never a store here
    # (this side has none: "elsewhere" is empty).
    for args in (("alerts", "list"), ("audit", "verify"), ("alerts", "show", "999999")):
        result = _remote_cli(harness, sshd, *args)
        assert "no store" not in result.stderr and "directly" not in result.stderr, args
        assert result.returncode == (1 if args[1] == "show" else 0), (args, result.stderr)
    assert "intact" in _remote_cli(harness, sshd, "audit", "verify").stdout


def test_the_peer_is_the_ssh_user(harness: DaemonHarness, sshd: Sshd) -> None:
    """SO_PEERCRED on the remote side is the bridge, running as the SSH user (root here: an
    admin); the daemon's answer says so."""
    harness.start()

    async def hello() -> tuple[str, str]:
        client = DaemonClient("unused", ssh=_route(harness, sshd), connect_timeout=30)
        try:
            answer = await client.connect()
        finally:
            await client.close()
        return answer.role, answer.host

    role, host = asyncio.run(hello())
    assert role == "admin"
    assert host == socket.gethostname()


def test_no_remote_daemon_is_a_clear_error_and_no_local_fallback(
    harness: DaemonHarness, sshd: Sshd
) -> None:
    result = _remote_cli(harness, sshd, "processes")
    assert result.returncode != 0
    assert "no DaemonEye daemon answers on 127.0.0.1" in result.stderr
    assert "reading the store" not in result.stderr  # this host's store is not that host's


def test_missing_daemoneye_on_the_remote_host_is_named(harness: DaemonHarness, sshd: Sshd) -> None:
    result = _remote_cli(harness, sshd, "health", command="/nonexistent/daemoneye-cli")
    assert result.returncode != 0
    assert "'/nonexistent/daemoneye-cli' is not installed on 127.0.0.1" in result.stderr


def test_a_refused_login_says_there_is_no_password_prompt(
    harness: DaemonHarness, tmp_path: Path
) -> None:
    locked = start_sshd(tmp_path / "locked", authorize=False)
    try:
        result = _remote_cli(harness, locked, "health")
    finally:
        locked.process.terminate()
        locked.process.wait(10)
    assert result.returncode != 0
    assert "ssh could not log in to root@127.0.0.1" in result.stderr
    assert "BatchMode=yes" in result.stderr


def test_a_host_that_refuses_connections(harness: DaemonHarness, sshd: Sshd) -> None:
    sshd.process.terminate()
    sshd.process.wait(10)
    result = _remote_cli(harness, sshd, "health")
    assert result.returncode != 0
    assert f"ssh to ssh://root@127.0.0.1:{sshd.port} failed" in result.stderr
    assert "refused" in result.stderr.lower()


def test_a_lost_ssh_connection_reconnects(harness: DaemonHarness, sshd: Sshd) -> None:
    harness.start()

    async def scenario() -> list[str]:
        client = DaemonClient(
            "unused",
            ssh=_route(harness, sshd),
            reconnect=True,
            connect_timeout=30,
            backoff_initial=0.1,
            backoff_max=0.5,
        )
        seen: list[str] = []
        try:
            await client.connect()
            events = client.events()
            first = await asyncio.wait_for(events.__anext__(), 30)
            seen.append(type(first).__name__)
            stream = client._ssh_stream
            assert stream is not None
            stream.process.kill()  # the ssh connection dies under the client
            while len(seen) < 3:
                event = await asyncio.wait_for(events.__anext__(), 60)
                if isinstance(event, Disconnected | Connected):
                    seen.append(type(event).__name__)
        finally:
            await client.close()
        return seen

    assert asyncio.run(scenario()) == ["Connected", "Disconnected", "Connected"]


def test_host_urls_are_parsed_strictly() -> None:
    assert parse_ssh_target("ssh://ops@web1.example.com:2222") == parse_ssh_target(
        "ssh://ops@web1.example.com:2222/"
    )
    target = parse_ssh_target("ssh://[::1]:22")
    assert (target.host, target.port) == ("[::1]", 22)
    for bad in (
        "web1",
        "ssh://-oProxyCommand=touch%20x",
        "ssh://ops@-oProxyCommand=x",
        "ssh://-ops@host",
        "ssh://host:0",
        "ssh://host:99999",
        "ssh://ho st",
        "ssh://",
    ):
        with pytest.raises(ValueError):
            parse_ssh_target(bad)


def test_the_remote_command_is_one_quoted_word_list() -> None:
    route = ssh_route(
        parse_ssh_target("ssh://ops@web1:2222"),
        remote_command=("/opt/daemon eye/bin/daemoneye-cli",),
        remote_socket="/run/x y.sock",
    )
    assert route.argv[:8] == (
        "ssh",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-p",
        "2222",
    )
    assert route.argv[8:10] == ("--", "ops@web1")
    assert route.argv[10] == "'/opt/daemon eye/bin/daemoneye-cli' bridge --socket '/run/x y.sock'"


def test_a_remote_daemon_of_another_protocol_version_says_so(
    harness: DaemonHarness, sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemoneye.ipc import protocol
    from daemoneye.ipc.client import RpcError

    harness.start()
    monkeypatch.setattr(protocol, "PROTOCOL_VERSION", protocol.PROTOCOL_VERSION + 1)

    async def hello() -> None:
        client = DaemonClient("unused", ssh=_route(harness, sshd), connect_timeout=30)
        try:
            await client.connect()
        finally:
            await client.close()

    with pytest.raises(RpcError, match=r"protocol version \d+ is not supported; this daemon"):
        asyncio.run(hello())
