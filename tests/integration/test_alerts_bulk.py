"""`alerts ack --filter … --yes` through a real daemon: every matching alert is changed by its
own admin request (each audited with the peer's uid and pid), the others are left alone."""

from __future__ import annotations

import json

from .conftest import DaemonHarness, Sleeper, wait_for
from .test_alerts_follow import _alert_ids, _marker_alert


def test_bulk_ack_goes_through_the_daemon_one_request_per_alert(
    harness: DaemonHarness, sleeper: Sleeper
) -> None:
    harness.start()
    rule_id, mark = _marker_alert(harness, sleeper)
    sleeper(mark + " one")
    sleeper(mark + " two")
    wait_for(lambda: len(_alert_ids(harness, rule_id)) == 2 or None, "two alerts")
    refused = harness.cli("alerts", "ack", "--filter", f"rule:{rule_id}")  # stdin: /dev/null
    assert refused.returncode == 2 and "not without --yes" in refused.stderr
    done = harness.cli("-o", "json", "alerts", "ack", "--filter", f"rule:{rule_id}", "--yes")
    assert done.returncode == 0, done.stderr
    assert "directly" not in done.stderr  # the daemon did it, not the store behind its back
    rows = json.loads(done.stdout)
    assert len(rows) == 2
    assert all(r["state"] == "acknowledged" for r in rows)
    assert all(r["state_changed_by"].startswith("uid 0 pid ") for r in rows)
    others = json.loads(harness.cli("-o", "json", "alerts", "list", "--state", "open").stdout)
    assert rule_id not in {r["rule_id"] for r in others}
    verify = harness.cli("audit", "verify")
    assert verify.returncode == 0 and "intact" in verify.stdout
