"""The floor of the daemon's kernel-event reader: `execfloor.c`, compiled with gcc at run time,
subscribes to the process connector and does, in C, the /proc reads the daemon's reader does
for every exec and fork (see the C file). Run beside the daemon under the same exec load, its
CPU is what the design costs before any Python, store or rule runs."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks import cleanup
from benchmarks.tools import build_c

_SOURCE = Path(__file__).with_name("execfloor.c")
_READY_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class FloorRun:
    """What one run of the floor reader saw and cost."""

    execs: int
    forks: int
    exits: int
    elapsed_s: float
    cpu_s: float


class ExecFloor:
    """The compiled floor reader; `unavailable` says why when it could not be built."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="daemoneye-bench-execfloor-"))
        self._binary = self._dir / "execfloor"
        self.unavailable = build_c(_SOURCE, self._binary)
        self._process: subprocess.Popen[bytes] | None = None
        self._handle: int | None = None
        self._report = self._dir / "report"

    def start(self, seconds: float) -> None:
        """Subscribe and read for `seconds`; returns once the floor is listening."""
        if self.unavailable is not None:
            raise RuntimeError(self.unavailable)
        self._report.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            [str(self._binary), f"{seconds:g}", str(self._report)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self._handle = cleanup.register("exec floor reader", self._kill)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if line.strip() != b"ready":
            self._kill()
            raise RuntimeError(f"execfloor did not subscribe (said {line!r})")

    def finish(self) -> FloorRun:
        """Wait for the run to end and read its report."""
        assert self._process is not None, "not started"
        code = self._process.wait(timeout=120)
        self._forget()
        if code != 0:
            raise RuntimeError(f"execfloor exited {code}")
        execs, forks, exits, elapsed, cpu = self._report.read_text().split()
        return FloorRun(int(execs), int(forks), int(exits), float(elapsed), float(cpu))

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._forget()

    def _forget(self) -> None:
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None
        if self._handle is not None:
            cleanup.unregister(self._handle)
            self._handle = None

    def close(self) -> None:
        self._kill()
        shutil.rmtree(self._dir, ignore_errors=True)
