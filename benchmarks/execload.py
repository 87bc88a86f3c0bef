"""The exec load generator: `execload.c`, compiled with gcc into a temp dir at run time, which
fork+execs a short-lived program at a steady rate and reaps it (see the C file for pacing).

It runs as a member of a benchmark `ProcessGroup`, so it and every child it starts carry the
group's marker and die with the group whatever happens to the benchmark.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.spawn import ProcessGroup
from benchmarks.tools import build_c

_SOURCE = Path(__file__).with_name("execload.c")
PROGRAM = "/bin/true"


@dataclass(frozen=True, slots=True)
class LoadRun:
    """What one run of the generator did, as it reported it."""

    pid: int
    started: int  # children forked and exec'd (or at least forked)
    failed: int  # forks that failed
    skipped: int  # slots given up after falling more than 100 ms behind
    elapsed_s: float
    own_cpu_s: float  # the generator's utime + stime: the cost of fork and wait
    children_cpu_s: float  # what the children themselves used

    @property
    def rate(self) -> float:
        return self.started / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def own_cpu_percent(self) -> float:
        return 100.0 * self.own_cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


class ExecLoad:
    """The compiled generator; `unavailable` says why when it could not be built."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="daemoneye-bench-execload-"))
        self._binary = self._dir / "execload"
        self.unavailable = build_c(_SOURCE, self._binary)

    def start(self, group: ProcessGroup, rate: float, seconds: float) -> tuple[int, Path]:
        """Start one run in `group`; returns its pid and the file its report will be in."""
        if self.unavailable is not None:
            raise RuntimeError(self.unavailable)
        report = self._dir / f"report-{group.spawned_total}"
        pid = group.spawn(
            str(self._binary), ["execload", f"{rate:g}", f"{seconds:g}", str(report), PROGRAM]
        )
        return pid, report

    @staticmethod
    def finish(group: ProcessGroup, pid: int, report: Path) -> LoadRun:
        """Wait for the run started as `pid` and read its report."""
        _, status = os.waitpid(pid, 0)
        group.live.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise RuntimeError(f"execload exited {code}")
        started, failed, skipped, elapsed, own, children = report.read_text().split()
        return LoadRun(
            pid,
            int(started),
            int(failed),
            int(skipped),
            float(elapsed),
            float(own),
            float(children),
        )

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
