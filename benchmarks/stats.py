"""Summaries of repeated measurements: median and spread, and ratios taken run by run."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    """Median, quartiles and extremes of `n` samples (kept for the JSON)."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int
    samples: tuple[float, ...]


def summarize(samples: Sequence[float]) -> Summary:
    """Summarise at least one sample. Quartiles use the inclusive method, so with few samples
    they stay inside the observed range."""
    if not samples:
        raise ValueError("nothing to summarise")
    values = sorted(float(sample) for sample in samples)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return Summary(
        median=statistics.median(values),
        q1=q1,
        q3=q3,
        low=values[0],
        high=values[-1],
        n=len(values),
        samples=tuple(float(sample) for sample in samples),
    )


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Ratios of samples taken side by side (same run, same moment): the noise that hits both
    cancels, which is why every target is judged on these rather than on absolute figures."""
    if len(numerators) != len(denominators):
        raise ValueError(f"unpaired samples: {len(numerators)} vs {len(denominators)}")
    return [num / den for num, den in zip(numerators, denominators, strict=True) if den > 0]
