"""The daemon's live table: deltas between scanner snapshots, the indexes behind
`processes.get`, pages of `processes.list`, snapshots — and that a client replaying the deltas
ends with exactly the daemon's table."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemoneye.daemon import live_table
from daemoneye.daemon.live_table import LiveTable, compute_update, encode_missing, encode_record
from daemoneye.daemon.subscriber_feed import ENCODE_OFF_LOOP, SubscriberFeed
from daemoneye.filters import parse_filter
from daemoneye.ipc import protocol
from daemoneye.ipc.client import apply_delta
from daemoneye.ipc.codec import from_wire, to_wire
from daemoneye.ipc.protocol import ProcessDetail, ProcessesPage, SnapshotPart, fit_children
from daemoneye.models import ProcessesDelta, ProcessKey, ProcessRecord
from tests.unit.conftest import RecordFactory

Table = dict[ProcessKey, ProcessRecord]


def table_of(*records: ProcessRecord) -> Table:
    return {record.key: record for record in records}


def step(live: LiveTable, current: Table) -> ProcessesDelta:
    update = compute_update(live.records, current, live.seq + 1)
    live.apply(update)
    return update.delta


def test_the_pid_and_children_indexes_share_one_key_per_process(
    make_record: RecordFactory,
) -> None:
    """The agent keeps 10,000 live processes indexed twice: one key object each, not two."""
    parent, child = make_record(10, 100.0), make_record(11, 101.0, ppid=10)
    live = LiveTable()
    step(live, table_of(parent, child))
    (sibling,) = live.children[10]
    assert sibling == child.key
    assert sibling is live.by_pid[11]


def test_unchanged_records_cost_nothing_and_changes_carry_only_what_changed(
    make_record: RecordFactory,
) -> None:
    a, b, c = make_record(10, 100.0), make_record(11, 101.0), make_record(12, 102.0)
    live = LiveTable()
    first = step(live, table_of(a, b, c))
    assert {r.pid for r in first.added} == {10, 11, 12} and first.seq == 1

    b2 = dataclasses.replace(b, rss=8192, state="R", last_seen=105.0)
    d = make_record(13, 104.0)
    delta = step(live, table_of(a, b2, d))  # a is the very same object: not looked at
    assert delta.seq == 2
    assert [r.pid for r in delta.added] == [13]
    assert delta.removed == (c.key,)
    (change,) = delta.changed
    assert (change.pid, change.start_time) == (11, 101.0)
    assert dict(change.fields) == {"rss": 8192, "state": "R", "last_seen": 105.0}

    rebuilt_equal = dataclasses.replace(a)  # a new object, same values
    quiet = step(live, table_of(rebuilt_equal, b2, d))
    assert not (quiet.added or quiet.changed or quiet.removed)
    assert live.seq == 2  # nothing to tell: no delta, no new seq


def test_an_exec_sends_the_whole_record_again(make_record: RecordFactory) -> None:
    shell = make_record(20, 200.0, name="bash", exe="/bin/bash", cmdline=("bash",))
    live = LiveTable()
    step(live, table_of(shell))
    execed = dataclasses.replace(shell, name="nc", exe="/usr/bin/nc", cmdline=("nc", "-l"))
    delta = step(live, table_of(execed))
    assert delta.added == (execed,) and delta.changed == () and delta.removed == ()


def replay(lines: list[bytes]) -> tuple[list[ProcessesDelta], list[SnapshotPart]]:
    deltas, parts = [], []
    for line in lines:
        assert len(line) <= protocol.MAX_MESSAGE_BYTES
        message = json.loads(line)
        if message["method"] == protocol.NOTIFY_PROCESSES_DELTA:
            deltas.append(from_wire(ProcessesDelta, message["params"]))
        else:
            parts.append(from_wire(SnapshotPart, message["params"]))
    return deltas, parts


@st.composite
def snapshot_sequences(draw: st.DrawFn) -> list[list[tuple[int, int, int, int, str]]]:
    """Ticks of (pid, start, ppid, rss, cmd) rows: pids come and go, values change."""
    row = st.tuples(
        st.integers(2, 30),
        st.integers(0, 3),
        st.integers(1, 30),
        st.sampled_from([4096, 8192]),
        st.sampled_from(["a", "b"]),
    )
    return draw(st.lists(st.lists(row, max_size=25), min_size=1, max_size=8))


@settings(max_examples=150, deadline=None)
@given(snapshot_sequences())
def test_a_client_replaying_snapshot_and_deltas_has_the_daemons_table(
    ticks: list[list[tuple[int, int, int, int, str]]],
) -> None:
    live = LiveTable()
    client: Table = {}
    subscribed_at = len(ticks) // 2
    for number, rows in enumerate(ticks):
        current: Table = {}
        for pid, start, ppid, rss, cmd in rows:
            if pid in {k.pid for k in current}:
                continue  # one live instance per pid
            previous = live.records.get(ProcessKey(pid, float(start)))
            record = ProcessRecord(
                pid,
                ppid,
                float(start),
                "p",
                "/bin/p",
                (cmd,),
                "/",
                0,
                "r",
                0,
                "S",
                1,
                rss,
                0.0,
                None,
                False,
                1.0,
                1.0,
            )
            current[record.key] = previous if previous == record else record
        update = compute_update(live.records, current, live.seq + 1)
        live.apply(update)
        if number == subscribed_at:
            _, parts = replay(live.snapshot_lines())
            client = {r.key: r for part in parts for r in part.processes}
        elif number > subscribed_at:
            deltas, _ = replay(list(update.delta_lines))
            for delta in deltas:
                apply_delta(client, delta)
        if number >= subscribed_at:
            assert client == live.records
        # the indexes always agree with a rebuild from scratch
        assert live.by_pid == {k.pid: k for k in live.records}
        expected_children: dict[int, set[ProcessKey]] = {}
        for record in live.records.values():
            expected_children.setdefault(record.ppid, set()).add(record.key)
        assert live.children == expected_children
        assert set(live._encoded) <= set(live.records)
        assert all(live.encoded(k) == encode_record(r) for k, r in live.records.items())


def test_ancestry_and_children_respect_pid_reuse(make_record: RecordFactory) -> None:
    init = make_record(1, 1.0, ppid=0, name="init")
    shell = make_record(100, 50.0, ppid=1, name="bash")
    child = make_record(200, 60.0, ppid=100, name="sleep")
    # pid 300's parent is "pid 100", but this pid-100 instance started after it: not its parent
    orphan = make_record(300, 40.0, ppid=100, name="orphan")
    live = LiveTable()
    step(live, table_of(init, shell, child, orphan))
    record, chain, children = live.live_detail(200, None)  # type: ignore[misc]
    assert record == child and [p.name for p in chain] == ["bash", "init"]
    assert live.chain_is_complete(chain, record)
    _, chain, _ = live.live_detail(300, 40.0)  # type: ignore[misc]
    assert chain == []
    _, _, children = live.live_detail(100, None)  # type: ignore[misc]
    assert [c.name for c in children] == ["sleep"]  # not the older "orphan"
    assert live.live_detail(200, 61.0) is None  # another instance than the one asked for
    assert live.live_detail(999, None) is None


def test_pages_cover_every_match_once_and_stay_under_the_message_limit(
    make_record: RecordFactory,
) -> None:
    big = "x" * 50_000  # ~17 records per 768 KiB page
    records = [
        make_record(pid, float(pid), cmdline=("sleep", big), user="root" if pid % 2 else "alice")
        for pid in range(2, 100)
    ]
    live = LiveTable()
    step(live, table_of(*records))
    for text, expected in (("", records), ("user:root", [r for r in records if r.pid % 2])):
        got: list[ProcessRecord] = []
        after = None
        pages = 0
        while True:
            raw = live.page(parse_filter(text), after, limit=100_000)
            assert len(raw) < protocol.MAX_MESSAGE_BYTES
            page = from_wire(ProcessesPage, json.loads(raw))
            assert page.total == len(expected)
            got += page.processes
            pages += 1
            if page.next is None:
                break
            after = page.next
        assert got == sorted(expected, key=lambda r: r.pid) and pages > 1
    limited = from_wire(ProcessesPage, json.loads(live.page(parse_filter(""), None, limit=3)))
    assert [r.pid for r in limited.processes] == [2, 3, 4] and limited.next == (4, 4.0)


def test_snapshot_parts_hold_the_whole_table(make_record: RecordFactory) -> None:
    records = [make_record(pid, 1.0, cmdline=("x" * 20_000,)) for pid in range(2, 150)]
    live = LiveTable()
    step(live, table_of(*records))
    _, parts = replay(live.snapshot_lines())
    assert len(parts) > 1 and [p.part for p in parts] == list(range(1, len(parts) + 1))
    assert all(p.parts == len(parts) and p.seq == live.seq for p in parts)
    assert {r.key: r for p in parts for r in p.processes} == live.records
    empty = LiveTable()
    (only,) = replay(empty.snapshot_lines())[1]
    assert only.processes == () and only.parts == 1


def test_a_delta_too_big_for_one_message_is_split(make_record: RecordFactory) -> None:
    records = [make_record(pid, 1.0, cmdline=("y" * 30_000,)) for pid in range(2, 100)]
    update = compute_update({}, table_of(*records), 1)
    deltas, _ = replay(list(update.delta_lines))
    assert len(deltas) > 1 and {d.seq for d in deltas} == {1}
    assert sorted(r.pid for d in deltas for r in d.added) == list(range(2, 100))


def test_a_process_with_thousands_of_children_still_fits_in_one_answer(
    make_record: RecordFactory,
) -> None:
    parent = make_record(2, 1.0, name="init")
    children = [
        make_record(pid, 2.0 + pid, ppid=2, cmdline=("worker", "x" * 1000))
        for pid in range(3, 3003)
    ]
    live = LiveTable()
    step(live, table_of(parent, *children))
    record, chain, kids = live.live_detail(2, None)  # type: ignore[misc]
    detail = fit_children(
        ProcessDetail(record, True, tuple(chain), tuple(kids), None, len(kids)),
        [len(live.encoded(c.key)) for c in kids],
    )
    line = protocol.response(1, to_wire(detail))
    assert len(line) < protocol.MAX_MESSAGE_BYTES
    assert detail.children_total == 3000 and 0 < len(detail.children) < 3000
    assert list(detail.children) == kids[: len(detail.children)]  # the oldest ones


def test_nothing_is_encoded_until_a_client_needs_it(make_record: RecordFactory) -> None:
    """A daemon nobody watches keeps no JSON copy of its table; a page or a snapshot encodes
    what it shows, once; a record that changed is never served from its old encoding."""
    a, b = make_record(10, 100.0), make_record(11, 101.0)
    live = LiveTable()
    update = compute_update(live.records, table_of(a, b), live.seq + 1, lines=False)
    assert update.encoded == {} and update.delta_lines == ()
    live.apply(update)
    assert live._encoded == {} and live.seq == 1, "the table moved on: a new seq"
    page = json.loads(live.page(parse_filter(""), None, 1))
    assert [p["pid"] for p in page["processes"]] == [10]
    assert set(live._encoded) == {a.key}
    b2 = dataclasses.replace(b, name="renamed")
    live.apply(compute_update(live.records, table_of(a, b2), live.seq + 1, lines=False))
    _, parts = replay(live.snapshot_lines())
    assert {r.key: r for p in parts for r in p.processes} == {a.key: a, b2.key: b2}
    a2 = dataclasses.replace(a, name="renamed too")
    live.apply(compute_update(live.records, table_of(a2, b2), live.seq + 1, lines=False))
    assert a.key not in live._encoded, "the old encoding is dropped with the change"
    assert json.loads(live.encoded(a.key))["name"] == "renamed too"


def test_a_subscriber_who_came_while_an_update_was_computed_gets_its_delta(
    make_record: RecordFactory,
) -> None:
    a = make_record(10, 100.0)
    live = LiveTable()
    live.apply(compute_update({}, table_of(a), 1))
    b = make_record(11, 101.0)
    late = compute_update(live.records, table_of(a, b), live.seq + 1, lines=False)
    assert late.delta_lines == ()
    deltas, _ = replay(list(late.with_lines().delta_lines))
    assert [r.key for d in deltas for r in d.added] == [b.key]
    assert all(d.seq == 2 for d in deltas)


def test_encodings_made_off_the_loop_are_taken_only_for_records_still_live(
    make_record: RecordFactory,
) -> None:
    a, b, c = make_record(10, 100.0), make_record(11, 101.0), make_record(12, 102.0)
    live = LiveTable()
    live.apply(compute_update({}, table_of(a, b, c), 1, lines=False))
    live.encoded(c.key)
    missing = live.missing()
    assert sorted(k.pid for k, _ in missing) == [10, 11], "c is encoded already"
    made = encode_missing(missing)
    b2 = dataclasses.replace(b, name="changed meanwhile")
    live.apply(compute_update(live.records, table_of(a, b2, c), 2, lines=False))
    live.adopt(made)
    assert live._encoded[a.key] == encode_record(a)
    assert b.key not in live._encoded, "b's old encoding is not taken"
    assert json.loads(live.encoded(b.key))["name"] == "changed meanwhile"


def test_the_first_subscribers_snapshot_is_encoded_off_the_event_loop(
    make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[int] = set()
    real = live_table.encode_record

    def noting(record: ProcessRecord) -> bytes:
        threads.add(threading.get_ident())
        return real(record)

    monkeypatch.setattr(live_table, "encode_record", noting)

    async def subscribe_first() -> None:
        feed = SubscriberFeed.__new__(SubscriberFeed)  # only its table and loop are used
        feed.table = LiveTable()
        feed._loop = asyncio.get_running_loop()
        records = [make_record(pid, 1.0 + pid) for pid in range(2, 2 + 2 * ENCODE_OFF_LOOP)]
        feed.table.apply(compute_update({}, table_of(*records), 1, lines=False))
        assert not threads
        await feed.encode_table()
        assert set(feed.table._encoded) == set(feed.table.records)
        lines = feed.table.snapshot_lines()
        assert threading.get_ident() not in threads, "nothing encoded on the loop"
        assert {r.key for p in replay(lines)[1] for r in p.processes} == set(feed.table.records)

    asyncio.run(subscribe_first())
