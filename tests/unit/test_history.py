"""History: the process set at a past moment is exactly the instances alive then, and the
timeline pages through every event once, newest first."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemoneye.models import ProcessRecord
from daemoneye.store import Store, open_readonly
from daemoneye.store.history import _ALERTS_BEFORE, history_reach, processes_at, timeline
from daemoneye.store.rows import PROCESS_COLUMNS, process_row
from tests.unit.conftest import RecordFactory

Span = tuple[int, float, float | None]  # pid, start, end (None: still running)

spans = st.lists(
    st.tuples(
        st.integers(1, 60),
        st.integers(0, 100).map(float),
        st.none() | st.integers(0, 50).map(float),
    ).map(lambda t: (t[0], t[1], None if t[2] is None else t[1] + t[2])),
    max_size=40,
    unique_by=lambda t: (t[0], t[1]),
)


def fill(store: Store, make_record: RecordFactory, instances: list[Span]) -> list[ProcessRecord]:
    records = [
        dataclasses.replace(
            make_record(pid, start),
            first_seen=start,
            last_seen=start if end is None else end,
            ended_at=end,
        )
        for pid, start, end in instances
    ]
    columns = ", ".join(PROCESS_COLUMNS)
    marks = ", ".join("?" * len(PROCESS_COLUMNS))
    with store.transaction("test rows") as conn:
        conn.execute("DELETE FROM processes")
        for record in records:
            conn.execute(f"INSERT INTO processes ({columns}) VALUES ({marks})", process_row(record))
    return records


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    instances=spans,
    moment=st.integers(-5, 160).map(lambda n: n - 0.5) | st.integers(0, 160).map(float),
)
def test_the_set_at_a_moment_is_exactly_the_instances_alive_then(
    store: Store, make_record: RecordFactory, instances: list[Span], moment: float
) -> None:
    records = fill(store, make_record, instances)
    expected = {
        (r.pid, r.start_time)
        for r in records
        if r.start_time <= moment and (r.ended_at is None or r.ended_at > moment)
    }
    with open_readonly(store.path) as reader:
        got = processes_at(reader, moment)
    assert {(r.pid, r.start_time) for r in got} == expected
    assert [r.pid for r in got] == sorted(r.pid for r in got)


def test_before_any_history_nothing_ran_and_in_the_future_only_the_live(
    store: Store, make_record: RecordFactory
) -> None:
    fill(store, make_record, [(10, 100.0, 200.0), (11, 150.0, None)])
    with open_readonly(store.path) as reader:
        assert processes_at(reader, 50.0) == []
        assert [r.pid for r in processes_at(reader, 10_000.0)] == [11]
        assert [r.pid for r in processes_at(reader, 200.0)] == [11]  # ended at 200: not alive
        reach = history_reach(reader)
    assert (reach.oldest, reach.newest, reach.instances) == (100.0, 200.0, 2)


def add_events(store: Store, events: list[tuple[float, str, int, float]]) -> None:
    with store.transaction("test events") as conn:
        for ts, kind, pid, start in events:
            conn.execute(
                "INSERT INTO process_events (ts, kind, pid, start_time, cmdline, exit_code, source)"
                " VALUES (?, ?, ?, ?, ?, ?, 'poll')",
                (ts, kind, pid, start, f"prog-{pid}", 0 if kind == "exit" else None),
            )


def test_paging_the_timeline_gives_every_event_once_newest_first(
    store: Store, make_record: RecordFactory
) -> None:
    fill(store, make_record, [(pid, 1.0, None) for pid in range(1, 31)])
    # Ties on purpose: three events share each second.
    add_events(store, [(float(10 + n // 3), "exec", n + 1, 1.0) for n in range(30)])
    with store.transaction("test alert") as conn:
        conn.execute(
            "INSERT INTO alerts (rule_id, severity, title, pid, start_time, first_seen, last_seen)"
            " VALUES ('r', 'high', 'bad thing', 5, 1.0, 12.0, 12.0)"
        )
    seen: list[tuple[float, tuple[int, int]]] = []
    with open_readonly(store.path) as reader:
        page = timeline(reader, since=0.0, limit=4)
        while page:
            seen.extend((event.ts, event.seq) for event in page)
            page = timeline(reader, since=0.0, before=seen[-1], limit=4)
        alerts = timeline(reader, since=0.0, kinds=["alert"])
        execs_at_12 = timeline(reader, since=12.0, until=12.0, kinds=["exec"])
    assert len(seen) == 31 and len(set(seen)) == 31
    assert seen == sorted(seen, reverse=True)
    assert [(a.kind, a.pid, a.name, a.detail) for a in alerts] == [
        ("alert", 5, "sleep", "high r: bad thing")
    ]
    assert sorted(e.pid for e in execs_at_12) == [7, 8, 9]


def test_an_unknown_event_kind_is_named(store: Store) -> None:
    with open_readonly(store.path) as reader, pytest.raises(ValueError, match="'spawn'"):
        timeline(reader, since=0.0, kinds=["spawn"])


def test_history_of_an_empty_store(store_path: Path, store: Store) -> None:
    with open_readonly(store_path) as reader:
        reach = history_reach(reader)
        assert timeline(reader, since=0.0) == []
    assert (reach.oldest, reach.newest, reach.instances) == (None, None, 0)


long_spans = st.lists(
    st.tuples(
        st.integers(1, 60),
        st.integers(0, 20_000).map(float),
        # lifetimes around the short/long boundary (store/history.py) and far beyond it
        st.none()
        | st.sampled_from([0.0, 2999.5, 3000.0, 3000.5, 3599.9, 3600.0, 3600.1, 9000.0])
        | st.integers(0, 30_000).map(float),
    ).map(lambda t: (t[0], t[1], None if t[2] is None else t[1] + t[2])),
    max_size=40,
    unique_by=lambda t: (t[0], t[1]),
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    instances=long_spans,
    moment=st.integers(0, 52_000).map(float) | st.integers(0, 52_000).map(lambda n: n + 0.5),
)
def test_the_set_at_a_moment_holds_long_and_short_lives_alike(
    store: Store, make_record: RecordFactory, instances: list[Span], moment: float
) -> None:
    records = fill(store, make_record, instances)
    expected = {
        (r.pid, r.start_time)
        for r in records
        if r.start_time <= moment and (r.ended_at is None or r.ended_at > moment)
    }
    with open_readonly(store.path) as reader:
        got = processes_at(reader, moment)
    assert {(r.pid, r.start_time) for r in got} == expected


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    moments=st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=40),
    page=st.integers(1, 7),
)
def test_pages_of_events_and_alerts_tied_in_time_give_each_once_in_order(
    store: Store, moments: list[tuple[int, bool]], page: int
) -> None:
    with store.transaction("events and alerts") as conn:
        conn.execute("DELETE FROM process_events")
        conn.execute("DELETE FROM alerts")
        for n, (ts, is_alert) in enumerate(moments):
            if is_alert:
                conn.execute(
                    "INSERT INTO alerts (rule_id, severity, title, pid, start_time, first_seen,"
                    " last_seen) VALUES (?, 'low', 't', ?, 1.0, ?, ?)",
                    (f"r{n}", n, float(ts), float(ts)),
                )
            else:
                conn.execute(
                    "INSERT INTO process_events (ts, kind, pid, start_time, source)"
                    " VALUES (?, 'exec', ?, 1.0, 'poll')",
                    (float(ts), n),
                )
    seen: list[tuple[float, tuple[int, int]]] = []
    with open_readonly(store.path) as reader:
        events = timeline(reader, since=0.0, limit=page)
        while events:
            seen.extend((event.ts, event.seq) for event in events)
            events = timeline(reader, since=0.0, before=seen[-1], limit=page)
    assert len(seen) == len(moments) == len(set(seen))
    assert seen == sorted(seen, reverse=True)


def test_the_timelines_pages_read_along_indexes_not_the_whole_table(store: Store) -> None:
    """A page of events or alerts walks an index on time and joins only its own rows: with
    148,000 alerts, sorting them all for each page took about a second."""
    plan = " | ".join(
        str(step[-1])
        for step in store.fetch_rows("EXPLAIN QUERY PLAN " + _ALERTS_BEFORE, (0.0, 1e12, 2, 0, 200))
    )
    assert "USING INDEX alerts_first_seen" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
