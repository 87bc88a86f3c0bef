"""`daemoneye health` names each of the daemon's processes with its uid and capabilities, as
/proc/PID/status has them, live over IPC and from the store when no daemon answers."""

from __future__ import annotations

import json

from daemoneye.commands.health import _report_in
from daemoneye.procmond.privileges import read_privileges
from tests.integration.conftest import DaemonHarness


def test_health_shows_the_agent_as_the_kernel_sees_it_and_procmond_not_running(
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
    assert live["procmond_privileges"] is None
    table = harness.cli("health").stdout
    assert f"agent         pid {pid}, uid {kernel.uid} ({kernel.user}); capabilities:" in table
    assert "procmond      not running" in table
    harness.stop()
    # The last report in the store still says who ran, for `health` without a daemon.
    (stored,) = json.loads(harness.cli("-o", "json", "--db", str(harness.db), "health").stdout)
    assert stored["agent_privileges"]["pid"] == pid


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
