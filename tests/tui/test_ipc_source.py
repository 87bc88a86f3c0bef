"""The dashboard against a real daemon: the launcher starts a private one, `IpcSource` streams
from it, and the dashboard shows this very test process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemoneye.ipc.client import DaemonClient
from daemoneye.models import DaemonStatus
from daemoneye.tui.ipc_source import IpcSource
from daemoneye.tui.launcher import PrivateDaemon, daemon_answers
from daemoneye.tui.logic.keys import parse_row_key
from daemoneye.tui.screens.processes import ProcessesScreen
from daemoneye.tui.source import Connected, ProcessesReset, SourceError
from tests.daemon_env import isolated_env
from tests.tui.conftest import AppFactory
from tests.tui.helpers import settle


@pytest.fixture
def private_daemon(tmp_path: Path) -> Iterator[PrivateDaemon]:
    """A user-mode daemon started the way `daemoneye` starts one, in a temp directory (a
    short path: Unix socket paths are limited to 107 bytes)."""
    env = isolated_env(tmp_path, mode=None)
    daemon = PrivateDaemon.start(None, env=env)
    yield daemon
    daemon.stop()


def test_the_private_daemon_streams_through_ipc_source(private_daemon: PrivateDaemon) -> None:
    async def scenario() -> None:
        source = IpcSource(DaemonClient(private_daemon.socket, reconnect=True))
        events = source.events()
        first = await asyncio.wait_for(anext(events), 20)
        assert isinstance(first, Connected) and first.hello.role == "admin"
        reset = await asyncio.wait_for(anext(events), 20)
        assert isinstance(reset, ProcessesReset)
        assert os.getpid() in {record.pid for record in reset.records}
        assert isinstance(await source.health(), DaemonStatus)
        result = await source.query_run(f"SELECT pid FROM live_processes WHERE pid = {os.getpid()}")
        assert result.rows == ((os.getpid(),),)
        with pytest.raises(SourceError):
            await source.query_run("DELETE FROM processes")
        await source.close()

    asyncio.run(scenario())
    private_daemon.stop()
    assert private_daemon.process.returncode is not None
    assert not daemon_answers(private_daemon.socket), "stopped, and its socket is gone"


@pytest.mark.anyio
async def test_the_dashboard_shows_this_process_from_a_real_daemon(
    private_daemon: PrivateDaemon, make_app: AppFactory
) -> None:
    source: Any = IpcSource(DaemonClient(private_daemon.socket, reconnect=True))
    async with make_app(source).run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            await settle(pilot, rounds=1)
            screen = pilot.app.screen
            if isinstance(screen, ProcessesScreen) and screen.table.row_count:
                break
        screen = pilot.app.screen
        assert isinstance(screen, ProcessesScreen)
        assert os.getpid() in {parse_row_key(key).pid for key in screen.table.shown_keys}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_dashboard_that_dies_takes_its_private_daemon_with_it(tmp_path: Path) -> None:
    """An SSH session that drops kills the dashboard without a chance to clean up (SIGHUP,
    kill -9): the daemon it started for the user must not stay behind."""
    import signal
    import subprocess
    import sys
    import time

    env = isolated_env(tmp_path, mode=None)
    dashboard = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from daemoneye.tui.launcher import PrivateDaemon\n"
            "daemon = PrivateDaemon.start(None)\n"
            "print(daemon.process.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert dashboard.stdout is not None
        daemon_pid = int(dashboard.stdout.readline())
        os.kill(daemon_pid, 0)  # running
    finally:
        dashboard.send_signal(signal.SIGKILL)
        dashboard.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(daemon_pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{daemon_pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break  # exited; only waiting to be reaped by init
        time.sleep(0.1)
    else:
        os.kill(daemon_pid, signal.SIGKILL)
        raise AssertionError("the private daemon outlived the dashboard that started it")
