"""Rules through the whole daemon: save a rule file, see it live, get exactly one alert per
process instance, and keep the last good rules when an edit is broken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.integration.conftest import DaemonHarness, Sleeper, wait_for

RULE = """
[[rule]]
id = "test.{tag}"
name = "Marker {tag}"
description = "a process carrying the test marker"
severity = "high"
tags = ["T1059"]
query = "SELECT pid, start_time, name FROM processes WHERE cmdline LIKE '%{mark}%'"
"""


def rules_dir(harness: DaemonHarness) -> Path:
    path = harness.root / "config" / "daemoneye" / "rules.d"
    path.mkdir(parents=True, exist_ok=True)
    return path


def alerts_for(harness: DaemonHarness, rule_id: str) -> list[dict]:  # type: ignore[type-arg]
    out = harness.cli("-o", "json", "alerts", "list", "--rule", rule_id, check=True).stdout
    return list(json.loads(out))


def test_saved_rule_goes_live_and_alerts_once_per_instance(
    harness: DaemonHarness, sleeper: Sleeper
) -> None:
    harness.start()
    tag, mark = uuid.uuid4().hex[:8], f"rule-marker-{uuid.uuid4().hex[:8]}"
    (rules_dir(harness) / "mine.toml").write_text(RULE.format(tag=tag, mark=mark))
    wait_for(
        lambda: f"test.{tag}" in harness.cli("rules", "list").stdout or None,
        "the saved rule to be listed",
    )
    child = sleeper(mark)
    (alert,) = wait_for(lambda: alerts_for(harness, f"test.{tag}"), "the alert")
    assert alert["pid"] == child.pid and alert["severity"] == "high"
    harness.wait_ticks(3)  # however many ticks the process lives: still one alert
    (again,) = alerts_for(harness, f"test.{tag}")
    assert again["id"] == alert["id"]
    acked = harness.cli("-o", "json", "alerts", "ack", str(alert["id"]), check=True)
    (row,) = json.loads(acked.stdout)
    assert row["state"] == "acknowledged" and row["state_changed_by"].startswith("uid 0 pid ")
    assert "directly" not in acked.stderr  # went through the daemon, not around it
    verify = harness.cli("audit", "verify")
    assert verify.returncode == 0 and "intact" in verify.stdout


def test_broken_edit_keeps_the_last_good_rule(harness: DaemonHarness, sleeper: Sleeper) -> None:
    harness.start()
    tag, mark = uuid.uuid4().hex[:8], f"rule-marker-{uuid.uuid4().hex[:8]}"
    path = rules_dir(harness) / "mine.toml"
    path.write_text(RULE.format(tag=tag, mark=mark))
    wait_for(lambda: "rule set 2 live" in harness.log() or None, "the rule to load")
    path.write_text(RULE.format(tag=tag, mark=mark).replace("[[rule]]", "[[rule]"))  # broken
    wait_for(lambda: "rule refused" in harness.log() or None, "the broken edit to be refused")
    assert "mine.toml" in harness.log()
    child = sleeper(mark)
    (alert,) = wait_for(lambda: alerts_for(harness, f"test.{tag}"), "the alert of the kept rule")
    assert alert["pid"] == child.pid


def test_a_clean_host_raises_no_builtin_alert_for_ordinary_work(harness: DaemonHarness) -> None:
    """Ordinary commands run by the test itself must not trip the built-in pack."""
    harness.start(interval="0.2")
    started = time.time()
    for argv in (
        ["ls", "/"],
        ["sh", "-c", "echo hi | cat"],
        [sys.executable, "-c", "pass"],
        ["env"],
        ["ps", "aux"],
    ):
        subprocess.run(argv, capture_output=True, check=False)
    harness.wait_ticks(3)
    # The absence of alerts only means something while the built-in pack is live.
    status = json.loads(harness.cli("-o", "json", "health", check=True).stdout)[0]
    assert status["rules_enabled"] >= 25, status
    rows = harness.query(
        f"SELECT rule_id, title FROM alerts WHERE first_seen >= {started!r} "
        "AND pid IN (SELECT pid FROM processes WHERE ppid = "
        f"{os.getpid()})"
    )
    assert rows == []


def test_rules_enable_disable_and_reload_through_the_daemon(harness: DaemonHarness) -> None:
    harness.start()
    tag, mark = uuid.uuid4().hex[:8], f"rule-marker-{uuid.uuid4().hex[:8]}"
    rule_id = f"test.{tag}"
    path = rules_dir(harness) / "mine.toml"
    path.write_text(RULE.format(tag=tag, mark=mark))
    reloaded = harness.cli("-o", "json", "rules", "reload", check=True)
    assert json.loads(reloaded.stdout)[0]["refused"] == 0
    off = harness.cli("-o", "json", "rules", "disable", rule_id, check=True)
    assert json.loads(off.stdout)[0]["enabled"] is False
    on = harness.cli("-o", "json", "rules", "enable", rule_id, check=True)
    assert json.loads(on.stdout)[0]["enabled"] is True
    path.write_text(RULE.format(tag=tag, mark=mark).replace('"high"', '"loud"'))
    refused = harness.cli("rules", "reload")
    assert refused.returncode == 2
    assert "mine.toml" in refused.stderr and rule_id in refused.stderr
    unknown = harness.cli("rules", "disable", "no.such.rule")
    assert unknown.returncode != 0 and "no.such.rule" in unknown.stderr


def test_a_rule_file_broken_across_a_restart_keeps_its_last_good_rules(
    harness: DaemonHarness, sleeper: Sleeper
) -> None:
    harness.start()
    tag, mark = uuid.uuid4().hex[:8], f"rule-marker-{uuid.uuid4().hex[:8]}"
    path = rules_dir(harness) / "mine.toml"
    path.write_text(RULE.format(tag=tag, mark=mark))
    wait_for(
        lambda: f"test.{tag}" in harness.cli("rules", "list").stdout or None,
        "the saved rule to be listed",
    )
    assert harness.stop() == 0
    path.write_text(RULE.format(tag=tag, mark=mark).replace("[[rule]]", "[[rule]"))  # broken
    harness.start()
    child = sleeper(mark)
    (alert,) = wait_for(lambda: alerts_for(harness, f"test.{tag}"), "the alert of the kept rule")
    assert alert["pid"] == child.pid
    health = harness.cli("health")
    assert health.returncode == 1
    assert f"rules from {path} are the last good version from" in health.stdout + health.stderr
    listed = harness.cli("rules", "list")
    assert f"test.{tag}" in listed.stdout and "last good version" in listed.stderr


SLOW_RULE = """
[[rule]]
id = "test.slow"
name = "Never finishes"
severity = "low"
query = '''
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)
SELECT x AS pid, 1.0 AS start_time FROM c WHERE x < 0
'''
"""


def test_a_rule_that_hits_its_budget_is_named_by_health_and_rules_list(
    harness: DaemonHarness, sleeper: Sleeper
) -> None:
    (rules_dir(harness) / "slow.toml").write_text(SLOW_RULE)
    harness.start()

    def suspended() -> bool:
        sleeper(f"tick-{uuid.uuid4().hex[:8]}")  # something new for the rule to look at
        listed = json.loads(harness.cli("-o", "json", "rules", "list", check=True).stdout)
        (slow,) = [row for row in listed if row["id"] == "test.slow"]
        return int(slow["timeouts"]) >= 3

    wait_for(suspended, "the slow rule to time out three times")
    health = harness.cli("-o", "json", "health")
    assert health.returncode == 1
    (status,) = json.loads(health.stdout)
    assert any("'test.slow' is suspended" in problem for problem in status["problems"]), status
    table = harness.cli("rules", "list", check=True).stdout
    assert "3 (suspended)" in table


def test_clients_are_served_while_the_startup_runs_slow_rules_over_the_store(
    harness: DaemonHarness,
) -> None:
    """On a long history each rule's first run over the whole store may take its full budget:
    the daemon makes the rules live and opens its socket first, then runs the rules over the
    store one at a time, with clients and ticks in between (before, the socket opened only
    after all of them: 12 s after a restart on a 494 MB store)."""
    slow = 12
    (rules_dir(harness) / "slow.toml").write_text(
        "".join(SLOW_RULE.replace("test.slow", f"test.slow-{i}") for i in range(slow))
    )
    harness.start()
    health = harness.cli("-o", "json", "health")
    assert health.returncode in (0, 1), health.stderr  # answered (a slow rule is a problem)
    wait_for(
        lambda: (
            "rules evaluated over the whole store" in harness.log()
            or harness.log().count("aborted after its time budget") >= 2 * slow
        ),
        "the rules to run over the store",
    )
    log = harness.log()
    listening_at = log.index("IPC listening on")
    assert log[:listening_at].count("aborted after its time budget") == 0, log
    wait_for(
        lambda: "rules evaluated over the whole store" in harness.log(),
        "the startup's full evaluation to end",
    )
    full_runs = harness.log()[listening_at:].count("aborted after its time budget of 250 ms")
    assert full_runs >= slow  # each rule did run over the store, up to its budget
