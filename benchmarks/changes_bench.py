"""What finding changes after start costs the scan: the round over every instance (cwd and
exe readlinks each, collector/changes.py) at its daemon share per tick, against a steady scan
of the same host, measured alternately (ABBA) so that the load of a shared host hits both.

With the defaults (1 s ticks, 10 s update interval) a tick looks at a tenth of the instances;
the figure is that slice's time and its ratio to one steady scan (stat of every process),
which is what the daemon pays every tick already.

Run alone: ``python -m benchmarks.changes_bench [SLEEPERS]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from benchmarks import cleanup
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


def run(size: int, *, rounds: int = 20) -> tuple[list[Row], dict[str, Any]]:
    from daemoneye.collector.changes import links_differ
    from daemoneye.collector.procfs import read_boot_time
    from daemoneye.collector.scanner import ProcScanner
    from daemoneye.config.schema import Config

    interval = Config().collector.update_interval
    clock = _SteppedClock()
    scanner = ProcScanner(
        "/proc", boot_time=read_boot_time(), clock=clock, update_interval=interval
    )
    scanner.sweep = _NoRound()  # type: ignore[assignment]  # timed apart, below
    try:
        scanner.scan()
        records = {str(k.pid).encode(): r for k, r in scanner.snapshot().items()}
        names = list(records)
        share = max(1, round(len(names) * TICK_S / interval))
        costs: dict[str, list[float]] = {"round": [], "scan": []}
        changed = 0

        def slice_of_round(index: int) -> None:
            nonlocal changed
            start = (index * share) % len(names)
            chosen = (names + names)[start : start + share]
            started = time.perf_counter()
            changed += sum(links_differ(b"/proc", name, records[name]) for name in chosen)
            costs["round"].append((time.perf_counter() - started) * 1e3)

        def steady_scan(index: int) -> None:
            clock.now += TICK_S
            costs["scan"].append(scanner.scan().stats.duration_s * 1e3)

        for index in range(rounds):
            pair = (slice_of_round, steady_scan) if index % 2 else (steady_scan, slice_of_round)
            for step in pair:
                step(index)
        processes = len(names)
    finally:
        scanner.close()
    per_check_us = [ms * 1e3 / share for ms in costs["round"]]
    label = f"sleepers={size}"
    note = (
        f"{share} of {processes} instances per 1 s tick (update interval {interval:g} s), "
        f"{statistics.median(per_check_us):.1f} µs each (2 readlinks); {changed} looked "
        "changed; host shared with other helpers' work (loaded)"
    )
    rows = [
        Row(
            SECTION,
            f"{label}: change round per tick",
            processes,
            summarize(costs["round"]),
            "ms",
            "one steady scan",
            summarize(paired_ratios(costs["round"], costs["scan"])),
            note=note,
        ),
        Row(
            SECTION, f"{label}: steady scan (reference)", processes, summarize(costs["scan"]), "ms"
        ),
    ]
    raw = {"size": size, "costs_ms": costs, "share": share, "processes": processes}
    return rows, raw


def main(argv: list[str]) -> int:
    cleanup.install()  # SIGTERM/SIGHUP unwind the with-blocks: no daemon or sleeper left
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
