"""The feed worker's live process set: resets, deltas, and what it ignores."""

from __future__ import annotations

from daemoneye.models import ProcessChange, ProcessesDelta, ProcessKey
from daemoneye.tui.logic.keys import record_key, row_key
from daemoneye.tui.logic.live import LiveProcesses, changed_record
from tests.fakes.dashboard_source import FAKE_NOW, proc

A = proc(10, 1, "a", ["a"], started=60, cpu=1.0)
B = proc(11, 1, "b", ["b"], started=50)


def test_a_reset_replaces_everything_and_starts_a_new_generation() -> None:
    live = LiveProcesses()
    live.reset([A])
    first = live.snapshot()
    live.reset([B])
    second = live.snapshot()
    assert set(second.records) == {record_key(B)}
    assert second.generation == first.generation + 1


def test_deltas_add_change_and_remove_by_instance() -> None:
    live = LiveProcesses()
    live.reset([A, B])
    live.apply(
        ProcessesDelta(
            5,
            (proc(12, 1, "c", started=1),),
            (ProcessChange(10, A.start_time, (("cpu_percent", 50.0),)),),
            (B.key,),
        )
    )
    snapshot = live.snapshot()
    assert snapshot.seq == 5
    assert set(snapshot.records) == {record_key(A), row_key(ProcessKey(12, FAKE_NOW - 1))}
    assert snapshot.records[record_key(A)].cpu_percent == 50.0


def test_changes_for_another_instance_of_the_same_pid_are_ignored() -> None:
    live = LiveProcesses()
    live.reset([A])
    live.apply(ProcessesDelta(1, (), (ProcessChange(10, A.start_time + 1, (("rss", 1),)),), ()))
    assert live.snapshot().records[record_key(A)] is A


def test_unknown_and_identity_fields_are_never_applied() -> None:
    change = ProcessChange(10, A.start_time, (("pid", 99), ("no_such_field", 1), ("rss", 7)))
    record = changed_record(A, change)
    assert record.pid == 10 and record.rss == 7


def test_snapshots_are_immutable_views() -> None:
    live = LiveProcesses()
    live.reset([A])
    snapshot = live.snapshot()
    live.apply(ProcessesDelta(1, (), (), (A.key,)))
    assert record_key(A) in snapshot.records, "an earlier snapshot does not change"


def test_a_set_says_which_keys_changed_since_an_older_one() -> None:
    """What lets a consumer that skipped replaced messages update only what changed."""
    live = LiveProcesses()
    live.reset([A, B])
    start = live.snapshot()
    c = proc(12, 1, "c", started=1)
    live.apply(ProcessesDelta(1, (c,), (), ()))
    middle = live.snapshot()
    live.apply(ProcessesDelta(2, (), (ProcessChange(10, A.start_time, (("rss", 9),)),), (B.key,)))
    live.apply(ProcessesDelta(3, (), (ProcessChange(10, A.start_time, (("rss", 9),)),), ()))
    latest = live.snapshot()
    assert middle.changed_since(start) == {record_key(c)}
    assert latest.changed_since(middle) == {record_key(A), record_key(B)}
    assert latest.changed_since(start) == {record_key(A), record_key(B), record_key(c)}
    assert latest.changed_since(latest) == frozenset()


def test_what_changed_is_unknown_across_a_reset_or_beyond_the_log() -> None:
    from daemoneye.tui.logic.live import CHANGE_LOG

    live = LiveProcesses()
    live.reset([A])
    old = live.snapshot()
    for seq in range(1, CHANGE_LOG + 2):
        live.apply(ProcessesDelta(seq, (), (ProcessChange(10, A.start_time, (("rss", seq),)),), ()))
    assert live.snapshot().changed_since(old) is None, "further back than the log reaches"
    recent = live.snapshot()
    live.reset([A])
    assert live.snapshot().changed_since(recent) is None, "another generation"
