"""Formatting: numbers and times like the CLI, hostile text made printable and bounded."""

from __future__ import annotations

import tracemalloc

import pytest

from daemoneye.tui.logic import format as fmt
from daemoneye.tui.logic.glyphs import TIMES
from tests.fakes.dashboard_source import FAKE_NOW, proc

pytestmark = pytest.mark.usefixtures("utc")  # times are shown in local time


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (None, ""),
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0K"),
        (1536, "1.5K"),
        (5 * 1024**3, "5.0G"),
        (2**50, "1024.0T"),
    ],
)
def test_bytes_in_binary_units(count: int | None, text: str) -> None:
    assert fmt.format_bytes(count) == text


@pytest.mark.parametrize(
    ("age", "text"), [(0, "22:13:20"), (3600, "21:13:20"), (86400 * 3, "2023-11-11 22:13")]
)
def test_times_today_as_clock_older_with_date(age: float, text: str) -> None:
    assert fmt.format_time(FAKE_NOW - age, FAKE_NOW) == text


def test_start_times_fit_eight_characters() -> None:
    assert fmt.format_started(FAKE_NOW - 60, FAKE_NOW) == "22:12:20"
    assert fmt.format_started(FAKE_NOW - 3 * 86400, FAKE_NOW) == "Nov 11"
    assert fmt.format_started(FAKE_NOW - 400 * 86400, FAKE_NOW) == "2022"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (5, "5s"),
        (65, "1m 05s"),
        (3 * 3600 + 120, "3h 02m"),
        (86400 * 2 + 3600, "2d 1h"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert fmt.format_duration(seconds) == text


def test_control_characters_become_visible_escapes() -> None:
    assert fmt.safe("a\x1b[2Jb\nc\u202ed") == "a\\x1b[2Jb\\nc\\u202ed"
    assert fmt.safe_cell("\x1b]0;owned\x07", 40) == "\\x1b]0;owned\\x07"


def test_markup_is_left_as_typed() -> None:
    assert fmt.safe("[red]x[/red]") == "[red]x[/red]"


def test_long_text_is_cut_before_any_work_and_says_so() -> None:
    text = fmt.safe("x" * 100_000, 10)
    assert text == "x" * 10 + "… (+99990 chars)"
    assert len(fmt.safe_cell("y" * 100_000, 20)) == 20


def test_a_128_kib_command_line_costs_only_its_cell() -> None:
    record = proc(5, 1, "big", ["python3", "-c", "A" * 128 * 1024], started=1)
    tracemalloc.start()
    try:
        cell = fmt.cmd_cell(record)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024, f"formatting one cell allocated {peak} bytes: the whole argv was copied"
    assert len(cell) == fmt.CMD_CELL_CHARS and cell.endswith("…")


def test_an_empty_command_line_shows_the_kernel_name() -> None:
    assert fmt.cmd_cell(proc(2, 0, "kthreadd", started=1)) == "[kthreadd]"


def test_repeats_say_how_often_since_when() -> None:
    from tests.fakes.dashboard_source import sample_alerts

    alert = sample_alerts()[0]
    assert fmt.repeats(alert, FAKE_NOW) == f"{TIMES}12 since 22:08:30"
