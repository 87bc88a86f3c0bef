"""What finding changes after start costs the scan: steady scans with the round over every
instance (cwd and exe readlinks, collector/changes.py) against the same scans without it, in
the same run, interleaved scan by scan.

Both scanners see the host's real population; their clocks advance one second per scan, so the
round takes its daemon share (processes x 1 s tick / 10 s default update interval). The
figure is the round's extra time per tick and the ratio of the two scans' costs.

Run alone: ``python -m benchmarks.changes_bench [SLEEPERS]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from benchmarks.model import Row
from benchmarks.stats import paired_ratios, summarize

SECTION = "collector"
TICK_S = 1.0


class _SteppedClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class _NoRound:
    """A stand-in for ChangeSweep that never looks at anyone: the scan as before."""

    checked_total = 0

    def take(self, names: object, count: int, elapsed: float, interval: float) -> list[bytes]:
        return []


def run(size: int, *, scans: int = 20) -> tuple[list[Row], dict[str, Any]]:
    from daemoneye.collector.procfs import read_boot_time
    from daemoneye.collector.scanner import ProcScanner
    from daemoneye.config.schema import Config

    interval = Config().collector.update_interval
    clocks = (_SteppedClock(), _SteppedClock())
    with_round, without = (
        ProcScanner("/proc", boot_time=read_boot_time(), clock=clock, update_interval=interval)
        for clock in clocks
    )
    without.sweep = _NoRound()  # type: ignore[assignment]
    try:
        for scanner in (with_round, without):
            scanner.scan()
        costs: dict[str, list[float]] = {"with": [], "without": []}
        checked: list[int] = []
        for _ in range(scans):
            for clock in clocks:
                clock.now += TICK_S
            before = with_round.sweep.checked_total
            costs["with"].append(with_round.scan().stats.duration_s * 1e3)
            checked.append(with_round.sweep.checked_total - before)
            costs["without"].append(without.scan().stats.duration_s * 1e3)
        processes = len(with_round.snapshot())
    finally:
        with_round.close()
        without.close()
    extra = [w - wo for w, wo in zip(costs["with"], costs["without"], strict=True)]
    per_check_us = [e * 1e3 / n for e, n in zip(extra, checked, strict=True) if n > 0]
    label = f"sleepers={size}"
    note = (
        f"{statistics.median(checked):.0f} instances looked at per 1 s tick "
        f"(update interval {interval:g} s); ~{statistics.median(per_check_us):.1f} µs each; "
        "host shared with other work"
    )
    rows = [
        Row(
            SECTION,
            f"{label}: steady scan with the change round",
            processes,
            summarize(costs["with"]),
            "ms",
            "the same scan without it",
            summarize(paired_ratios(costs["with"], costs["without"])),
            note=note,
        ),
        Row(SECTION, f"{label}: change round, extra per tick", processes, summarize(extra), "ms"),
    ]
    raw = {"size": size, "costs_ms": costs, "checked": checked, "processes": processes}
    return rows, raw


def main(argv: list[str]) -> int:
    from benchmarks.population import Population

    size = int(argv[0]) if argv else 10_000
    with Population(size):
        rows, _ = run(size)
    for row in rows:
        value = row.value
        ratio = f"  ratio {row.ratio.median:.3f} vs {row.reference}" if row.ratio else ""
        median = f"{value.median:.2f} {row.unit}" if value else "-"
        print(f"{row.metric} [{row.processes} processes]: {median}{ratio}  {row.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
