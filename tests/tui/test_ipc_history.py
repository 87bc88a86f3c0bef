"""The dashboard's history requests against a real daemon: a timeline page, the process set a
moment ago, the activity strip's counts, and a moment outside the history refused with the
window (history.timeline, history.processes_at, history.activity over IPC)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.ipc.client import DaemonClient
from daemoneye.tui.ipc_source import IpcSource
from daemoneye.tui.launcher import PrivateDaemon
from daemoneye.tui.source import SourceError
from tests.daemon_env import isolated_env


@pytest.fixture
def private_daemon(tmp_path: Path) -> Iterator[PrivateDaemon]:
    daemon = PrivateDaemon.start(None, env=isolated_env(tmp_path, mode=None))
    yield daemon
    daemon.stop()


def test_history_over_ipc(private_daemon: PrivateDaemon) -> None:
    async def scenario() -> None:
        source = IpcSource(DaemonClient(private_daemon.socket, reconnect=True))
        events = source.events()
        await asyncio.wait_for(anext(events), 90)  # connected
        await asyncio.wait_for(anext(events), 90)  # the live set: the store has written it
        me = os.getpid()
        page = await source.timeline(until=None, filter_text=f"pid:{me}", limit=10)
        assert page.reach.oldest is not None
        assert page.events and all(e.pid == me for e in page.events)
        then = await source.processes_at(page.reach.newest or time.time())  # seen by the scan
        assert me in {record.pid for record in then}
        # a process started inside the window, so the strip has a start to count whatever
        # else the machine does meanwhile
        child = subprocess.Popen(["sleep", "30"])
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                found = await source.timeline(until=None, filter_text=f"pid:{child.pid}", limit=1)
                if found.events:
                    break
                await asyncio.sleep(0.2)
        finally:
            child.kill()
            child.wait()
        now = time.time()
        activity = await source.activity(page.reach.oldest - 1, now, 4)
        assert len(activity.started) == 4 and sum(activity.started) >= 1
        assert activity.bucket_s == pytest.approx((now - page.reach.oldest + 1) / 4)
        with pytest.raises(SourceError, match="before the store's history"):
            await source.processes_at(page.reach.oldest - 3600)
        with pytest.raises(SourceError, match="in the future"):
            await source.processes_at(now + 3600)
        with pytest.raises(SourceError, match="buckets"):
            await source.activity(0.0, now, 0)
        with pytest.raises(SourceError, match="events carry no cpu"):
            await source.timeline(until=None, filter_text="cpu>5")
        await source.close()

    asyncio.run(scenario())
