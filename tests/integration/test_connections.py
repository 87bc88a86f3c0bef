"""Connections end to end: a real daemon maps a real process's sockets, `connections` and
`processes port:` show them over IPC and from the store, and the built-in rule alerts on a
web server's child that connects out."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import DaemonHarness, wait_for

# A "web server" (Python exec'd through a link named nginx, so that is its name from the
# start) whose child, Python through a link named sh, connects to ADDR:PORT.
SERVICE = """
import subprocess, sys, time
child = subprocess.Popen([sys.argv[1], "-c", sys.argv[2], sys.argv[3], sys.argv[4]])
print(child.pid, flush=True)
time.sleep(120)
"""
CHILD = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
time.sleep(120)
"""


def _outward_address() -> str | None:
    """An address of this machine that is not loopback (the rule ignores loopback)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    address = _outward_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address to connect to")
    server = socket.socket()
    server.bind((address, 0))
    server.listen()
    yield server
    server.close()


def _rows(harness: DaemonHarness, *args: str) -> list[dict[str, Any]]:
    out = harness.cli("-o", "json", *args, check=True).stdout
    rows: list[dict[str, Any]] = json.loads(out) if out.strip() else []
    return rows


def test_connections_are_listed_filtered_and_alerted(
    harness: DaemonHarness, listener: socket.socket
) -> None:
    address, port = listener.getsockname()
    harness.env["DAEMONEYE_COLLECTOR__CONNECTIONS_INTERVAL"] = "0.2"
    harness.start()
    nginx, sh = harness.root / "nginx", harness.root / "sh"
    nginx.symlink_to(sys.executable)
    sh.symlink_to(sys.executable)
    service = subprocess.Popen(
        [str(nginx), "-c", SERVICE, str(sh), CHILD, address, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    child_pid = 0
    try:
        assert service.stdout is not None
        child_pid = int(service.stdout.readline())
        # (the name comes from the live process table, which may lag the connections by a tick)
        held = wait_for(
            lambda: [
                row
                for row in _rows(harness, "connections", f"pid:{child_pid}", "dir:outbound")
                if row["name"] == "sh"
            ],
            "the child's outbound connection",
        )
        assert [(r["remote_address"], r["remote_port"], r["protocol"]) for r in held] == [
            (address, port, "tcp")
        ]
        assert held[0]["name"] == "sh" and held[0]["state"] == "ESTABLISHED"
        # the process filter knows which processes hold such a connection
        holders = _rows(harness, "processes", f"remote:{address}", f"port:{port}")
        assert [r["pid"] for r in holders] == [child_pid]
        assert _rows(harness, "processes", f"pid:{service.pid}", f"port:{port}") == []
        # the rule saw the connection and the service above it
        alerts = wait_for(
            lambda: [
                a
                for a in _rows(
                    harness, "alerts", "list", "--rule", "service-child-outbound-connection"
                )
                if a["pid"] in (child_pid, service.pid)
            ],
            "the alert on the service's child",
        )
        assert [a["pid"] for a in alerts] == [child_pid]
        # SQL sees the same rows
        (row,) = harness.query(
            f"SELECT direction, remote_scope FROM live_connections WHERE pid = {child_pid}"
        )
        assert row["direction"] == "outbound"
        assert row["remote_scope"] in ("private", "public")
        harness.stop()
        # no daemon: the CLI reads the store, which has the socket as the daemon last saw it
        stored = _rows(harness, "connections", f"port:{port}", "dir:outbound")
        assert [(r["pid"], r["name"]) for r in stored] == [(child_pid, "sh")]
        holders = _rows(harness, "processes", f"port:{port}")  # this test listens on it
        assert sorted(r["pid"] for r in holders) == sorted([child_pid, os.getpid()])
    finally:
        if child_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)
        service.kill()
        service.wait()
    bad = harness.cli("connections", "prot:tcp")
    assert bad.returncode == 2 and "did you mean 'proto'" in bad.stderr
