"""The `connections` table: its columns are models.Connection's, writes, the live view,
retention, and that user SQL may read it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from daemoneye.models import Connection, ConnectionsDelta, ConnectionStats, Rule
from daemoneye.store.connections import (
    CONNECTION_COLUMNS,
    live_connections,
    read_connections,
    write_delta,
)
from daemoneye.store.db import Store
from daemoneye.store.readonly import open_readonly

_STATS = ConnectionStats(0.0, 0, 0, 0, 0, 0, 0, 0)


def _conn(inode: int, **changes: object) -> Connection:
    base = Connection(
        pid=10,
        start_time=5.0,
        protocol="tcp",
        local_address="10.0.0.1",
        local_port=40000,
        remote_address="8.8.8.8",
        remote_port=443,
        state="SYN_SENT",
        inode=inode,
        netns=4026531833,
        direction="outbound",
        remote_scope="public",
        first_seen=100.0,
        last_seen=100.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _delta(ts: float, opened=(), changed=(), closed=()) -> ConnectionsDelta:  # type: ignore[no-untyped-def]
    return ConnectionsDelta(ts, tuple(opened), tuple(changed), tuple(closed), _STATS)


def test_table_columns_are_the_fields_of_connection(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        columns = [row[1] for row in store.fetch_rows("PRAGMA table_info(connections)")]
        view = [row[1] for row in store.fetch_rows("PRAGMA table_info(live_connections)")]
    assert ["id", *CONNECTION_COLUMNS] == columns == view


def test_opened_changed_closed_round_trip(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        hostile = "/tmp/\x1b[31mred\nline\udcff"
        unix = _conn(
            2,
            protocol="unix",
            local_address=hostile,
            local_port=None,
            remote_address=None,
            remote_port=None,
            state="LISTEN",
            direction="listen",
            remote_scope=None,
        )
        with store.transaction("t") as conn:
            write_delta(conn, _delta(100.0, opened=[_conn(1), unix]))
        with store.transaction("t") as conn:
            write_delta(
                conn, _delta(105.0, changed=[_conn(1, state="ESTABLISHED", last_seen=105.0)])
            )
        live = {c.inode: c for c in live_connections(store)}
        assert live[1].state == "ESTABLISHED" and live[1].first_seen == 100.0
        assert live[1].last_seen == 105.0
        # shown literally, the undecodable byte kept as text
        assert live[2].local_address == "/tmp/\x1b[31mred\nline\\udcff"
        with store.transaction("t") as conn:
            write_delta(conn, _delta(110.0, closed=[_conn(1, ended_at=110.0)]))
        assert [c.inode for c in live_connections(store)] == [2]
        ended = read_connections(store, "WHERE inode = 1")
        assert [c.ended_at for c in ended] == [110.0]
        # a restart that sees the same socket again re-opens it, first_seen kept
        with store.transaction("t") as conn:
            write_delta(conn, _delta(120.0, opened=[_conn(1, first_seen=120.0, last_seen=120.0)]))
        again = read_connections(store, "WHERE inode = 1")
        assert [(c.first_seen, c.ended_at) for c in again] == [(100.0, None)]


def test_deleting_a_process_row_deletes_its_connections(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        with store.transaction("t") as conn:
            conn.execute(
                "INSERT INTO processes (pid, ppid, start_time, name, cmdline, argv, state, "
                "threads, rss, cpu_percent, first_seen, last_seen, ended_at) "
                "VALUES (10, 1, 5.0, 'x', '', '[]', 'S', 1, 0, 0.0, 1.0, 1.0, 2.0)"
            )
            write_delta(conn, _delta(100.0, opened=[_conn(1), _conn(3, pid=11)]))
        with store.transaction("t") as conn:
            conn.execute("DELETE FROM processes WHERE pid = 10")
        assert [c.pid for c in read_connections(store)] == [11]


def test_user_sql_reads_connections_and_the_live_view(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store.open(path) as store, store.transaction("t") as conn:
        write_delta(conn, _delta(100.0, opened=[_conn(1)]))
    with open_readonly(path) as reader:
        result = reader.query(
            "SELECT c.remote_address, l.state FROM connections c "
            "JOIN live_connections l USING (inode)"
        )
    assert [tuple(row) for row in result.rows] == [("8.8.8.8", "SYN_SENT")]


def _rule(rule_id: str, query: str) -> Rule:
    return Rule(rule_id, rule_id, "d", "high", True, (), query, None, None, None, "f.toml", 1)


def test_an_instance_that_opens_a_socket_is_evaluated_by_the_rules_that_read_connections(
    tmp_path: Path,
) -> None:
    from daemoneye.engine.detection import reads_connections
    from daemoneye.engine.evaluator import Evaluator
    from daemoneye.models import ProcessRecord, ScanDelta, ScanStats

    reads = _rule(
        "reads",
        "SELECT p.pid, p.start_time FROM processes p JOIN live_connections c "
        "USING (pid, start_time) WHERE c.remote_scope = 'public'",
    )
    ignores = _rule("ignores", "SELECT pid, start_time FROM processes")
    assert reads_connections(reads) and not reads_connections(ignores)
    record = ProcessRecord(
        10, 1, 5.0, "sh", None, (), None, 0, "root", 0, "S", 1, 0, 0.0, None, False, 1.0, 1.0
    )
    with Store.open(tmp_path / "s.db") as store:
        store.apply(ScanDelta(1.0, (record,), (), (), (), (), ScanStats(0, 0, 0, 0, 0, 0, 0)))
        with store.transaction("t") as conn:
            write_delta(conn, _delta(100.0, opened=[_conn(1)]))
        evaluator = Evaluator(store.path, [reads, ignores])
        try:
            result = evaluator.evaluate_instances([record.key], reads_connections)
        finally:
            evaluator.close()
    assert [(d.rule_id, d.pid) for d in result.detections] == [("reads", 10)]


def test_a_refresh_the_store_could_not_take_is_made_good_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """procmond refreshes; the agent writes its deltas. One it could not write (disk full) is
    made good by writing the next refresh whole."""
    from daemoneye.config.schema import Config
    from daemoneye.daemon.collection import Collection
    from daemoneye.errors import StoreUnwritable

    with Store.open(tmp_path / "s.db") as store:
        with store.transaction("t") as conn:
            write_delta(conn, _delta(100.0, opened=[_conn(1), _conn(2)]))
        collection = Collection(store, Config(), mode="user", event_source="polling-only")
        collection.apply_connections(_delta(105.0))  # nothing changed: nothing written
        collection.connections_by_key = {_conn(1).key: (_conn(1), _conn(2))}
        writes = collection._write_connections
        failing = [True]

        def write(delta: ConnectionsDelta) -> None:
            if failing.pop(0) if failing else False:
                raise StoreUnwritable("disk full")
            writes(delta)

        monkeypatch.setattr(collection, "_write_connections", write)
        # socket 2 closes and socket 3 opens while the disk is full; nothing changes after
        collection.apply_connections(
            _delta(110.0, opened=[_conn(3)], closed=[_conn(2, ended_at=110.0)])
        )
        assert sorted(c.inode for c in live_connections(store)) == [1, 2]  # not written
        collection.apply_connections(_delta(120.0))
        assert sorted(c.inode for c in live_connections(store)) == [1, 3]
        (ended,) = read_connections(store, "WHERE inode = 2")
        assert ended.ended_at == 120.0
