"""The connections table at 10,000 processes holding 20,000 sockets (issue 14, item 4).

Population: `sockhold.c`, compiled at run time: N children that each hold one TCP connection
to a loopback listener and one bound UDP socket, and their parent, which holds the listener
and the N accepted connections — 2N sockets in N processes plus N in one server process.

Figures, interleaved run by run so the machine's noise hits them alike:
- one steady refresh of `ConnectionTracker` (fd counts stat'ed, a 1/12 slice re-walked, the
  socket tables read and joined): wall time and CPU time;
- its CPU per second at the default interval (`collector.connections_interval`, 5 s);
- references measured in the same run: the tracker walking every fd of every process each
  refresh (rotation 1: the method it avoids, what `ss -p` and `lsof -i` do), `ss -tan` (the
  kernel's socket list over netlink, no process mapping) and a bare Python read of
  /proc/net/{tcp,tcp6,udp,udp6,unix} (the floor). `ss -tanp` is timed once, with a deadline:
  on a loaded machine it ran for minutes at this size.

Run alone: ``python -m benchmarks.connections_bench [--processes N] [--runs R]`` (root: the
walk reads every process's fds).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import cleanup
from benchmarks.model import NO_TARGET, SKIPPED, Row, status_row
from benchmarks.stats import paired_ratios, summarize

SECTION = "connections"
_SOURCE = Path(__file__).with_name("sockhold.c")
DEFAULT_INTERVAL_S = 5.0
NET_FILES = ("tcp", "tcp6", "udp", "udp6", "unix")


def _cpu_and_wall(action: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process and its children, wall seconds) one call cost."""
    before_cpu, before_wall = _cpu_seconds(), time.perf_counter()
    action()
    return _cpu_seconds() - before_cpu, time.perf_counter() - before_wall


def _cpu_seconds() -> float:
    own = os.times()
    return own.user + own.system + own.children_user + own.children_system


def _bare_tables() -> None:
    for name in NET_FILES:
        with open(f"/proc/net/{name}", "rb") as table:
            table.read()


class SocketHolders:
    """The population: `count` holder processes (see the module docstring)."""

    def __init__(self, count: int) -> None:
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            raise RuntimeError("no C compiler (gcc/cc) on PATH")
        self._dir = tempfile.TemporaryDirectory(prefix="daemoneye-bench-sock-")
        binary = Path(self._dir.name) / "sockhold"
        subprocess.run([gcc, "-O2", "-o", str(binary), str(_SOURCE)], check=True)
        self.process = subprocess.Popen(
            [str(binary), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "ready":
            self.close()
            raise RuntimeError(f"sockhold did not start: {line!r}")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self._dir.cleanup()


def measure(processes: int, runs: int) -> list[Row]:
    from daemoneye.collector.connections import ConnectionTracker
    from daemoneye.collector.procfs import read_boot_time
    from daemoneye.models import ProcessKey

    if os.geteuid() != 0:
        return [status_row(SECTION, "refresh", SKIPPED, "needs root to read every fd")]
    holders = SocketHolders(processes)
    ss = shutil.which("ss")
    try:
        boot = read_boot_time("/proc")
        live = [ProcessKey(int(p), boot) for p in os.listdir("/proc") if p.isdigit()]
        tracker = ConnectionTracker()
        cold_cpu, cold_wall = _cpu_and_wall(lambda: tracker.refresh(live))
        full_walk = ConnectionTracker(rotation=1)
        full_walk.refresh(live)
        steady_wall: list[float] = []
        steady_cpu: list[float] = []
        walk_wall: list[float] = []
        ss_wall: list[float] = []
        bare_wall: list[float] = []
        sockets = links = walked = 0
        for _ in range(runs):
            delta = None

            def refresh() -> None:
                nonlocal delta
                delta = tracker.refresh(live)

            cpu, wall = _cpu_and_wall(refresh)
            steady_cpu.append(cpu)
            steady_wall.append(wall)
            assert delta is not None
            stats = delta.stats
            sockets, links, walked = stats.sockets, stats.links_read, stats.processes_walked
            walk_wall.append(_cpu_and_wall(lambda: full_walk.refresh(live))[1])
            bare_wall.append(_cpu_and_wall(_bare_tables)[1])
            if ss is not None:
                ss_wall.append(_cpu_and_wall(lambda: _run([ss, "-tan"]))[1])
        held = sum(len(conns) for conns in tracker.snapshot().values())
        ss_p = "ss not installed"
        if ss is not None:
            started = time.perf_counter()
            try:
                _run([ss, "-tanp"], timeout=120)
                ss_p = f"ss -tanp once: {(time.perf_counter() - started) * 1000:.0f} ms"
            except subprocess.TimeoutExpired:
                ss_p = "ss -tanp once: still running after 120 s (stopped)"
    finally:
        holders.close()
    n = len(live)
    note = (
        f"{n} processes, {held} sockets mapped to them ({sockets} in the tables); "
        f"a steady refresh walked {walked} processes ({links} readlinks); "
        f"first refresh {cold_wall * 1000:.0f} ms wall, {cold_cpu * 1000:.0f} ms CPU; {ss_p}"
    )
    rows = [
        Row(
            SECTION,
            "steady refresh (wall)",
            n,
            summarize([w * 1000 for w in steady_wall]),
            "ms",
            reference="tracker walking every fd each refresh",
            ratio=summarize(paired_ratios(steady_wall, walk_wall)),
            verdict=NO_TARGET,
            note=note,
        ),
        Row(
            SECTION,
            "steady refresh vs reading the socket tables alone",
            n,
            summarize([w * 1000 for w in bare_wall]),
            "ms (tables)",
            reference="bare read of /proc/net/*",
            ratio=summarize(paired_ratios(steady_wall, bare_wall)),
        ),
        Row(
            SECTION,
            f"CPU per second at the default {DEFAULT_INTERVAL_S:g} s interval",
            n,
            summarize([c / DEFAULT_INTERVAL_S * 100 for c in steady_cpu]),
            "% of one core",
        ),
    ]
    if ss_wall:
        rows.insert(
            1,
            Row(
                SECTION,
                "steady refresh vs ss -tan",
                n,
                summarize([w * 1000 for w in ss_wall]),
                "ms (ss -tan)",
                reference="ss -tan (netlink socket list, no process mapping)",
                ratio=summarize(paired_ratios(steady_wall, ss_wall)),
            ),
        )
    return rows


def _run(argv: list[str], timeout: float | None = None) -> None:
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    cleanup.install()  # SIGTERM/SIGHUP unwind the with-blocks: no daemon or sleeper left
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    from benchmarks.report import table

    print(table(measure(args.processes, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
