"""`daemoneye health` names each of the daemon's processes with its uid and capabilities, as
/proc/PID/status has them, live over IPC and from the store when no daemon answers."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from daemoneye.collector.task_iter import TaskIterator
from daemoneye.commands.health import _report_in
from daemoneye.procmond.privileges import PROCMOND_CAPABILITIES, capability_mask, read_privileges
from tests.bpf_available import why_not
from tests.integration.conftest import DaemonHarness


def test_health_shows_the_agent_as_the_kernel_sees_it(
    harness: DaemonHarness,
) -> None:
    harness.start()
    assert harness.process is not None
    pid = harness.process.pid
    (live,) = json.loads(harness.cli("-o", "json", "health", check=True).stdout)
    agent = live["agent_privileges"]
    kernel = read_privileges(pid, "agent")
    assert (agent["pid"], agent["uid"], agent["user"]) == (pid, kernel.uid, kernel.user)
    assert agent["effective"] == list(kernel.effective)
    assert agent["bounding"] == list(kernel.bounding)
    table = harness.cli("health").stdout
    assert re.search(rf"agent runs as +pid {pid}, uid {kernel.uid} \({kernel.user}\); capab", table)
    procmond = live["procmond_privileges"]
    assert re.search(rf"procmond runs as +pid {procmond['pid']}, uid {procmond['uid']} ", table)
    harness.stop()
    # The last report in the store still says who ran, for `health` without a daemon.
    (stored,) = json.loads(harness.cli("-o", "json", "--db", str(harness.db), "health").stdout)
    assert stored["agent_privileges"]["pid"] == pid


def test_health_says_which_of_procmonds_task_passes_are_on(harness: DaemonHarness) -> None:
    reason = why_not(lambda: TaskIterator.open().close())
    if reason is not None:
        pytest.skip(f"BPF task iterator unavailable: {reason}")
    harness.start()
    deadline = time.monotonic() + 10
    live: dict[str, object] = {}
    while time.monotonic() < deadline and not live.get("task_passes"):
        (live,) = json.loads(harness.cli("-o", "json", "health", check=True).stdout)
        time.sleep(0.2)
    # the first scan meets every process: one context pass; each tick, the stat pass
    assert live["task_passes"] == "context on (1 pass); stat signatures on"
    assert re.search(r"task passes +context on \(1 pass\); stat", harness.cli("health").stdout)
    harness.stop()


def test_an_old_report_without_privileges_still_reads() -> None:
    class Meta:
        def get_meta(self, key: str) -> str:
            return json.dumps({**REPORT, "unknown_future_field": 1})

    report = _report_in(Meta())  # type: ignore[arg-type]
    assert report is not None
    assert report.agent_privileges is None
    assert report.problems == ("x",)


REPORT = {
    "daemon_pid": 1,
    "daemon_uid": 0,
    "version": "0.1.0",
    "mode": "system",
    "privileged": True,
    "event_source": "netlink",
    "started_at": 0.0,
    "updated_at": 0.0,
    "interval_s": 1.0,
    "ticks": 1,
    "last_scan_ms": 1.0,
    "avg_scan_ms": 1.0,
    "processes": 1,
    "new_per_second": 0.0,
    "denied_total": 0,
    "vanished_total": 0,
    "hash_dropped_total": 0,
    "store_bytes": 0,
    "daemon_cpu_percent": 0.0,
    "daemon_rss_bytes": 0,
    "problems": ["x"],
}


@pytest.mark.skipif(os.geteuid() != 0, reason="the privilege split happens when started as root")
def test_a_root_daemon_runs_the_split_as_proc_says(harness: DaemonHarness) -> None:
    """The agent holds no capability at all; procmond exactly its four; both no_new_privs; and
    health says the same as /proc/PID/status."""
    harness.start()
    assert harness.process is not None
    agent_pid = harness.process.pid
    (live,) = json.loads(harness.cli("-o", "json", "health", check=True).stdout)
    procmond_pid = live["procmond_privileges"]["pid"]
    agent, procmond = _status(agent_pid), _status(procmond_pid)
    assert int(_status(int(procmond["PPid"]))["PPid"]) == agent_pid  # the launcher's child
    for key in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert int(agent[key], 16) == 0, key
    kept = capability_mask(PROCMOND_CAPABILITIES)
    assert int(procmond["CapEff"], 16) == int(procmond["CapPrm"], 16) == kept
    assert int(procmond["CapBnd"], 16) == kept
    assert agent["NoNewPrivs"] == procmond["NoNewPrivs"] == "1"
    assert set(live["procmond_privileges"]["effective"]) == PROCMOND_CAPABILITIES
    assert live["agent_privileges"]["effective"] == live["agent_privileges"]["bounding"] == []
    # procmond still sees everything: kernel events on, other users' details in full.
    assert live["event_source"] == "netlink"
    assert live["privileged"]


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as file:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in file)}
