"""Schema version 2 (alerts, audit log, outbox): a store written by the version-1 code migrates
forward with its history intact, and the new tables work at once."""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import pytest

from daemoneye.engine import audit
from daemoneye.engine.alert_queries import list_alerts
from daemoneye.engine.alerts import AlertBook
from daemoneye.errors import StoreError
from daemoneye.models import Detection
from daemoneye.store import SCHEMA_VERSION, Store, open_readonly
from daemoneye.store.schema import MIGRATIONS


def make_v1_store(path: Path) -> None:
    """A store exactly as the version-1 code left it: its DDL, WAL, and some history."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = apsw.Connection(str(path))
    conn.pragma("auto_vacuum", "INCREMENTAL")
    conn.pragma("journal_mode", "WAL")
    (v1,) = [m for m in MIGRATIONS if m.version == 1]
    with conn:
        conn.execute(v1.sql)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO processes (pid, ppid, start_time, name, exe, cmdline, argv, cwd, uid, "
            "user, gid, state, threads, rss, cpu_percent, first_seen, last_seen) VALUES "
            "(42, 1, 100.5, 'sshd', '/usr/sbin/sshd', 'sshd -D', '[\"sshd\",\"-D\"]', '/', 0, "
            "'root', 0, 'S', 1, 4096, 0.5, 100.5, 200.0)"
        )
        conn.execute(
            "INSERT INTO process_events (ts, kind, pid, start_time, source) "
            "VALUES (100.5, 'start', 42, 100.5, 'poll')"
        )
        conn.execute("INSERT INTO meta (key, value) VALUES ('health', '{\"ticks\": 3}')")
    conn.close()


def test_v1_store_migrates_to_v2_with_its_history(store_path: Path) -> None:
    make_v1_store(store_path)
    with Store.open(store_path) as store:
        assert store.fetch_rows("PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert SCHEMA_VERSION >= 2
        assert [key.pid for key in store.live_processes()] == [42]
        assert store.fetch_rows("SELECT kind, pid FROM process_events") == [("start", 42)]
        assert json.loads(str(store.get_meta("health"))) == {"ticks": 3}
        tables = {
            str(r[0])
            for r in store.fetch_rows("SELECT name FROM sqlite_schema WHERE type = 'table'")
        }
        assert {"alerts", "audit_log", "sink_outbox", "rule_stats", "sink_stats"} <= tables
        # The new tables work straight away, on the migrated file.
        AlertBook(store, sinks=("file",)).record(
            [Detection("r", "high", "t", 42, 100.5, 300.0, (("pid", 42),))], {}, 300.0
        )
        assert audit.verify(store).intact
    with open_readonly(store_path) as reader:
        (alert,) = list_alerts(reader)
        assert (alert.pid, alert.start_time, alert.state) == (42, 100.5, "open")
        assert reader.fetch_rows("SELECT sink, state FROM sink_outbox") == [("file", "pending")]


def test_a_second_writer_refuses_a_store_that_is_not_migrated(store_path: Path) -> None:
    make_v1_store(store_path)
    with pytest.raises(StoreError, match=r"schema version 1.*start the daemon once"):
        Store.open_existing(store_path)


def test_a_second_writer_refuses_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        Store.open_existing(tmp_path / "nothing.db")
    assert not (tmp_path / "nothing.db").exists()


def test_migration_2_rejects_bad_values_at_the_schema_level(store: Store) -> None:
    with pytest.raises(StoreError, match="CHECK constraint"), store.transaction("t") as conn:
        conn.execute(
            "INSERT INTO alerts (rule_id, severity, title, pid, start_time, "
            "first_seen, last_seen) VALUES ('r', 'severe', 't', 1, 1, 1, 1)"
        )
    with pytest.raises(StoreError, match="UNIQUE"), store.transaction("t") as conn:
        for _ in range(2):
            conn.execute(
                "INSERT INTO alerts (rule_id, severity, title, pid, start_time, "
                "first_seen, last_seen) VALUES ('r', 'high', 't', 1, 1, 1, 1)"
            )
