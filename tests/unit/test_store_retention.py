"""Retention: history is deleted by age and by size, live processes never are."""

from __future__ import annotations

from pathlib import Path

import apsw

from daemoneye.config.schema import StoreConfig
from daemoneye.engine import audit
from daemoneye.engine.audit_prune import audit_pruner
from daemoneye.models import ProcessEvent
from daemoneye.store import Store, open_readonly
from daemoneye.store.retention import AUDIT_TABLES, table_bytes
from tests.unit.conftest import DeltaFactory, RecordFactory

DAY = 86400.0


def column(path: Path, sql: str) -> list[object]:
    with open_readonly(path) as reader:
        return [row[0] for row in reader.query(sql, max_rows=10**7).rows]


def times(path: Path, sql: str) -> list[float]:
    return [float(value) for value in column(path, sql)]  # type: ignore[arg-type]


def test_age_deletes_old_history_and_keeps_live_processes(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    now = 100 * DAY
    ancient_live = make_record(2, 0.0)  # running since long before the window
    old_ended = make_record(3, 1.0)
    recent_ended = make_record(4, now - DAY)
    store.apply(
        make_delta(
            1.0,
            added=[ancient_live, old_ended, recent_ended],
            events=[
                ProcessEvent(1.0, "start", 3, 1.0),
                ProcessEvent(now - DAY, "start", 4, now - DAY),
            ],
        )
    )
    store.apply(make_delta(2.0, ended=[old_ended.key]))
    store.apply(make_delta(now - 60, ended=[recent_ended.key]))

    result = store.retention(7 * DAY, 1 << 30, now)

    assert (result.processes_deleted, result.events_deleted) == (1, 1)
    assert column(store.path, "SELECT pid FROM processes ORDER BY pid") == [2, 4]
    assert column(store.path, "SELECT pid FROM process_events") == [4]


def _add_history(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory, *, jobs: int, live: int
) -> None:
    """`live` long-running processes, then `jobs` short-lived ones, job i starting at i and
    ending at i + 1, each with a start and an exit event."""
    store.apply(
        make_delta(
            0.0,
            added=[
                make_record(pid, 0.0, cmdline=("daemon", "x" * 300)) for pid in range(2, live + 2)
            ],
        )
    )
    for chunk in range(0, jobs, 1000):
        batch = range(chunk, min(chunk + 1000, jobs))
        records = [make_record(10_000 + i, float(i), cmdline=("job", "y" * 300)) for i in batch]
        store.apply(
            make_delta(
                float(chunk),
                added=records,
                events=[ProcessEvent(r.start_time, "start", r.pid, r.start_time) for r in records],
            )
        )
        for record in records:
            store.apply(
                make_delta(
                    record.start_time + 1.0,
                    ended=[record.key],
                    events=[
                        ProcessEvent(record.start_time + 1.0, "exit", record.pid, record.start_time)
                    ],
                )
            )


def test_size_cap_deletes_the_oldest_history_first(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    jobs, live = 6000, 40
    _add_history(store, make_record, make_delta, jobs=jobs, live=live)
    store.retention(365 * DAY, 1 << 40, jobs + 10.0)  # settle the WAL: only measure the data
    full = store.size_bytes()
    cap = full // 3

    result = store.retention(365 * DAY, cap, jobs + 10.0)

    assert result.bytes_before == full
    assert result.bytes_after <= cap
    assert store.size_bytes() <= cap
    assert store.path.stat().st_size <= cap  # the file on disk shrank, not just the free list
    assert len(store.live_processes()) == live
    ended = times(store.path, "SELECT start_time FROM processes WHERE ended_at IS NOT NULL")
    events = times(store.path, "SELECT ts FROM process_events")
    assert 0 < len(ended) < jobs
    assert result.processes_deleted == jobs - len(ended)
    # What survives is the newest history: a contiguous run up to the last job.
    assert sorted(ended) == [float(i) for i in range(jobs - len(ended), jobs)]
    assert events and min(events) >= min(ended)


def test_unreachable_size_cap_deletes_all_history_but_no_live_process(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    _add_history(store, make_record, make_delta, jobs=500, live=600)

    result = store.retention(365 * DAY, 16 * 1024, 1000.0)

    assert result.processes_deleted == 500
    assert len(store.live_processes()) == 600
    assert column(store.path, "SELECT count(*) FROM process_events") == [0]
    assert result.bytes_after < result.bytes_before


def test_retention_under_the_cap_deletes_nothing_recent(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    _add_history(store, make_record, make_delta, jobs=50, live=5)

    result = store.retention(7 * DAY, 1 << 30, 100.0)

    assert (result.processes_deleted, result.events_deleted) == (0, 0)
    assert column(store.path, "SELECT count(*) FROM processes") == [55]


def test_a_reader_holding_a_snapshot_does_not_make_retention_or_close_fail(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    _add_history(store, make_record, make_delta, jobs=200, live=5)
    reader = apsw.Connection(str(store.path), flags=apsw.SQLITE_OPEN_READONLY)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM processes").get == 205  # snapshot held

    result = store.retention(10.0, 1 << 30, 1000.0)
    store.close()

    assert result.processes_deleted == 200
    assert reader.execute("SELECT count(*) FROM processes").get == 205  # still its snapshot
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM processes").get == 5
    reader.close()


def test_alerts_last_seen_before_the_window_go_unless_a_sink_still_waits_for_them(
    store: Store,
) -> None:
    """Alerts are history too: a store with a noisy rule must not grow for ever. An alert
    that repeats stays (its last_seen is fresh); one a sink has not taken yet stays until it
    has; the audit log of what people did is never touched."""
    from daemoneye.engine.alerts import AlertBook
    from daemoneye.models import Detection

    now = 100 * DAY
    old, repeated, recent = now - 30 * DAY, now - 30 * DAY, now - DAY
    quiet = AlertBook(store, host="h")
    quiet.record(
        [
            Detection("r", "high", "old", 10, 1.0, old, ()),
            Detection("r", "high", "repeats", 11, 1.0, repeated, ()),
        ],
        {},
        old,
    )
    quiet.record(
        [
            Detection("r", "high", "repeats", 11, 1.0, repeated, ()),
            Detection("r", "low", "recent", 12, 1.0, recent, ()),
        ],
        {},
        recent,
    )
    quiet.set_state(1, "closed", "alice", old)
    # An old alert still queued for a webhook that has not taken it.
    AlertBook(store, sinks=("webhook",), host="h").record(
        [Detection("r", "critical", "undelivered", 13, 1.0, old, ())], {}, old
    )
    audit_before = store.fetch_rows("SELECT count(*) FROM audit_log")

    result = store.retention(7 * DAY, 1 << 30, now)

    assert result.alerts_deleted == 1
    assert column(store.path, "SELECT title FROM alerts ORDER BY id") == [
        "repeats",
        "recent",
        "undelivered",
    ]
    assert store.fetch_rows("SELECT count(*) FROM audit_log") == audit_before

    with store.transaction("delivered") as conn:
        conn.execute("UPDATE sink_outbox SET state = 'delivered', delivered_at = ?", (old,))
    second = store.retention(7 * DAY, 1 << 30, now)
    assert second.alerts_deleted == 1
    assert column(store.path, "SELECT title FROM alerts ORDER BY id") == ["repeats", "recent"]
    assert store.fetch_rows("SELECT count(*) FROM sink_outbox") == [(0,)]


def test_a_big_audit_log_costs_no_history_and_is_pruned_to_its_own_bound(
    tmp_path: Path, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """A flood of audited calls once made every retention pass delete all ended history: the
    size cap now counts history's own share, and the audit log is pruned by its own keys."""
    jobs, live, now = 3000, 10, 3100.0
    audit_cap = 1024 * 1024
    with_audit, reference = tmp_path / "audit.db", tmp_path / "reference.db"
    kept: dict[Path, list[float]] = {}
    cap = 0
    for path in (reference, with_audit):
        with Store.open(path) as store:
            _add_history(store, make_record, make_delta, jobs=jobs, live=live)
            if path == with_audit:
                for n in range(6000):  # ~6 MiB of refused calls, many times the history cap
                    audit.record(
                        store,
                        "admin.alerts.ack",
                        "uid 65534 pid 7",
                        {"params": {"id": "x" * 900}, "n": n},
                        ts=float(n),
                    )
            store.retention(365 * DAY, 1 << 40, now)  # settle the WAL
            if path == reference:  # the cap that keeps about a third of the history
                cap = store.size_bytes() // 3
            pruner = audit_pruner(
                path, StoreConfig(audit_retention=365 * DAY, audit_max_bytes=audit_cap)
            )
            result = store.retention(365 * DAY, cap, now, prune_audit=pruner)
            kept[path] = times(path, "SELECT start_time FROM processes WHERE ended_at IS NOT NULL")
            assert len(store.live_processes()) == live
            if path == with_audit:
                assert result.audit_error is None
                assert 0 < result.audit_entries_pruned < 6000
                with store.transaction("measuring the audit log") as conn:
                    assert table_bytes(conn, AUDIT_TABLES) <= audit_cap
                verified = audit.verify(store)
                assert verified.intact, verified.reason
                assert verified.pruned is not None
                assert verified.pruned.line().endswith("checkpoint verified")
    assert 0 < len(kept[reference]) < jobs
    # The same newest run of history survives, within a few pages of the reference (the
    # bigger file has a few more pointer-map pages, which count as history's, and the strings
    # share out unevenly: either may keep a page more).
    shorter, longer = sorted((kept[with_audit], kept[reference]), key=len)
    # A 4 KiB page holds about 20 of these jobs (a row and two events of ids and times): the
    # two may differ by two pages of them (measured: 25 of 197, and 37 of 172 once the
    # alerts_first_seen index took a page of the cap).
    assert len(longer) - len(shorter) <= 2 * 20
    assert shorter == longer[-len(shorter) :]
    # Tampering after pruning is still seen: drop the first entries that remain.
    first = audit_entries_first_seq(with_audit)
    conn = apsw.Connection(str(with_audit))
    conn.execute("DROP TRIGGER audit_log_no_delete")
    conn.execute("DELETE FROM audit_log WHERE seq <= ?", (first + 2,))
    conn.close()
    with Store.open_existing(with_audit) as store:
        tampered = audit.verify(store)
    assert (tampered.intact, tampered.first_bad_seq) == (False, first)


def audit_entries_first_seq(path: Path) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.execute("SELECT min(seq) FROM audit_log").get)
    finally:
        conn.close()
