"""`alerts list`, `alerts show` and `audit verify` ask the running daemon, so they answer for a
user who cannot read the store and over `--host`; with no daemon they read the store, and a
command with `--host` never reads this host's store instead of that host's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import DaemonHarness, Sleeper, wait_for
from .test_alerts_follow import _alert_ids, _marker_alert


def cli_without_the_store(harness: DaemonHarness, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with a store path that does not exist: only the daemon can answer it."""
    return subprocess.run(
        [sys.executable, "-m", "daemoneye", *args],
        env={**harness.env, "DAEMONEYE_STORE__PATH": str(harness.root / "nowhere" / "d.db")},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_alerts_and_the_audit_log_come_from_the_daemon(
    harness: DaemonHarness, sleeper: Sleeper
) -> None:
    harness.start()
    rule_id, mark = _marker_alert(harness, sleeper)
    sleeper(mark + " one")
    sleeper(mark + " two")
    wait_for(lambda: len(_alert_ids(harness, rule_id)) == 2 or None, "two alerts")

    listed = cli_without_the_store(harness, "-o", "json", "alerts", "list", "--rule", rule_id)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {row["rule_id"] for row in rows} == {rule_id} and len(rows) == 2
    assert [row["last_seen"] for row in rows] == sorted(
        (row["last_seen"] for row in rows), reverse=True
    )
    limited = cli_without_the_store(harness, "alerts", "list", "--rule", rule_id, "--limit", "1")
    assert limited.returncode == 0 and "only the 1 most recent" in limited.stderr

    shown = cli_without_the_store(harness, "-o", "json", "alerts", "show", str(rows[0]["id"]))
    assert shown.returncode == 0, shown.stderr
    (detail,) = json.loads(shown.stdout)
    assert (detail["id"], detail["occurrence"], detail["deliveries"]) == (rows[0]["id"], 1, [])
    missing = cli_without_the_store(harness, "alerts", "show", "999999")
    assert missing.returncode != 0 and "no alert with id 999999" in missing.stderr

    verified = cli_without_the_store(harness, "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stderr

    # No daemon: the same commands read the store, and say so.
    assert harness.stop() == 0
    direct = harness.cli("-o", "json", "alerts", "list", "--rule", rule_id)
    assert direct.returncode == 0 and "directly" in direct.stderr
    assert len(json.loads(direct.stdout)) == 2


def test_with_host_a_store_command_never_reads_this_hosts_store(tmp_path: Path) -> None:
    from daemoneye.commands.common import Context
    from daemoneye.config.loading import load_config
    from daemoneye.config.remote_values import parse_ssh_target
    from daemoneye.ipc.protocol import DaemonUnavailable
    from daemoneye.ipc.ssh import ssh_route

    route = ssh_route(parse_ssh_target("ssh://ops@web1.example.com"))
    ctx = Context(load_config(env={}), "table", remote=route)
    try:
        ctx.open_store()
    except DaemonUnavailable as exc:
        assert "ssh://ops@web1.example.com" in str(exc) and "run it there" in str(exc)
    else:
        raise AssertionError("a --host command read this host's store")
