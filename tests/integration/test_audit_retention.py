"""A real daemon keeps its audit log within store.audit_max_bytes: admin calls audited with
large params are stored bounded, pruned under a signed checkpoint, and `audit verify` passes
and says what was pruned."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import apsw

from daemoneye.engine.audit_checkpoint import key_path_for
from daemoneye.engine.audit_detail import MAX_DETAIL_BYTES
from tests.integration.conftest import DEADLINE_S, wait_for
from tests.integration.ipc_support import IpcHarness, RawClient, admin_entries, ipc_fixture

__all__ = ["ipc_fixture"]

CALLS = 2000


def test_a_flooded_audit_log_is_pruned_under_a_verified_checkpoint(ipc: IpcHarness) -> None:
    ipc.env.update(
        {
            "DAEMONEYE_STORE__AUDIT_MAX_BYTES": "1MiB",
            "DAEMONEYE_STORE__RETENTION_CHECK_INTERVAL": "1s",
        }
    )
    ipc.start()
    flood(ipc)

    def pruned() -> str | None:
        result = ipc.cli("audit", "verify")
        lines = result.stdout.splitlines()
        return result.stdout if len(lines) > 1 and "pruned on" in lines[1] else None

    out = wait_for(pruned, "retention to prune the audit log")
    entries = admin_entries(ipc.db)
    assert 0 < len(entries) < CALLS  # the oldest were pruned
    for _, _, detail in entries:
        assert len(json.dumps(detail, ensure_ascii=False).encode()) <= MAX_DETAIL_BYTES
        assert "chars, truncated]" in detail["params"]["id"]
    key = key_path_for(ipc.db)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ipc.stop()
    final = ipc.cli("-o", "json", "audit", "verify")
    (row,) = json.loads(final.stdout)
    assert final.returncode == 0 and row["intact"] is True, out
    assert str(row["pruned"]).endswith("checkpoint verified")


def test_a_forged_checkpoint_stops_pruning_and_health_says_why(ipc: IpcHarness) -> None:
    ipc.env.update(
        {
            "DAEMONEYE_STORE__AUDIT_MAX_BYTES": "1MiB",
            "DAEMONEYE_STORE__RETENTION_CHECK_INTERVAL": "1s",
        }
    )
    ipc.start()
    flood(ipc)
    wait_for(lambda: latest_checkpoint_seq(ipc.db), "a first checkpoint")
    conn = apsw.Connection(str(ipc.db))
    conn.set_busy_timeout(int(DEADLINE_S * 1000))  # the daemon writes at the same time
    conn.execute("UPDATE audit_checkpoints SET count = count + 100")  # an edit, not signed
    conn.close()
    flood(ipc)

    def problem() -> str | None:
        report = json.loads(ipc.cli("-o", "json", "health").stdout)
        report = report[0] if isinstance(report, list) else report
        found = [p for p in report.get("problems", []) if "audit log not pruned" in p]
        return found[0] if found else None

    assert "does not verify" in wait_for(problem, "health to report the bad checkpoint")
    ipc.stop()
    final = ipc.cli("audit", "verify")
    assert final.returncode == 1 and "bad checkpoint" in final.stdout


def flood(ipc: IpcHarness) -> None:
    """CALLS admin calls for unknown rules: each fails and is audited with its (bounded)
    params, about 1.5 MiB of audit log in all."""
    client = RawClient(ipc.socket, timeout=DEADLINE_S)
    assert client.call(0, "hello", {"protocol_version": 1, "client": "flood"}) is not None
    for n in range(1, CALLS + 1):
        answer = client.call(n, "rules.disable", {"id": f"{n}-" + "x" * 1000})
        assert answer is not None and "error" in answer
    client.close()


def latest_checkpoint_seq(db: Path) -> int:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(int(DEADLINE_S * 1000))
    try:
        return int(conn.execute("SELECT coalesce(max(last_seq), 0) FROM audit_checkpoints").get)
    finally:
        conn.close()
