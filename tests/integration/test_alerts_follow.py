"""`daemoneye alerts follow` against a real daemon: the backlog, then new alerts and state
changes as they happen; ctrl-c ends it quietly (130), the daemon's stop with a message (1)."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import DEADLINE_S, DaemonHarness, Sleeper, wait_for

RULE = """
[[rule]]
id = "follow.{tag}"
name = "Follow marker {tag}"
description = "a process carrying the follow test's marker"
severity = "high"
title = "marker {{name}}"
query = "SELECT pid, start_time, name FROM processes WHERE cmdline LIKE '%{mark}%'"
"""


def _follow(harness: DaemonHarness, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "daemoneye", "alerts", "follow", *args],
        env={**harness.env, "DAEMONEYE_STORE__PATH": str(harness.db)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _next_row(follower: subprocess.Popen[str]) -> dict[str, Any]:
    """The next ndjson row, waiting at most the hang guard."""
    assert follower.stdout is not None
    with selectors.DefaultSelector() as selector:  # not select.select: fds past 1024
        selector.register(follower.stdout, selectors.EVENT_READ)
        if not selector.select(DEADLINE_S):
            pytest.fail("alerts follow printed nothing")
    line = follower.stdout.readline()
    assert line, f"alerts follow ended: {follower.stderr.read() if follower.stderr else ''}"
    row: dict[str, Any] = json.loads(line)
    return row


def _row_where(
    follower: subprocess.Popen[str], wanted: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The next row `wanted` says yes to; the marker's process lives several ticks, so its
    alert may be seen again (`repeated`) in between."""
    for _ in range(50):
        row = _next_row(follower)
        if wanted(row):
            return row
    pytest.fail("alerts follow never printed the row looked for")


def _marker_alert(harness: DaemonHarness, sleeper: Sleeper) -> tuple[str, str]:
    tag, mark = uuid.uuid4().hex[:8], f"follow-marker-{uuid.uuid4().hex[:8]}"
    rules = harness.root / "config" / "daemoneye" / "rules.d"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "follow.toml").write_text(RULE.format(tag=tag, mark=mark))
    wait_for(lambda: f"follow.{tag}" in harness.cli("rules", "list").stdout or None, "the rule")
    return f"follow.{tag}", mark


def _alert_ids(harness: DaemonHarness, rule_id: str) -> list[int]:
    rows = json.loads(harness.cli("-o", "json", "alerts", "list", "--rule", rule_id).stdout)
    return [int(row["id"]) for row in rows]


def test_follow_prints_the_backlog_then_changes_then_stops_with_the_daemon(
    harness: DaemonHarness, sleeper: Sleeper
) -> None:
    harness.start()
    rule_id, mark = _marker_alert(harness, sleeper)
    sleeper(mark)
    (first,) = wait_for(lambda: _alert_ids(harness, rule_id), "the first alert")
    follower = _follow(harness, "-o", "ndjson", "--rule", rule_id)
    try:
        backlog = _next_row(follower)  # printed after subscribing: what follows is live
        assert (backlog["id"], backlog["rule_id"]) == (first, rule_id)
        assert backlog["event"] in ("raised", "repeated")  # seen again while the test waited
        assert isinstance(backlog["start_time"], float)
        harness.cli("alerts", "ack", str(first), check=True)
        acked = _row_where(follower, lambda row: row["event"] == "acknowledged")
        assert (acked["id"], acked["state"]) == (first, "acknowledged")
        sleeper(mark + " again")
        raised = _row_where(follower, lambda row: row["id"] != first)
        assert raised["event"] == "raised" and raised["rule_id"] == rule_id
        harness.stop()
        assert follower.wait(timeout=DEADLINE_S) == 1
        assert follower.stderr is not None
        err = follower.stderr.read()
        assert "stopped following" in err and "Traceback" not in err
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_ctrl_c_ends_follow_quietly(harness: DaemonHarness, sleeper: Sleeper) -> None:
    harness.start()
    rule_id, mark = _marker_alert(harness, sleeper)
    sleeper(mark)
    wait_for(lambda: _alert_ids(harness, rule_id), "the alert")
    follower = _follow(harness, "--rule", rule_id)  # the table format
    try:
        assert follower.stdout is not None
        heading = follower.stdout.readline()
        assert heading.split()[:3] == ["TIME", "EVENT", "ID"]
        assert rule_id in follower.stdout.readline()  # it is in its loop now
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=DEADLINE_S) == 130
        assert follower.stderr is not None
        assert "Traceback" not in follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_follow_without_a_daemon_says_what_to_do(harness: DaemonHarness) -> None:
    done = harness.cli("alerts", "follow")
    assert done.returncode == 1
    assert "needs the running daemon" in done.stderr


def test_a_long_backlog_is_asked_for_within_the_daemons_limit(
    harness: DaemonHarness, sleeper: Sleeper
) -> None:
    harness.start()
    rule_id, mark = _marker_alert(harness, sleeper)
    sleeper(mark)
    wait_for(lambda: _alert_ids(harness, rule_id), "the alert")
    follower = _follow(harness, "-n", "5000", "-o", "ndjson", "--rule", rule_id)
    try:
        assert _next_row(follower)["rule_id"] == rule_id  # the backlog came
        harness.stop()
        assert follower.wait(timeout=DEADLINE_S) == 1
        assert follower.stderr is not None
        err = follower.stderr.read()
        assert "stopped following" in err, err
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
