"""The agent and its collector process: either one killed with SIGKILL, the other copes.

kill -9 of procmond: the agent notices (EOF on the pair), starts a new one, whose full first
scan reconciles the store — a process that started meanwhile is added, one that ended is
ended — and `health` counts the restart, the gap and the execs possibly missed. As root the
new procmond comes from the launcher with the first one's capabilities, so kernel events work
again. kill -9 of the agent: procmond and the launcher exit too (PR_SET_PDEATHSIG, and EOF).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import DaemonHarness, Sleeper, wait_for


def health(harness: DaemonHarness) -> dict[str, Any]:
    out = harness.cli("-o", "json", "health").stdout
    report: dict[str, Any] = json.loads(out)[0] if out.strip() else {}
    return report


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants_of(pid: int) -> list[int]:
    """Children and grandchildren (procmond is the launcher's child when started as root)."""
    try:
        children = children_of(pid)
    except OSError:
        return []
    return [grand for child in children for grand in (child, *descendants_of(child))]


def procmond_of(harness: DaemonHarness, *, besides: int = 0) -> int:
    assert harness.process is not None
    agent = harness.process.pid
    return wait_for(
        lambda: next(
            (
                p
                for p in descendants_of(agent)
                if p != besides and "daemoneye.procmond" in cmdline(p) and not gone(p)
            ),
            None,
        ),
        "the agent's procmond",
    )


def status_of(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_procmond_is_a_child_of_the_agent_and_reported_in_health(harness: DaemonHarness) -> None:
    harness.start()
    pid = procmond_of(harness)
    report = wait_for(lambda: (h := health(harness)).get("procmond_pid") == pid and h, "health")
    assert report["procmond_restarts"] == 0
    assert report["procmond_rss_bytes"] > 0
    assert report["event_source"] == ("netlink" if os.geteuid() == 0 else report["event_source"])


def test_kill_9_of_procmond_is_noticed_restarted_and_reconciled(
    harness: DaemonHarness, sleeper: Sleeper
) -> None:
    harness.start()
    first = procmond_of(harness)
    doomed = sleeper("MARKER-doomed-before-gap")
    wait_for(
        lambda: harness.query(
            "SELECT pid FROM live_processes WHERE cmdline LIKE '%MARKER-doomed%'"
        ),
        "the doomed sleeper to be stored",
    )
    os.kill(first, signal.SIGKILL)
    doomed.kill()
    doomed.wait()
    born = sleeper("MARKER-born-in-gap")
    report = wait_for(
        lambda: (
            (h := health(harness)).get("procmond_restarts") == 1
            and h.get("procmond_pid") not in (0, first)
            and h
        ),
        "a new procmond to be reported",
    )
    assert report["procmond_gap_s"] > 0
    assert report["procmond_missed_upper"] >= 0
    assert "procmond closed the pair" in harness.log()
    born_rows = wait_for(
        lambda: harness.query(f"SELECT ended_at, cmdline FROM processes WHERE pid = {born.pid}"),
        "the process born in the gap to be stored",
    )
    assert born_rows[0]["ended_at"] is None
    assert "MARKER-born-in-gap" in born_rows[0]["cmdline"]
    ended = wait_for(
        lambda: harness.query(
            f"SELECT ended_at FROM processes WHERE pid = {doomed.pid} AND ended_at IS NOT NULL"
        ),
        "the process that died in the gap to be ended",
    )
    assert ended
    assert gone(first)  # reaped by the agent: no zombie left behind


def test_kill_9_of_the_agent_takes_procmond_with_it(harness: DaemonHarness) -> None:
    harness.start()
    collector = procmond_of(harness)
    assert harness.process is not None
    others = [p for p in descendants_of(harness.process.pid) if p != collector]  # the launcher
    harness.process.kill()
    harness.process.wait()
    harness.process = None
    wait_for(lambda: gone(collector), "procmond to exit after its agent died")
    for pid in others:
        wait_for(partial(gone, pid), f"the agent's process {pid} to exit after it died")


@pytest.mark.skipif(os.geteuid() != 0, reason="capabilities to keep only when started as root")
def test_a_procmond_started_again_holds_the_first_ones_capabilities_and_sees_events(
    harness: DaemonHarness,
) -> None:
    """The agent has none left by then: its launcher starts the new one, with the same sets,
    and the kernel's events (CAP_NET_ADMIN) show a new process again: with scans a minute
    apart, only an event can bring in a process that lives a fraction of a second."""
    harness.start(interval="60")
    first = procmond_of(harness)
    before = status_of(first)
    assert int(before["CapEff"], 16) != 0
    os.kill(first, signal.SIGKILL)
    second = procmond_of(harness, besides=first)
    wait_for(lambda: health(harness).get("procmond_pid") == second, "the new procmond in health")
    after = status_of(second)
    for key in ("Uid", "CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "NoNewPrivs"):
        assert after[key] == before[key], key
    report = health(harness)
    assert report["event_source"] == "netlink" and report["privileged"]
    assert report["procmond_restarts"] == 1 and report["procmond_gap_s"] > 0
    assert "without its capabilities" not in harness.log()
    wait_for(lambda: "its full scan reconciled" in harness.log(), "the reconciling scan")
    marker = f"MARKER-after-restart-{os.getpid()}"
    subprocess.run(["/bin/sh", "-c", f"sleep 0.3; : {marker}"], check=True)
    rows = wait_for(
        lambda: harness.query(f"SELECT exe, cmdline FROM processes WHERE cmdline LIKE '%{marker}'"),
        "the short process to be stored from a kernel event",
    )
    assert rows[0]["cmdline"] == f"/bin/sh -c sleep 0.3; : {marker}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to read another process's children")
def test_procmond_runs_the_same_interpreter(harness: DaemonHarness) -> None:
    harness.start()
    collector = procmond_of(harness)
    assert os.path.realpath(f"/proc/{collector}/exe") == os.path.realpath(sys.executable)
