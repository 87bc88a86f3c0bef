"""One row of the results table: a figure, the reference it is compared with, and a verdict."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.stats import Summary

MET = "met"
MISSED = "MISSED"
NO_TARGET = "-"
NOT_BUILT = "not built yet"
SKIPPED = "skipped"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Row:
    """A measured figure. `value` is absolute (in `unit`); `ratio` is the same figure divided,
    run by run, by `reference`, measured in the same run. `verdict` is MET, MISSED, NO_TARGET,
    NOT_BUILT, SKIPPED or FAILED; the why of the last three is in `note`."""

    section: str
    metric: str
    processes: int | None  # processes on the host while measured (None when not applicable)
    value: Summary | None
    unit: str
    reference: str | None = None
    ratio: Summary | None = None
    target: str | None = None
    verdict: str = NO_TARGET
    note: str = ""


def judge(value: float, limit: float) -> str:
    """MET when `value` is at or under `limit` (all our targets are upper bounds)."""
    return MET if value <= limit else MISSED


def status_row(
    section: str, metric: str, verdict: str, note: str = "", target: str | None = None
) -> Row:
    """A row without a measurement: not built yet, skipped, or failed."""
    return Row(
        section=section,
        metric=metric,
        processes=None,
        value=None,
        unit="",
        target=target,
        verdict=verdict,
        note=note,
    )
