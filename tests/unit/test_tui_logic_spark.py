"""Sparklines: one bar per recent sample, the newest last, spanning lowest to highest."""

from __future__ import annotations

from daemoneye.tui.logic.spark import BARS, spark_labels, spark_levels, sparklines


def test_bars_span_the_lowest_to_the_highest_sample() -> None:
    assert spark_levels([300.0, 310.0, 320.0, 330.0, 340.0], 10) == [0, 2, 4, 6, 7]


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


def test_a_label_gives_the_top_of_the_bars_drawn_not_of_older_samples() -> None:
    cpu = [96.0] + [5.0, 10.0] * 30  # a spike that has scrolled out of 40 columns
    rss = [float(n) for n in range(61)]
    (cpu_label, cpu_levels), (rss_label, rss_levels) = sparklines(cpu, rss, 40)
    assert cpu_label == "cpu ≤10%" and len(cpu_levels) == 40
    assert max(cpu_levels) == len(BARS) - 1
    assert rss_label.startswith("rss ≤60") and len(rss_levels) == 40
    assert sparklines(cpu, rss, 0) == [("cpu —", []), ("rss —", [])]
