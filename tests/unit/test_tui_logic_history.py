"""Sparkline history: sampled when a record changes, filled forward, bounded, forgotten."""

from __future__ import annotations

import dataclasses

from daemoneye.tui.logic.history import SampleHistory
from daemoneye.tui.logic.keys import record_key
from tests.fakes.dashboard_source import proc

A = proc(10, 1, "a", started=5, cpu=1.0, rss=100)
KEY = record_key(A)


def test_unchanged_records_are_filled_forward() -> None:
    history = SampleHistory(length=10)
    history.record({KEY: A})
    history.record({KEY: A})
    changed = dataclasses.replace(A, cpu_percent=5.0, rss=300)
    history.record({KEY: changed})
    history.record({KEY: changed})
    cpu, rss = history.samples(KEY)
    assert cpu == [1.0, 1.0, 5.0, 5.0]
    assert rss == [100.0, 100.0, 300.0, 300.0]


def test_only_the_last_length_samples_are_kept() -> None:
    history = SampleHistory(length=4)
    record = A
    for tick in range(10):
        record = dataclasses.replace(record, cpu_percent=float(tick))
        history.record({KEY: record})
    assert history.samples(KEY)[0] == [6.0, 7.0, 8.0, 9.0]


def test_ended_instances_are_forgotten() -> None:
    history = SampleHistory()
    history.record({KEY: A})
    history.record({})
    assert history.samples(KEY) == ([], []) and len(history) == 0


def test_told_what_changed_it_samples_the_same_as_looking_at_everything() -> None:
    """The app passes `ProcessSet.changed_since`: only those keys are looked at, and the
    samples are the ones a full look gives."""
    other = proc(11, 1, "b", started=5, cpu=2.0, rss=200)
    other_key = record_key(other)
    hinted, full = SampleHistory(length=10), SampleHistory(length=10)
    sets = [
        {KEY: A, other_key: other},
        {KEY: dataclasses.replace(A, cpu_percent=7.0), other_key: other},
        {KEY: dataclasses.replace(A, cpu_percent=7.0)},
    ]
    hints: list[set[str] | None] = [None, {KEY}, {KEY, other_key}]
    for records, hint in zip(sets, hints, strict=True):
        hinted.record(records, hint)
        full.record(records)
    assert hinted.samples(KEY) == full.samples(KEY) == ([1.0, 7.0, 7.0], [100.0] * 3)
    assert hinted.samples(other_key) == ([], []) and len(hinted) == len(full) == 1
