"""Sparklines as data: which bar each recent sample gets, and the label that gives the scale.

One bar per sample, the newest at the right. The bars span the lowest to the highest sample
shown, so a slow leak of memory is visible; the label says what the top bar means
("rss ≤339.0M").
"""

from __future__ import annotations

from collections.abc import Sequence

from daemoneye.tui.logic.format import DASH, format_bytes

BARS = "▁▂▃▄▅▆▇█"


def spark_levels(values: Sequence[float], width: int) -> list[int]:
    """The bar (0 to len(BARS) - 1) of each of the last `width` samples, oldest first; all
    at the lowest bar when they are all the same."""
    if width <= 0:
        return []
    shown = values[-width:]
    if not shown:
        return []
    low = min(shown)
    extent = max(shown) - low
    if extent <= 0:
        return [0] * len(shown)
    last = len(BARS) - 1
    return [min(last, int((value - low) / extent * len(BARS))) for value in shown]


def spark_labels(cpu: Sequence[float], rss: Sequence[float]) -> tuple[str, str]:
    """("cpu ≤96%", "rss ≤339.0M"): the top of each sparkline, given the samples it shows;
    a dash before any sample."""
    if not cpu or not rss:  # an instance that ended before it was sampled
        return f"cpu {DASH}", f"rss {DASH}"
    return f"cpu ≤{max(cpu):.0f}%", f"rss ≤{format_bytes(int(max(rss)))}"


def sparklines(
    cpu: Sequence[float], rss: Sequence[float], room: int
) -> list[tuple[str, list[int]]]:
    """The CPU and RSS lines for `room` columns of bars: each label with its bars, the label
    giving the top of the samples the bars show (not of older ones scrolled out)."""
    shown = (cpu[-room:], rss[-room:]) if room > 0 else ((), ())
    return [
        (label, spark_levels(values, room))
        for label, values in zip(spark_labels(*shown), shown, strict=True)
    ]
