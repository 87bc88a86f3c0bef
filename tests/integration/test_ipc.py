"""The IPC socket of a real daemon, driven by real clients: every method, live subscriptions
while real children start and end, instance-exact signals, the CLI through the daemon (and
without it), and the socket file's life."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from daemoneye import __version__
from daemoneye.daemon.live_table import RECORD_FIELDS
from daemoneye.ipc.client import (
    Connected,
    ConnectionLost,
    DaemonClient,
    DaemonUnavailable,
    ErrorCode,
    ProcessesSnapshot,
    RpcError,
    RulesChanged,
    apply_delta,
)
from daemoneye.models import Alert, DaemonStatus, ProcessesDelta, ProcessKey, ProcessRecord
from tests.integration.conftest import DEADLINE_S, steer_pid_reuse, wait_for
from tests.integration.ipc_support import (  # noqa: F401
    IpcHarness,
    admin_entries,
    ipc_fixture,
)

T = TypeVar("T")
Sleeper = Callable[..., subprocess.Popen[bytes]]
RULE_ID = "ipc-test-marker"


def marker() -> str:
    return f"daemoneye-ipc-{uuid.uuid4().hex[:12]}"


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def expect_error(call: Awaitable[Any], code: int, words: str = "") -> RpcError:
    with pytest.raises(RpcError) as caught:
        await call
    assert caught.value.code == code, caught.value
    assert words in caught.value.message
    return caught.value


async def live_child(client: DaemonClient, child: subprocess.Popen[bytes]) -> ProcessRecord:
    async def probe() -> ProcessRecord | None:
        found = [r for r in await client.processes_list(f"pid:{child.pid}")]
        return found[0] if found else None

    return await eventually(probe, f"pid {child.pid} in processes.list")


def test_every_method_round_trips(ipc: IpcHarness, sleeper: Sleeper) -> None:
    ipc.start()
    mark = marker()
    child = sleeper(mark)

    async def scenario(client: DaemonClient) -> None:
        hello = client.hello
        assert hello is not None
        assert (hello.protocol_version, hello.daemon_version) == (1, __version__)
        assert (hello.role, hello.peer_uid, hello.peer_pid) == ("admin", os.geteuid(), os.getpid())
        assert hello.host == socket.gethostname()

        record = await live_child(client, child)
        assert record.cmdline[-1] == mark and record.ppid == os.getpid()
        assert record.exe == os.path.realpath(sys.executable) and record.ended_at is None
        assert [r.pid for r in await client.processes_list(f"cmd:{mark}")] == [child.pid]
        everything = await client.processes_list()
        assert len({r.key for r in everything}) == len(everything) > 10

        detail = await client.process_get(child.pid)
        assert detail.live and detail.process.key == record.key and detail.instances is None
        assert detail.ancestry[0].pid == os.getpid() and detail.children == ()
        exact = await client.process_get(child.pid, record.start_time, history=True)
        assert exact.process.key == record.key and exact.instances == 1
        mine = await client.process_get(os.getpid())
        assert record.key in {c.key for c in mine.children}
        await expect_error(
            client.process_get(child.pid, record.start_time + 1000),
            ErrorCode.NOT_FOUND,
            f"pid {child.pid}",
        )
        await expect_error(client.process_get(2**22 + 7), ErrorCode.NOT_FOUND)

        rows = await client.query_run(
            f"SELECT pid, cmdline FROM live_processes WHERE pid = {child.pid}"
        )
        assert rows.columns == ("pid", "cmdline") and rows.rows[0][0] == child.pid
        blob = await client.query_run("SELECT x'00ff' AS b, 1.5 AS f, NULL AS n")
        assert blob.rows == (("00ff", 1.5, None),)
        capped = await client.query_run("SELECT pid FROM processes", max_rows=2)
        assert len(capped.rows) == 2 and capped.truncated
        await expect_error(
            client.query_run("DELETE FROM processes"), ErrorCode.QUERY_REFUSED, "refused"
        )
        await expect_error(
            client.query_run("SELECT 1", max_rows=-1), ErrorCode.INVALID_PARAMS, "max_rows"
        )

        status = await client.health()
        assert isinstance(status, DaemonStatus) and status.clients >= 1
        assert status.engine is not None and status.engine.rules_active > 0
        assert status.report.processes > 10
        assert status.report.daemon_pid == ipc.process.pid  # type: ignore[union-attr]

        assert isinstance(await client.alerts_list(), list)
        assert {s.rule.id for s in await client.rules_list()}  # the built-in pack
        for call in (
            client.alert_get(10**9),
            client.alert_ack(10**9),
            client.alert_close(10**9),
            client.rule_enable("no-such-rule"),
            client.rule_disable("no-such-rule"),
        ):
            await expect_error(call, ErrorCode.NOT_FOUND)
        await expect_error(
            client.call("alerts.list", {"state": "gone"}), ErrorCode.INVALID_PARAMS, "state"
        )
        for params, field in (
            ({"order": "oldest"}, "order"),
            ({"order": "seen", "before_id": 5}, "before_id"),
            ({"offset": 3}, "offset"),
            ({"order": "seen", "offset": -1}, "offset"),
            ({"rule": "x" * 300}, "rule"),
        ):
            await expect_error(client.call("alerts.list", params), ErrorCode.INVALID_PARAMS, field)
        await expect_error(client.alert_show(10**9), ErrorCode.NOT_FOUND)

        signalled = await client.process_signal(child.pid, record.start_time, "TERM")
        assert (signalled.pid, signalled.signal) == (child.pid, "SIGTERM")
        assert signalled.method in ("pidfd", "kill")
        await asyncio.to_thread(child.wait, 10)
        assert child.returncode == -signal.SIGTERM

        # every admin request, refused or done, is in the audit chain with the peer
        audited = await asyncio.to_thread(admin_entries, ipc.db)
        kinds = [kind for kind, _, _ in audited]
        assert kinds[-1] == "admin.process.signal" and "admin.alerts.ack" in kinds
        _, who, entry = audited[-1]
        assert who == f"uid {os.geteuid()} pid {os.getpid()}"
        assert entry["outcome"] == "done" and entry["params"]["pid"] == child.pid
        assert {k: w for k, w, _ in audited}["admin.alerts.ack"] == who
        verified = await client.audit_verify()
        assert verified.ok and verified.entries >= len(kinds)

        for topic in ("alerts", "rules", "health"):
            assert (await client.subscribe(topic)).available
        assert await client.unsubscribe("alerts") is True
        assert await client.unsubscribe("alerts") is False
        async for event in client.events():
            if isinstance(event, DaemonStatus):
                assert event.report.ticks >= status.report.ticks
                break

    ipc.run(scenario)


def test_subscribers_see_a_child_start_change_and_end(ipc: IpcHarness, sleeper: Sleeper) -> None:
    ipc.start(interval="0.1")

    async def scenario(client: DaemonClient) -> None:
        result = await client.subscribe("processes")
        events = client.events()
        assert isinstance(await anext(events), Connected)
        snapshot = await anext(events)
        assert isinstance(snapshot, ProcessesSnapshot) and snapshot.seq == result.seq
        table = {r.key: r for r in snapshot.processes}
        assert len(table) > 10 and os.getpid() in {k.pid for k in table}

        mark = marker()
        child = await asyncio.to_thread(sleeper, mark)
        seq = snapshot.seq
        state = "waiting for the child"
        child_key: ProcessKey | None = None
        async with asyncio.timeout(DEADLINE_S):
            async for event in events:
                assert isinstance(event, ProcessesDelta), event
                assert event.seq == seq + 1  # no gap, no repeat
                seq = event.seq
                for change in event.changed:
                    names = [name for name, _ in change.fields]
                    assert names and set(names) <= set(RECORD_FIELDS) - {"pid", "start_time"}
                    before = table[ProcessKey(change.pid, change.start_time)]
                    assert all(getattr(before, n) != v for n, v in change.fields)
                apply_delta(table, event)
                if state == "waiting for the child":
                    added = [r for r in event.added if r.pid == child.pid]
                    if added:
                        assert added[0].cmdline[-1] == mark
                        child_key = added[0].key
                        state = "waiting for the end"
                        child.kill()
                        await asyncio.to_thread(child.wait)  # reaped: no zombie left
                elif child_key in event.removed:
                    break
        assert child_key is not None and child_key not in table
        assert table.keys() >= {r.key for r in snapshot.processes if r.pid == os.getpid()}

    ipc.run(scenario)


@pytest.mark.skipif(os.geteuid() != 0, reason="steering pid reuse needs root (ns_last_pid)")
def test_a_reused_pid_is_never_signalled(ipc: IpcHarness, sleeper: Sleeper) -> None:
    ipc.start(interval="0.1")
    first = sleeper(marker())

    async def seen(client: DaemonClient) -> ProcessRecord:
        return await live_child(client, first)

    record = ipc.run(seen)
    first.kill()
    first.wait()
    second = steer_pid_reuse(first.pid, lambda: sleeper(marker()))

    async def signal_old(client: DaemonClient) -> None:
        await expect_error(
            client.process_signal(record.pid, record.start_time, "KILL"),
            ErrorCode.STALE_PROCESS,
            "now belongs to another process",
        )

    ipc.run(signal_old)
    time.sleep(0.2)
    assert second.poll() is None, "the newcomer holding the old pid was signalled"


def test_the_cli_asks_the_daemon_and_reads_the_store_without_it(
    ipc: IpcHarness, sleeper: Sleeper
) -> None:
    ipc.start()
    mark = marker()
    child = sleeper(mark)
    wait_for(
        lambda: str(child.pid) in ipc.cli("processes", f"pid:{child.pid}").stdout,
        "the child in `daemoneye processes`",
    )
    health = ipc.cli("health")
    assert health.returncode == 0, health.stderr
    assert "connected over IPC" in health.stdout and "sink backlog" in health.stdout
    assert health.stderr == ""
    shown = ipc.cli("processes", "show", str(child.pid), check=True)
    assert mark in shown.stdout and "ANCESTRY" in shown.stdout and shown.stderr == ""
    refused = ipc.cli("query", "DROP TABLE processes")
    assert refused.returncode == 2 and refused.stderr.startswith("daemoneye: ")
    assert "reading the store" not in refused.stderr  # the daemon refused it
    missing = ipc.cli("processes", "show", str(2**22 + 7))
    assert missing.returncode == 1 and "no process instance" in missing.stderr

    assert ipc.stop() == 0
    assert not ipc.socket.exists()  # removed on shutdown
    listed = ipc.cli("processes", f"pid:{child.pid}")
    assert listed.returncode == 0 and str(child.pid) in listed.stdout
    assert "no daemon is running" in listed.stderr and "reading the store" in listed.stderr
    stopped = ipc.cli("health")
    assert stopped.returncode == 1 and "the daemon stopped" in stopped.stdout


def test_the_socket_is_private_in_user_mode(ipc: IpcHarness) -> None:
    ipc.start()
    st = os.stat(ipc.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()


def test_a_stale_socket_is_replaced(ipc: IpcHarness) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(ipc.socket))
    stale.close()  # what a kill -9'd daemon leaves behind
    ipc.start()
    assert "removing the stale socket" in ipc.log()
    assert ipc.run(lambda client: client.health()).clients == 1


def test_a_second_daemon_on_a_live_socket_refuses_to_start(ipc: IpcHarness) -> None:
    ipc.start()
    assert ipc.process is not None
    second = subprocess.run(
        [sys.executable, "-m", "daemoneye", "--db", str(ipc.root / "other.db"), "daemon"],
        env=ipc.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert second.returncode == 1
    assert (
        f"another daemon (pid {ipc.process.pid}) is already listening on {ipc.socket}"
        in second.stderr
    )
    assert "Traceback" not in second.stderr
    assert ipc.run(lambda client: client.health()).report.daemon_pid == ipc.process.pid


def test_a_socket_path_past_the_limit_is_an_error_not_a_truncation(ipc: IpcHarness) -> None:
    long_path = ipc.root / ("x" * 60) / ("y" * 60) / "daemoneye.sock"
    daemon = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemoneye",
            "--db",
            str(ipc.db),
            "--socket",
            str(long_path),
            "daemon",
        ],
        env=ipc.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert daemon.returncode == 1
    assert "more than the 107 bytes" in daemon.stderr and str(long_path) in daemon.stderr
    assert not long_path.parent.exists()
    truncated = str(long_path).encode()[:107]
    assert not Path(truncated.decode()).exists()

    async def connect() -> None:
        with pytest.raises(DaemonUnavailable, match="longer than the 107 bytes"):
            await DaemonClient(long_path).connect()

    asyncio.run(connect())


def test_a_reconnecting_client_reports_the_gap_and_resubscribes(ipc: IpcHarness) -> None:
    ipc.start()

    async def scenario() -> list[str]:
        seen: list[str] = []
        client = ipc.client(reconnect=True, backoff_initial=0.1, backoff_max=0.5)
        await client.connect()
        await client.subscribe("processes")
        events = client.events()
        try:
            async with asyncio.timeout(DEADLINE_S * 2):
                async for event in events:
                    seen.append(type(event).__name__)
                    if isinstance(event, ProcessesSnapshot) and seen.count("Connected") == 1:
                        await asyncio.to_thread(ipc.stop)  # the daemon goes away…
                    elif type(event).__name__ == "Disconnected":
                        with pytest.raises(ConnectionLost):
                            await client.health()
                        await asyncio.to_thread(ipc.start)  # …and comes back
                    elif isinstance(event, ProcessesSnapshot):
                        assert event.processes
                        assert (await client.health()).clients == 1
                        break
        finally:
            await client.close()
        return seen

    seen = asyncio.run(scenario())
    first_gap = seen.index("Disconnected")
    assert seen[:2] == ["Connected", "ProcessesSnapshot"]
    after = [name for name in seen[first_gap:] if name != "ProcessesDelta"]
    assert after == ["Disconnected", "Connected", "ProcessesSnapshot"]


def test_a_consumer_that_falls_behind_gets_resync_then_a_fresh_snapshot(ipc: IpcHarness) -> None:
    ipc.start(interval="0.1")

    async def scenario(client: DaemonClient) -> None:
        client.max_events = 5
        await client.subscribe("health")
        await client.subscribe("processes")
        await asyncio.sleep(2.0)  # ~20 health reports: more than the queue holds
        events = client.events()
        names: list[str] = []
        async with asyncio.timeout(DEADLINE_S):
            async for event in events:
                names.append(type(event).__name__)
                if isinstance(event, ProcessesSnapshot) and "Resync" in names:
                    break
        resyncs = [i for i, name in enumerate(names) if name == "Resync"]
        assert resyncs and names.index("ProcessesSnapshot", resyncs[0]) > resyncs[0]
        assert (await client.health()).clients == 1  # calls kept working throughout

    ipc.run(scenario)


def test_alerts_and_rules_over_ipc(ipc: IpcHarness, sleeper: Sleeper) -> None:
    mark = marker()
    rules_d = ipc.root / "config" / "daemoneye" / "rules.d"
    rules_d.mkdir(parents=True)
    (rules_d / "ipc-test.toml").write_text(f"""
[[rule]]
id = "{RULE_ID}"
name = "IPC test marker"
description = "A process whose command line carries this test's marker."
severity = "high"
title = "marked: {{name}}"
query = '''
SELECT pid, start_time, name FROM processes
WHERE cmdline LIKE '%{mark}%' AND ended_at IS NULL
'''
""")
    ipc.start(interval="0.2")

    async def scenario(client: DaemonClient) -> None:
        assert (await client.subscribe("rules")).available
        assert (await client.subscribe("alerts")).available
        events = client.events()
        assert isinstance(await anext(events), Connected)
        initial = await anext(events)
        assert isinstance(initial, RulesChanged)
        assert RULE_ID in {s.rule.id for s in initial.rules}

        child = await asyncio.to_thread(sleeper, mark)
        async with asyncio.timeout(DEADLINE_S):  # other processes of this host may alert too
            raised = await anext(events)
            while not (isinstance(raised, Alert) and raised.rule_id == RULE_ID):
                raised = await anext(events)
        assert (raised.pid, raised.state, raised.severity) == (child.pid, "open", "high")
        assert raised.title == "marked: python" or raised.title.startswith("marked: ")
        assert (await client.alert_get(raised.id)).id == raised.id
        assert raised.id in {a.id for a in await client.alerts_list(state="open")}
        assert raised.id in {a.id for a in await client.alerts_list(severity="high")}

        acked = await client.alert_ack(raised.id)
        assert acked.state == "acknowledged"
        assert acked.state_changed_by == f"uid {os.geteuid()} pid {os.getpid()}"
        async with asyncio.timeout(DEADLINE_S):  # repeats of the still running child may come
            async for event in events:  # first: count + 1, still open
                if not (isinstance(event, Alert) and event.id == raised.id):
                    continue
                if event.state == "acknowledged":
                    break
                assert event.state == "open" and event.count > raised.count
        await expect_error(client.alert_ack(raised.id), ErrorCode.CONFLICT, "acknowledged")
        assert (await client.alert_close(raised.id)).state == "closed"

        disabled = await client.rule_disable(RULE_ID)
        assert not disabled.rule.enabled and disabled.hits >= 1
        async with asyncio.timeout(DEADLINE_S):
            async for event in events:
                if isinstance(event, RulesChanged):
                    changed = {s.rule.id: s.rule.enabled for s in event.rules}
                    assert changed[RULE_ID] is False
                    break
        assert (await client.rule_enable(RULE_ID)).rule.enabled
        reload = await client.rules_reload()
        assert reload.active >= 1 and isinstance(reload.accepted, bool)
        status = await client.health()
        assert status.engine is not None and status.engine.rules_active >= 1

    ipc.run(scenario)
    kinds = [kind for kind, _, _ in admin_entries(ipc.db)]
    for kind in (
        "admin.alerts.ack",
        "admin.alerts.close",
        "admin.rules.disable",
        "admin.rules.enable",
        "admin.rules.reload",
    ):
        assert kind in kinds
