"""``python -m benchmarks``: run the suite, print the table, write the JSON.

Exit status: 0 the run completed (MISSED targets are results, not errors); 1 the suite itself
failed (e.g. a benchmark process survived cleanup); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import (
    attack_bench,
    changes_bench,
    cleanup,
    collector_bench,
    connections_bench,
    daemon_bench,
    dashboard_section,
    engine_bench,
    events_bench,
    exec_stages,
    ipc_bench,
    pending,
    remote_bench,
    report,
    split_bench,
    store_bench,
)
from benchmarks.floor import CFloor
from benchmarks.machine import info
from benchmarks.model import FAILED, Row, status_row
from benchmarks.population import Population
from benchmarks.spawn import assert_none_marked, find_marked, run_prefix
from benchmarks.tools import ensure

SECTIONS = (
    "collector",
    "daemon",
    "store",
    "events",
    "split",
    "engine",
    "ipc",
    "dashboard",
    "attacks",
    "remote",
    "connections",
)
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass(frozen=True, slots=True)
class Plan:
    """How much to measure; --quick shrinks every window so the run ends within 2 minutes."""

    sizes: tuple[int, ...]
    runs: int
    floor_passes: int
    steady_scans: int
    daemon_window_s: int
    store_window_s: int
    store_sleepers: int
    churn_per_s: float
    store_ticks: int
    events_count: int
    events_rounds: int
    events_spread_s: float
    exec_rate: float
    exec_seconds: float
    exec_runs: int
    exec_stage_rounds: int
    engine_ticks: int
    ipc_sleepers: int
    ipc_block_s: int
    ipc_calls: int
    dashboard_processes: int
    dashboard_seconds: int
    dashboard_runs: int
    attacks_quick: bool = False  # 8 s attack phases instead of 20 s


def _plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    sizes = (
        tuple(int(size) for size in args.sizes.split(","))
        if args.sizes
        else ((1000,) if quick else (1000, 5000, 10000))
    )
    runs = args.runs or (3 if quick else 5)
    return Plan(
        sizes=sizes,
        runs=runs,
        floor_passes=5,
        steady_scans=5,
        daemon_window_s=8 if quick else 20,
        store_window_s=8 if quick else 60,
        store_sleepers=5000,
        churn_per_s=2.0,
        store_ticks=3 if quick else 10,
        events_count=1000,
        events_rounds=min(runs, 2 if quick else 3),
        events_spread_s=4.0,
        exec_rate=2000.0,
        exec_seconds=3.0 if quick else 10.0,
        exec_runs=min(runs, 2 if quick else 3),
        exec_stage_rounds=3 if quick else 7,
        engine_ticks=10 if quick else 30,
        ipc_sleepers=1000 if quick else 5000,
        ipc_block_s=2 if quick else 5,
        ipc_calls=300 if quick else 3000,
        dashboard_processes=10_000,
        dashboard_seconds=2 if quick else 10,
        dashboard_runs=1 if quick else min(runs, 3),
        attacks_quick=quick,
    )


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short windows, 1k sleepers (<2 min)")
    parser.add_argument(
        "--sizes",
        metavar="N,N,…",
        help="sleeper populations (default 1000,5000,10000; --quick: 1000)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        metavar="N",
        help="repetitions / blocks per figure (default 5; --quick: 3)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"where to write the results (default {DEFAULT_JSON})",
    )
    parser.add_argument(
        "--only", metavar="SECTION,…", help=f"run only these sections: {', '.join(SECTIONS)}"
    )
    args = parser.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(SECTIONS)
        if unknown:
            parser.error(
                f"unknown section(s) {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(SECTIONS)}"
            )
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def say(message: str) -> None:
    print(f"benchmarks: {message}", file=sys.stderr, flush=True)


class Suite:
    """Runs the selected sections, collecting rows and raw samples; a section that raises
    becomes a "failed" row and the others still run."""

    def __init__(self, plan: Plan, only: set[str]) -> None:
        self.plan = plan
        self.only = only
        self.rows: list[Row] = []
        self.raw: dict[str, Any] = {}

    def wants(self, section: str) -> bool:
        return section in self.only

    def guarded(
        self, section: str, what: str, body: Callable[[], tuple[list[Row], dict[str, Any]]]
    ) -> None:
        say(f"{section}: {what}")
        started = time.monotonic()
        try:
            rows, raw = body()
        except Exception as error:  # one broken section must not lose the others
            traceback.print_exc()
            rows, raw = [status_row(section, what, FAILED, f"{type(error).__name__}: {error}")], {}
        self.rows += rows
        self.raw.setdefault(section, []).append(raw)
        say(f"{section}: {what} done in {time.monotonic() - started:.0f} s")

    def run(self) -> None:
        plan = self.plan
        top_reason = ensure("top", "procps") if self.wants("daemon") else None
        htop_reason = None
        if self.wants("daemon"):
            htop_reason = ensure("htop", "htop") or ensure("tmux", "tmux")
        cfloor = CFloor() if self.wants("collector") else None
        try:
            if self.wants("collector") or self.wants("daemon"):
                for size in plan.sizes:
                    self._at_size(size, cfloor, top_reason, htop_reason)
        finally:
            if cfloor is not None:
                cfloor.close()
        if self.wants("store"):
            self.guarded(
                "store",
                f"bytes per hour (host; {plan.store_sleepers} sleepers + churn)",
                lambda: store_bench.run(
                    sleepers=plan.store_sleepers,
                    churn_rate=plan.churn_per_s,
                    window_s=plan.store_window_s,
                    blocks=plan.runs,
                    ticks=plan.store_ticks,
                ),
            )
        if self.wants("events"):
            self.guarded(
                "events",
                f"capture of {plan.events_count} processes living 1-5 ms",
                lambda: events_bench.run(
                    count=plan.events_count,
                    rounds=plan.events_rounds,
                    spread_s=plan.events_spread_s,
                ),
            )
            self.guarded(
                "events",
                f"daemon under {plan.exec_rate:g} exec/s for {plan.exec_seconds:g} s",
                lambda: events_bench.run_sustained(
                    rate=plan.exec_rate, seconds=plan.exec_seconds, runs=plan.exec_runs
                ),
            )
            self.guarded(
                "events",
                f"where one exec's CPU goes, step by step ({plan.exec_stage_rounds} rounds)",
                lambda: exec_stages.run(rounds=plan.exec_stage_rounds),
            )
        if self.wants("split"):
            population = max(plan.sizes)
            self.guarded(
                "split",
                f"{plan.events_count} `sh -c :` stored whole: idle, and at {population} "
                "processes with rule-set swaps",
                lambda: split_bench.run(count=plan.events_count, population=population),
            )
        if self.wants("engine"):
            self.guarded(
                "engine",
                f"{engine_bench.RULES} rules at {engine_bench.LIVE} processes; rule save → active",
                lambda: engine_bench.run(
                    ticks=plan.engine_ticks, fulls=plan.runs, reloads=plan.runs
                ),
            )
        if self.wants("ipc"):
            self.guarded(
                "ipc",
                f"processes.get p99 and {ipc_bench.SUBSCRIBERS} subscribers' CPU "
                f"at {plan.ipc_sleepers} sleepers",
                lambda: ipc_bench.run(
                    sleepers=plan.ipc_sleepers,
                    blocks=plan.runs,
                    block_s=plan.ipc_block_s,
                    calls=plan.ipc_calls,
                ),
            )
        if self.wants("dashboard"):
            self.guarded(
                "dashboard",
                f"first paint, key → repaint, RSS at {plan.dashboard_processes} processes",
                lambda: dashboard_section.run(
                    processes=plan.dashboard_processes,
                    seconds=plan.dashboard_seconds,
                    runs=plan.dashboard_runs,
                ),
            )
        if self.wants("attacks"):
            self.guarded(
                "attacks",
                "hello p99, exec → alert, RSS and store growth under each local attack vs quiet",
                lambda: attack_bench.run(quick=plan.attacks_quick),
            )
        if self.wants("remote"):
            self.guarded(
                "remote",
                f"dashboard over SSH vs local at {plan.dashboard_processes} processes; "
                "4 hosts' merged alerts; alerts/s through the OCSF and OTLP paths",
                lambda: remote_bench.run(
                    processes=plan.dashboard_processes,
                    hosts=4,
                    per_host=2_000 if not plan.attacks_quick else 500,
                    runs=plan.dashboard_runs,
                    alerts=2_000,
                ),
            )
        if self.wants("connections"):
            holders = max(plan.sizes)
            self.guarded(
                "connections",
                f"one connections refresh at {holders} processes holding {2 * holders} sockets",
                lambda: (connections_bench.measure(holders, plan.runs), {}),
            )
        self.rows += [row for row in pending.rows() if self.wants(row.section)]

    def _at_size(
        self, size: int, cfloor: CFloor | None, top_reason: str | None, htop_reason: str | None
    ) -> None:
        plan = self.plan
        say(f"spawning {size} sleepers")
        with Population(size) as population:
            for note in population.notes:
                say(note)
            say(f"{size} sleepers up in {population.spawn_s:.1f} s")
            if cfloor is not None:
                self.guarded(
                    "collector",
                    f"scanner vs floors at {size} sleepers",
                    lambda: collector_bench.run(
                        size,
                        runs=plan.runs,
                        floor_passes=plan.floor_passes,
                        steady_scans=plan.steady_scans,
                        cfloor=cfloor,
                    ),
                )
            if cfloor is not None:
                self.guarded(
                    "collector",
                    f"the change round's cost at {size} sleepers",
                    lambda: changes_bench.run(size),
                )
            if self.wants("daemon"):
                self.guarded(
                    "daemon",
                    f"daemon vs top and htop at {size} sleepers",
                    lambda: daemon_bench.run(
                        size,
                        window_s=plan.daemon_window_s,
                        blocks=plan.runs,
                        top_reason=top_reason,
                        htop_reason=htop_reason,
                    ),
                )
            alive = population.alive()
            if alive < size:
                self.rows.append(
                    status_row(
                        "population",
                        f"sleepers={size}",
                        FAILED,
                        f"only {alive} of {size} still alive",
                    )
                )


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    cleanup.install()
    plan = _plan(args)
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    command = [sys.executable, "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]
    started = time.monotonic()
    stale = find_marked(orphans_only=True)
    if stale:
        say(f"killing {len(stale)} orphaned benchmark processes left over from an earlier run")
        for pid in stale:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    machine = info()
    suite = Suite(plan, only)
    try:
        suite.run()
    except (KeyboardInterrupt, cleanup.Interrupted) as interrupted:
        say(f"interrupted ({str(interrupted) or 'SIGINT'}): cleaning up")
        cleanup.run_all()
        assert_none_marked(run_prefix(), "benchmark processes")
        return 130
    finally:
        cleanup.run_all()
        cleanup.reap_adopted()
    assert_none_marked(run_prefix(), "benchmark processes")
    duration = time.monotonic() - started
    machine["loadavg_at_end"] = os.getloadavg()  # how busy the shared machine was meanwhile
    print(report.table(suite.rows))
    print()
    print(report.summary_line(suite.rows))
    report.write_json(
        args.json,
        rows=suite.rows,
        raw=suite.raw,
        machine=machine,
        command=command,
        options=dataclasses.asdict(plan),
        duration_s=duration,
    )
    print(f"\nJSON: {args.json}   ({duration:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
