"""Kernel process events through the whole daemon: processes that live a few milliseconds are
recorded with exe, command line, parent and exit code."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
import uuid

import pytest

from daemoneye.collector.netlink import probe
from tests.integration.conftest import DaemonHarness, wait_for

REASON = probe()
needs_events = pytest.mark.skipif(
    REASON is not None, reason=f"kernel process events unavailable: {REASON}"
)


@needs_events
def test_two_millisecond_child_is_recorded_with_exit_code(harness: DaemonHarness) -> None:
    harness.start(interval="5")  # long interval: only the events can see the child
    script = "sleep 0.002; exit 3"
    # Reading /proc races the child's exit: on a loaded machine one child in a few may be
    # gone first (its exec is then kept as a partial fact). Every exec must be seen; at
    # least one of a handful must be complete.
    row = None
    for _attempt in range(5):
        mark = f"de-{uuid.uuid4().hex[:10]}"
        child = subprocess.Popen(["/bin/sh", "-c", script, mark])
        assert child.wait() == 3
        for kind in ("exec", "exit"):
            sql = f"SELECT 1 FROM process_events WHERE kind = '{kind}' AND pid = {child.pid}"
            wait_for(functools.partial(harness.query, sql), f"the child's {kind} event")
        rows = harness.query(
            f"SELECT * FROM processes WHERE cmdline = "
            f"'/bin/sh -c {script} {mark}' AND ended_at IS NOT NULL"
        )
        if rows:
            row = rows[0]
            break
    assert row is not None, "no short-lived child was recorded with its details"
    assert row["exe"] == os.path.realpath("/bin/sh")
    assert row["ppid"] == os.getpid()
    assert row["exit_code"] == 3
    sources = {
        e["kind"]: e["source"]
        for e in harness.query(
            f"SELECT kind, source FROM process_events WHERE pid = {row['pid']} "
            f"AND start_time = {row['start_time']!r}"
        )
    }
    assert sources == {"exec": "netlink", "exit": "netlink"}
    health = json.loads(harness.cli("-o", "json", "health", check=True).stdout)[0]
    assert health["event_source"] == "netlink"


@needs_events
def test_burst_of_500_short_children_is_all_recorded(harness: DaemonHarness) -> None:
    harness.start(interval="5")
    # GNU sleep adds its arguments: each child sleeps ~2 ms and carries a unique number.
    mark = f"0.000000{uuid.uuid4().int % 10**12:012d}"
    argv = ["/bin/sleep", "0.002", mark]
    pids = []
    started = time.time()
    for _ in range(500):
        child = subprocess.Popen(argv)
        pids.append(child.pid)
        child.wait()
    cmdline = " ".join(argv)
    pid_list = ", ".join(map(str, pids))

    def execs_seen() -> set[int]:
        found = {
            int(r["pid"])
            for r in harness.query(
                f"SELECT DISTINCT pid FROM process_events WHERE kind = 'exec' AND "
                f"source = 'netlink' AND ts >= {started!r} AND pid IN ({pid_list})"
            )
        }
        return found if found == set(pids) else set()

    # Every child's exec is recorded; one that was gone before /proc could be read is kept
    # as a partial fact. Those read in time carry their command line and exit code.
    wait_for(execs_seen, "an exec event for every one of the 500 children")
    complete = harness.query(
        f"SELECT pid, exit_code, ended_at FROM processes WHERE cmdline = '{cmdline}'"
    )
    assert complete and {r["pid"] for r in complete} <= set(pids)
    assert all(r["exit_code"] == 0 and r["ended_at"] is not None for r in complete)
