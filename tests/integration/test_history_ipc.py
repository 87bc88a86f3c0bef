"""History over IPC on a real daemon: a child that has ended is in the process set of a moment
it was running and not of one after, its exec and exit are on the timeline, and moments the
history cannot answer are refused with what it covers."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable

import pytest

from daemoneye.ipc.client import DaemonClient, ErrorCode, RpcError
from tests.integration.conftest import DEADLINE_S
from tests.integration.ipc_support import IpcHarness, ipc_fixture  # noqa: F401

Sleeper = Callable[..., subprocess.Popen[bytes]]


def test_the_past_as_the_present_and_its_timeline(ipc: IpcHarness, sleeper: Sleeper) -> None:
    ipc.start()
    mark = f"daemoneye-history-{uuid.uuid4().hex[:12]}"
    child = sleeper(mark)

    async def scenario(client: DaemonClient) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not await client.processes_list(f"pid:{child.pid}"):
            assert time.monotonic() < deadline, "the child never showed up"
            await asyncio.sleep(0.05)
        during = time.time()
        child.kill()
        child.wait()
        while [r for r in await client.processes_list(f"pid:{child.pid}") if r.ended_at is None]:
            assert time.monotonic() < deadline, "the child's end was never seen"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the exit is written with the tick
        after = time.time()

        then = await client.processes_at(during, f"cmd:{mark}")
        assert [r.pid for r in then] == [child.pid]
        assert then[0].ended_at is not None and then[0].ended_at > during
        assert await client.processes_at(after, f"cmd:{mark}") == []

        page = await client.timeline(during - 60, kinds=("start", "exec", "exit"))
        mine = [e for e in page.events if e.pid == child.pid]
        assert {e.kind for e in mine} >= {"exit"}
        assert [e.ts for e in page.events] == sorted((e.ts for e in page.events), reverse=True)
        assert page.reach.oldest is not None and page.reach.oldest <= during

        with pytest.raises(RpcError) as future:
            await client.processes_at(time.time() + 3600)
        assert future.value.code == ErrorCode.INVALID_PARAMS and "future" in future.value.message
        with pytest.raises(RpcError) as ancient:
            await client.processes_at(86_400.0)
        assert "before the store's history" in ancient.value.message
        assert ancient.value.data == {"field": "at"}
        with pytest.raises(RpcError) as kind:
            await client.timeline(0.0, kinds=("spawn",))
        assert kind.value.code == ErrorCode.INVALID_PARAMS and "'spawn'" in kind.value.message

        exits = await client.timeline(during - 60, filter_text=f"event:exit pid:{child.pid}")
        assert [(e.kind, e.pid) for e in exits.events] == [("exit", child.pid)]
        with pytest.raises(RpcError) as bad_filter:
            await client.timeline(0.0, filter_text="rss:>1G")
        assert bad_filter.value.data == {"field": "filter"}
        health = await client.health()
        assert health.history is not None and health.history.oldest is not None
        assert health.history.oldest <= during and health.history.instances >= 1

    ipc.run(scenario)
