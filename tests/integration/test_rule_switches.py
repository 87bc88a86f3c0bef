"""A rule switched off stays off when the daemon starts again, and the switch is audited."""

from __future__ import annotations

import json

from daemoneye.engine import audit
from daemoneye.store.readonly import open_readonly

from .conftest import DaemonHarness, wait_for

RULE_ID = "reverse-shell-netcat"  # a built-in rule: its file says enabled


def _enabled(harness: DaemonHarness) -> bool | None:
    rows = json.loads(harness.cli("-o", "json", "rules", "list", check=True).stdout)
    return next((row["enabled"] for row in rows if row["id"] == RULE_ID), None)


def test_a_disabled_rule_stays_disabled_after_a_restart(harness: DaemonHarness) -> None:
    harness.start()
    harness.cli("rules", "disable", RULE_ID, check=True)
    assert _enabled(harness) is False
    harness.stop()
    harness.start()
    wait_for(lambda: _enabled(harness) is not None or None, "the rules to load")
    assert _enabled(harness) is False
    harness.cli("rules", "reload", check=True)
    assert _enabled(harness) is False
    harness.cli("rules", "enable", RULE_ID, check=True)
    assert _enabled(harness) is True
    switches = harness.db.parent / "rule-switches.json"
    assert json.loads(switches.read_text()) == {}
    with open_readonly(harness.db) as store:
        methods = [json.loads(e.detail).get("method") for e in audit.entries(store)]
    assert methods.count("rules.disable") == 1 and methods.count("rules.enable") == 1
