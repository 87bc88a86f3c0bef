"""Sparklines: one bar per recent sample, the newest last, spanning lowest to highest."""

from __future__ import annotations

from daemoneye.tui.logic.spark import BARS, spark_labels, spark_levels


def test_bars_span_the_lowest_to_the_highest_sample() -> None:
    assert spark_levels([300.0, 310.0, 320.0, 330.0, 340.0], 10) == [0, 1, 3, 5, 7]


def test_only_the_newest_samples_that_fit_are_drawn() -> None:
    samples = [float(n) for n in range(60)]
    levels = spark_levels(samples, 8)
    assert len(levels) == 8
    assert levels[0] == 0 and levels[-1] == len(BARS) - 1  # 52 … 59, rescaled to them


def test_a_steady_series_is_a_flat_line_and_nothing_fits_in_no_room() -> None:
    assert spark_levels([5.0, 5.0, 5.0], 10) == [0, 0, 0]
    assert spark_levels([], 10) == []
    assert spark_levels([1.0, 2.0], 0) == []


def test_labels_give_the_top_of_each_line_or_a_dash_before_any_sample() -> None:
    assert spark_labels([1.0, 96.4], [100.0, 339 * 1024.0**2]) == ("cpu ≤96%", "rss ≤339.0M")
    assert spark_labels([], []) == ("cpu —", "rss —")
