"""The daemon speaks systemd's readiness protocol to a real datagram socket: `systemctl reload`
(Type=notify-reload, or ExecReload plus RELOADING=1) waits for `READY=1` after `RELOADING=1`."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import DaemonHarness, wait_for


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


def _received(sock: socket.socket, into: list[dict[str, str]]) -> list[dict[str, str]]:
    """Every message sent so far, each as its KEY=VALUE lines."""
    while True:
        try:
            payload = sock.recv(4096)
        except BlockingIOError:
            return into
        into.append(dict(line.split("=", 1) for line in payload.decode().splitlines()))


def _reload_and_collect(
    harness: DaemonHarness, sock: socket.socket, messages: list[dict[str, str]]
) -> list[dict[str, str]]:
    wait_for(lambda: any("READY" in m for m in _received(sock, messages)), "READY=1 at start")
    seen = len(messages)
    assert harness.process is not None
    harness.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: any("READY" in m for m in _received(sock, messages)[seen:]),
        "READY=1 after the reload",
    )
    return messages[seen:]


def test_reload_ends_with_ready(harness: DaemonHarness, notify_socket: socket.socket) -> None:
    harness.env["NOTIFY_SOCKET"] = notify_socket.getsockname()
    harness.start()
    messages: list[dict[str, str]] = []
    after = _reload_and_collect(harness, notify_socket, messages)
    reloading = next(i for i, m in enumerate(after) if m.get("RELOADING") == "1")
    ready = next(i for i, m in enumerate(after) if m.get("READY") == "1")
    assert reloading < ready
    assert after[reloading]["MONOTONIC_USEC"].isdigit()
    assert after[ready]["STATUS"] == "configuration reloaded"
    assert harness.stop() == 0


def test_refused_reload_also_ends_with_ready(
    harness: DaemonHarness, notify_socket: socket.socket
) -> None:
    harness.env["NOTIFY_SOCKET"] = notify_socket.getsockname()
    harness.start()
    config = Path(harness.env["XDG_CONFIG_HOME"]) / "daemoneye" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[collector\n")
    messages: list[dict[str, str]] = []
    after = _reload_and_collect(harness, notify_socket, messages)
    assert [m["STATUS"] for m in after if "READY" in m] == ["configuration reload refused"]
    assert harness.stop() == 0
