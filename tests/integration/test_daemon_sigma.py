"""A Sigma rule through the whole daemon: dropped into rules.d it is live, it alerts on a real
process with its Sigma id, a broken edit keeps its last good version, and a fixed edit is
live again — hot reload, as for TOML rules."""

from __future__ import annotations

import json
import uuid

from tests.integration.conftest import DaemonHarness, Sleeper, wait_for
from tests.integration.test_daemon_rules import alerts_for, rules_dir

SIGMA = """title: Marker process (integration test)
id: {rule_id}
status: experimental
level: high
tags: [attack.execution, attack.t1059.006]
logsource:
  category: process_creation
  product: linux
detection:
  selection:
    CommandLine|contains: '{mark}'
    Image|contains: python
  filter:
    CommandLine|contains: 'never-{mark}'
  condition: selection and not filter
"""


def test_a_sigma_rule_hot_reloads_and_alerts(harness: DaemonHarness, sleeper: Sleeper) -> None:
    harness.start()
    rule_id = str(uuid.uuid4())
    mark = f"sigma-marker-{uuid.uuid4().hex[:8]}"
    path = rules_dir(harness) / "marker.yml"
    path.write_text(SIGMA.format(rule_id=rule_id, mark=mark.upper()))  # matched case-folded
    listed = wait_for(
        lambda: (
            [
                rule
                for rule in json.loads(harness.cli("-o", "json", "rules", "list").stdout)
                if rule["id"] == rule_id
            ]
            or None
        ),
        "the Sigma rule to be listed",
    )
    assert listed[0]["format"] == "sigma" and listed[0]["severity"] == "high"
    child = sleeper(mark)
    (alert,) = wait_for(lambda: alerts_for(harness, rule_id), "the Sigma rule's alert")
    assert alert["pid"] == child.pid

    path.write_text(SIGMA.format(rule_id=rule_id, mark=mark) + "  condition: [\n")  # broken
    wait_for(lambda: "rule refused" in harness.log() or None, "the broken edit to be refused")
    second = sleeper(mark)
    wait_for(
        lambda: [a for a in alerts_for(harness, rule_id) if a["pid"] == second.pid] or None,
        "the last good version to keep alerting",
    )

    fixed_mark = f"sigma-fixed-{uuid.uuid4().hex[:8]}"
    path.write_text(SIGMA.format(rule_id=rule_id, mark=fixed_mark))
    wait_for(
        lambda: fixed_mark in harness.cli("rules", "show", rule_id).stdout or None,
        "the fixed rule to be live",
    )
    third = sleeper(fixed_mark)
    wait_for(
        lambda: [a for a in alerts_for(harness, rule_id) if a["pid"] == third.pid] or None,
        "the fixed rule's alert",
    )
