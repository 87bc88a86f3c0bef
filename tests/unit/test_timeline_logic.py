"""The timeline's logic without Textual: moments as the screen writes them (also across a DST
change and a clock set back), steps kept inside the history, exits decoded, the activity
strip and the store's activity counts."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest

from daemoneye.models import HistoryActivity, HistoryReach, TimelineEvent
from daemoneye.store import Store, open_readonly
from daemoneye.store.activity import activity
from daemoneye.store.rows import PROCESS_COLUMNS, process_row
from daemoneye.tui.logic.timeline import (
    MAX_EVENTS,
    TimelinePages,
    ago_text,
    axis_line,
    clock_text,
    event_detail,
    exit_text,
    past_banner,
    reach_problem,
    stepped,
    strip_cells,
)
from tests.unit.conftest import RecordFactory

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
REACH = HistoryReach(oldest=NOW - 7 * 86400, newest=NOW, instances=10)


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_hour_a_dst_change_repeats_reads_as_two_moments(berlin: None) -> None:
    # 2023-10-29: Berlin's clocks went from 03:00 CEST back to 02:00 CET; 02:30 happened twice.
    first = 1698539400.0  # 00:30 UTC = 02:30 CEST
    second = first + 3600  # 01:30 UTC = 02:30 CET
    now = second + 600
    assert clock_text(first, now, zone=True) == "02:30:00 CEST"
    assert clock_text(second, now, zone=True) == "02:30:00 CET"
    assert past_banner(first, now).startswith(" AS OF 02:30:00 CEST, 1 h ago")


def test_a_moment_on_another_day_carries_its_date(utc: None) -> None:
    assert clock_text(NOW - 3600, NOW) == "21:13:20"
    assert clock_text(NOW - 86400, NOW) == "Nov 13 22:13:20"


def test_a_clock_set_back_never_counts_backwards() -> None:
    # the past view was opened at NOW - 600; then the wall clock was set back an hour
    assert ago_text(NOW - 600, NOW) == "10 min ago"
    later_text = ago_text(NOW - 600, NOW - 3600)
    assert "ago" not in later_text and "clock set back" in later_text


def test_out_of_reach_moments_say_what_the_window_is(utc: None) -> None:
    before = reach_problem(NOW - 8 * 86400, NOW, REACH)
    assert before is not None and "before the history" in before
    assert "history from Nov 07 22:13:20 (7 d)" in before
    future = reach_problem(NOW + 600, NOW, REACH)
    assert future is not None and "in the future" in future and "history from" in future
    assert reach_problem(NOW - 86400, NOW, REACH) is None


def test_steps_stay_inside_the_history() -> None:
    assert stepped(None, -60, NOW, REACH) == NOW - 60
    assert stepped(NOW - 120, 3600, NOW, REACH) == NOW  # never past now
    assert stepped(REACH.oldest, -3600, NOW, REACH) == REACH.oldest
    assert stepped(NOW - 7200, -3600, NOW, REACH) == NOW - 10800


@pytest.mark.parametrize(
    ("code", "text"),
    [(0, "exit code 0"), (2, "exit code 2"), (-9, "killed by SIGKILL"), (None, "exited")],
)
def test_exits_say_how(code: int | None, text: str) -> None:
    assert exit_text(code).startswith(text)


def test_an_exit_event_is_decoded() -> None:
    event = TimelineEvent(NOW, "exit", 5, NOW - 9, "x", "root", 1, "exit code -15", (0, 1))
    assert event_detail(event) == "killed by SIGTERM"
    alert = dataclasses.replace(event, kind="alert", detail="exit code -15 is a title")
    assert event_detail(alert) == "exit code -15 is a title"


def test_pages_are_bounded_and_stop_asking_at_the_cap() -> None:
    pages = TimelinePages()
    event = TimelineEvent(NOW, "exec", 5, NOW, "x", "root", 1, "", (0, 1))
    for index in range(MAX_EVENTS // 100 + 2):
        pages.add(
            [dataclasses.replace(event, seq=(0, index * 100 + n)) for n in range(100)],
            (NOW, 0, 1),
            REACH,
        )
    assert len(pages.events or ()) == MAX_EVENTS
    assert pages.next is None and not pages.wants_more(MAX_EVENTS - 1)


def test_the_strip_scales_marks_alerts_and_the_cursor() -> None:
    act = HistoryActivity(NOW - 400, 100.0, (0, 4, 8, 1), (0, 0, 1, 0), REACH)
    cells = strip_cells(act, 4, NOW - 50)
    assert [c.char for c in cells[:3]] == [" ", "▄", "█"]
    assert cells[2].tone == "alert"
    assert cells[3].tone == "cursor"  # NOW - 50 falls in the last bucket
    assert strip_cells(act, 4, NOW - 400)[0].tone == "cursor"


def test_the_axis_keeps_both_ends_and_the_cursor(utc: None) -> None:
    line = axis_line(NOW - 86400, NOW - 3600, NOW, 80, 70)
    assert len(line) == 80
    assert line.startswith(" Nov 13 22:13:20") and line.endswith("now ")
    assert "▲ 21:13:20 UTC" in line


def test_the_store_counts_new_instances_and_alerts_per_bucket(
    store: Store, make_record: RecordFactory
) -> None:
    starts = [10.0, 11.0, 55.0, 99.0, 150.0]
    columns = ", ".join(PROCESS_COLUMNS)
    marks = ", ".join("?" * len(PROCESS_COLUMNS))
    with store.transaction("test rows") as conn:
        for pid, start in enumerate(starts, 1):
            record = dataclasses.replace(make_record(pid, start), first_seen=start)
            conn.execute(f"INSERT INTO processes ({columns}) VALUES ({marks})", process_row(record))
    with open_readonly(store.path) as reader:
        width, started, alerts = activity(reader, 0.0, 100.0, 4)
    assert width == 25.0
    assert started == (2, 0, 1, 1)  # 150 is outside [0, 100)
    assert alerts == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="buckets"):
        activity(reader, 0.0, 100.0, 0)
