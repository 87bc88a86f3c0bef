"""Process context through the whole daemon: a shell whose stdin and stdout are a TCP
connection and a process preloading a library from /dev/shm raise the built-in alerts, the
context reaches `processes show` and `query`, and no variable off the allow-list is stored."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.conftest import DaemonHarness, wait_for


@pytest.fixture
def connection() -> Iterator[socket.socket]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()):
            accepted, _ = server.accept()
            with accepted:
                yield accepted


def alerts_of(harness: DaemonHarness, rule_id: str, pid: int) -> list[dict]:  # type: ignore[type-arg]
    out = harness.cli("-o", "json", "alerts", "list", "--rule", rule_id, check=True).stdout
    return [a for a in json.loads(out) if a["pid"] == pid]


def test_context_reaches_rules_show_and_query(
    harness: DaemonHarness, connection: socket.socket
) -> None:
    harness.start()
    secret = f"secret-{uuid.uuid4().hex}"
    env = {"PATH": "/usr/bin:/bin", "SSH_CONNECTION": "203.0.113.7 50022 10.0.0.1 22"}
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 60; :"],
        stdin=connection.fileno(),
        stdout=connection.fileno(),
        stderr=subprocess.DEVNULL,
        env={**env, "TOKEN": secret},
    )
    preload = subprocess.Popen(
        ["sleep", "60"],
        env={**env, "LD_PRELOAD": "", "TOKEN": secret},
        stdin=subprocess.DEVNULL,
    )
    # a preload from /dev/shm, set only after exec by the loader's reading: start it through
    # env(1) so the loader of sleep never sees a library that does not exist
    shm = subprocess.Popen(
        ["env", "LD_PRELOAD=/dev/shm/.x/libhax.so", "sleep", "60"],
        env={**env, "TOKEN": secret},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        (alert,) = wait_for(
            lambda: alerts_of(harness, "reverse-shell-socket-stdio", shell.pid), "the shell alert"
        )
        assert alert["severity"] == "critical" and "socket:tcp 127.0.0.1:" in alert["title"]
        wait_for(
            lambda: alerts_of(harness, "library-preloaded-from-writable-path", shm.pid),
            "the preload alert",
        )
        shown = json.loads(harness.cli("-o", "json", "processes", "show", str(shell.pid)).stdout)
        (record,) = shown if isinstance(shown, list) else [shown]
        assert record["stdin"].startswith("socket:tcp 127.0.0.1:")
        assert (record["ssh_client"], record["ssh_source"]) == ("203.0.113.7 50022", "process")
        assert json.loads(record["environment"]) == {
            "SSH_CONNECTION": "203.0.113.7 50022 10.0.0.1 22"
        }
        assert record["pid_ns"] and record["cgroup"]
        # (not the command lines: this very query's holds the secret)
        rows = harness.query(
            f"SELECT count(*) AS n FROM processes WHERE environment LIKE '%{secret}%'"
        )
        assert rows == [{"n": 0}], "a variable off the allow-list was stored"
        assert not alerts_of(harness, "library-preloaded-from-writable-path", preload.pid)
    finally:
        for child in (shell, preload, shm):
            child.kill()
            child.wait()
    assert os.path.exists(harness.db)
