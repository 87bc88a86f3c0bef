"""A store that cannot be written (disk full): new alerts are held in memory, reach the sinks
from there, and reach the store with their delivery state once it can be written again."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from daemoneye.daemon.store_outage import StoreOutage
from daemoneye.engine.alerts import AlertBook
from daemoneye.engine.delivery import DeliveryPolicy, SinkRunner
from daemoneye.engine.outbox import sink_health
from daemoneye.engine.spill import AlertSpill
from daemoneye.errors import StoreUnwritable
from daemoneye.models import Detection, Rule
from daemoneye.store import Store
from tests.unit.test_delivery import Clock, FakeSink

POLICY = DeliveryPolicy(max_attempts=4, backoff_base_s=2.0, backoff_max_s=10.0, batch=10)


class FullDisk:
    """Makes every write transaction of the store fail as SQLite's SQLITE_FULL does, while
    `full` is set; reads keep working."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.failures = 0
        real = Store.transaction
        disk = self

        @contextmanager
        def transaction(self: Store, doing: str) -> Iterator[Any]:
            if disk.full and self is store:
                disk.failures += 1
                raise StoreUnwritable(f"{self.path}: {doing} failed: the disk is full")
            with real(self, doing) as conn:
                yield conn

        monkeypatch.setattr(Store, "transaction", transaction)


@pytest.fixture
def disk(store: Store, monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    return FullDisk(store, monkeypatch)


def detection(pid: int, rule: str = "r") -> Detection:
    return Detection(rule, "high", f"alert for {pid}", pid, 1.0, 1000.0, (("pid", pid),))


def outbox(store: Store) -> list[tuple[Any, ...]]:
    return store.fetch_rows(
        "SELECT alert_id, sink, state, attempts, payload FROM sink_outbox ORDER BY alert_id, sink"
    )


def test_a_full_database_raises_store_unwritable(tmp_path: Path) -> None:
    """SQLite's SQLITE_FULL (here: the database at its max_page_count) becomes StoreUnwritable,
    the error the daemon holds alerts on; reads still work."""
    with Store.open(tmp_path / "d.db") as store:
        with store.transaction("capping the file") as conn:
            pages = int(conn.execute("PRAGMA page_count").get)
            conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreUnwritable, match="the disk is full"):
            store.put_meta("filler", "x" * 65536)
        assert store.fetch_rows("SELECT count(*) FROM alerts") == [(0,)]


def test_alerts_raised_while_the_disk_is_full_reach_the_sinks_and_then_the_store(
    store: Store, disk: FullDisk
) -> None:
    book = AlertBook(store, sinks=("file", "webhook"), host="h")
    book.record([detection(100)], {}, 1000.0)  # alert 1, written normally
    disk.full = True
    changes = book.record([detection(101), detection(102), detection(100)], {}, 1001.0)
    assert [(c.kind, c.alert.id) for c in changes] == [("raised", 2), ("raised", 3)]
    assert disk.failures and len(book.spill) == 2
    assert store.fetch_rows("SELECT count(*) FROM alerts") == [(1,)]  # nothing written yet

    # The file sink takes the held alerts from memory while the disk is still full.
    file_sink = FakeSink("file")
    runner = SinkRunner(store, "file", file_sink, POLICY, clock=Clock(1002.0), spill=book.spill)
    runner.run_once()
    # Held alerts go first: they exist nowhere else. Alert 1 comes from the store.
    assert file_sink.delivered == [2, 3, 1]

    # A repeat while held counts; once writes succeed, everything is written in one go.
    book.record([detection(101)], {}, 1003.0)
    disk.full = False
    assert book.write_held(1004.0) == 2
    assert not book.spill.busy
    rows = store.fetch_rows("SELECT id, pid, count, first_seen FROM alerts ORDER BY id")
    assert rows == [(1, 100, 2, 1000.0), (2, 101, 2, 1001.0), (3, 102, 1, 1001.0)]
    # The file sink records alert 1, which it took while the disk was full, and sends
    # nothing again.
    runner.run_once()
    assert file_sink.delivered == [2, 3, 1]
    states = [(a, s, st) for a, s, st, _, _ in outbox(store)]
    assert states == [
        (1, "file", "delivered"),
        (1, "webhook", "pending"),
        (2, "file", "delivered"),
        (2, "webhook", "pending"),
        (3, "file", "delivered"),
        (3, "webhook", "pending"),
    ]
    # Sinks that had a held alert got the event id the store now holds for it.
    assert json.loads(str(outbox(store)[2][4]))["event_id"] == "h/2/1"
    # The webhook gets each once, from the store.
    webhook = FakeSink("webhook")
    SinkRunner(store, "webhook", webhook, POLICY, clock=Clock(1005.0), spill=book.spill).run_once()
    assert webhook.delivered == [1, 2, 3]
    audit = store.fetch_rows("SELECT kind, json_extract(detail, '$.alert_id') FROM audit_log")
    assert audit == [("alert.raised", 1), ("alert.raised", 2), ("alert.raised", 3)]
    (file_health,) = [h for h in sink_health(store, ["file"]) if h.sink == "file"]
    assert file_health.delivered_total == 3


def test_a_sink_that_takes_a_held_alert_while_it_is_written_records_it_in_the_store(
    store: Store, disk: FullDisk
) -> None:
    book = AlertBook(store, sinks=("file",), host="h")
    disk.full = True
    book.record([detection(101)], {}, 1000.0)
    (held,) = book.spill.waiting_for("file")
    disk.full = False
    book.write_held(1001.0)  # written as pending, while the sink was busy delivering it
    assert book.spill.delivered(held, "file", 1002.0) == 1  # the sink is told the id
    runner = SinkRunner(
        store, "file", FakeSink("file"), POLICY, clock=Clock(1003.0), spill=book.spill
    )
    runner._unrecorded_alerts[1] = 1002.0  # what _attempt_held does with that answer
    runner.run_once()
    assert [(a, s, st) for a, s, st, _, _ in outbox(store)] == [(1, "file", "delivered")]
    assert runner.sink.delivered == []  # type: ignore[attr-defined]  # not sent twice


def test_the_spill_is_bounded_and_counts_what_it_drops(store: Store, disk: FullDisk) -> None:
    book = AlertBook(store, sinks=("file",), host="h")
    book.spill = AlertSpill(max_alerts=2)
    disk.full = True
    changes = book.record([detection(pid) for pid in (101, 102, 103, 104)], {}, 1000.0)
    assert len(changes) == 2 and len(book.spill) == 2
    assert book.spill.dropped_total == 2
    small = AlertSpill(max_bytes=100)  # one payload is larger than that
    book.spill = small
    assert book.record([detection(105)], {}, 1000.0) == []
    assert small.dropped_total == 1 and small.held_bytes == 0


def test_the_throttle_holds_while_alerts_are_held(store: Store, disk: FullDisk) -> None:
    rule = Rule(
        id="r",
        name="r",
        description="",
        severity="high",
        enabled=True,
        tags=(),
        query="SELECT 1",
        title=None,
        dedup_window_s=None,
        throttle_s=60.0,
        source_file="r.toml",
        source_line=1,
    )
    book = AlertBook(store, sinks=("file",), host="h")
    disk.full = True
    changes = book.record([detection(101), detection(102)], {"r": rule}, 1000.0)
    assert [c.alert.pid for c in changes] == [101]
    disk.full = False
    book.write_held(1001.0)
    assert store.fetch_rows("SELECT alerts_raised, alerts_suppressed FROM rule_stats") == [(1, 1)]


def test_a_sink_delivery_the_store_cannot_record_is_not_repeated(
    store: Store, disk: FullDisk
) -> None:
    """A stored alert delivered while the disk is full is remembered, not sent every pass."""
    book = AlertBook(store, sinks=("file",), host="h")
    book.record([detection(100)], {}, 1000.0)
    disk.full = True
    sink = FakeSink("file")
    clock = Clock(1001.0)
    runner = SinkRunner(store, "file", sink, POLICY, clock=clock, spill=book.spill)
    for _ in range(3):
        runner.run_once()
        clock.now += 5
    assert sink.delivered == [1]
    disk.full = False
    runner.run_once()
    assert [(a, st) for a, _, st, _, _ in outbox(store)] == [(1, "delivered")]
    assert sink.delivered == [1]


def test_an_outage_logs_once_then_a_summary_at_most_every_30s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """800 failed writes in 40 s make three log lines, not 800."""
    clock = Clock(0.0)
    outage = StoreOutage(clock=clock)
    caplog.set_level(logging.INFO, logger="daemoneye.daemon.store_outage")
    for step in range(800):
        clock.now = step * 0.05
        outage.failed(
            "d.db: writing a collection tick failed: the disk is full",
            lambda: "3 alerts held in memory",
        )
    assert outage.active and outage.failures == 800
    assert outage.succeeded() == pytest.approx(39.95)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("the store cannot be written: d.db")
    assert "still cannot be written after 30s: 601 writes failed, 3 alerts held" in messages[1]
    assert not outage.active and outage.succeeded() is None


def test_rules_see_a_tick_the_store_could_not_take(
    store: Store, make_record: Any, make_delta: Any
) -> None:
    """With the tick's rows not written (disk full), rules run over its records as they are,
    with the parent from the store's history, and see nothing else of the tick."""
    from daemoneye.engine.evaluator import Evaluator
    from tests.unit.test_evaluator import SHELL_UNDER_NGINX, rule

    nginx = make_record(10, 1.0, name="nginx")
    store.apply(make_delta(1.0, added=[nginx]))
    evaluator = Evaluator(store.path)
    try:
        evaluator.set_rules(
            [
                rule("shell", SHELL_UNDER_NGINX, "{parent_name} spawned {name}"),
                rule("all", "SELECT pid, start_time FROM processes"),
            ]
        )
        shell = make_record(12, 3.0, ppid=10, name="sh")
        result = evaluator.evaluate_records([shell])
    finally:
        evaluator.close()
    assert sorted((d.rule_id, d.pid) for d in result.detections) == [("all", 12), ("shell", 12)]
    (detection,) = [d for d in result.detections if d.rule_id == "shell"]
    assert detection.title == "nginx spawned sh"
    assert store.fetch_rows("SELECT count(*) FROM processes WHERE pid = 12") == [(0,)]


def test_held_alerts_are_measured_in_bytes_not_characters() -> None:
    from daemoneye.engine.spill import payload_size

    assert payload_size({"title": "é" * 1000}) >= 2000  # two UTF-8 bytes each
