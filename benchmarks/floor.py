"""The floor every /proc poller stands on: list /proc and read each pid's stat, nothing more.

"C floor" is `floor.c`, compiled with gcc into a temp dir at run time; "Python floor" is the
same loop in Python (os.listdir + os.open/os.read/os.close). Both report nanoseconds per process
per pass, one figure per pass.

The "full" variants read what a first sighting of a process reads (the /proc/<pid> directory,
stat, cmdline, the exe and cwd links, status), still without parsing: the floor of a full scan,
which tells kernel cost from the scanner's own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_SOURCE = Path(__file__).with_name("floor.c")


class CFloor:
    """The compiled C floor; `unavailable` says why when it could not be built."""

    def __init__(self) -> None:
        self.unavailable: str | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="daemoneye-bench-floor-"))
        self._binary = self._dir / "floor"
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            self.unavailable = "no C compiler (gcc/cc) on PATH"
            return
        result = subprocess.run(
            [gcc, "-O2", "-o", str(self._binary), str(_SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            self.unavailable = f"gcc failed: {result.stderr.strip()[:200]}"

    def passes(self, count: int, *, full: bool = False) -> list[tuple[float, int]]:
        """`count` passes: (ns per process, processes read) each."""
        if self.unavailable is not None:
            raise RuntimeError(self.unavailable)
        mode = "full" if full else "stat"
        output = subprocess.run(
            [str(self._binary), str(count), mode], capture_output=True, text=True, check=True
        ).stdout
        passes = []
        for line in output.splitlines():
            ns, processes = line.split()
            passes.append((float(ns), int(processes)))
        return passes

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def python_pass() -> tuple[float, int]:
    """One Python pass: (ns per process, processes read)."""
    os_open, os_read, os_close = os.open, os.read, os.close
    flags = os.O_RDONLY | os.O_CLOEXEC
    started = time.perf_counter_ns()
    processes = 0
    for name in os.listdir(b"/proc"):  # bytes: no decoding, as the scanner does
        if not name.isdigit():
            continue
        try:
            fd = os_open(b"/proc/" + name + b"/stat", flags)
        except OSError:
            continue
        try:
            if os_read(fd, 4096):
                processes += 1
        except OSError:
            pass  # vanished between open and read
        finally:
            os_close(fd)
    elapsed = time.perf_counter_ns() - started
    return (elapsed / processes if processes else 0.0, processes)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _read_all(name: bytes, dir_fd: int) -> int:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        total = 0
        while chunk := os.read(fd, 65536):
            total += len(chunk)
        return total
    finally:
        os.close(fd)


_CONTEXT_LINKS = (b"ns/pid", b"ns/mnt", b"ns/net", b"ns/user", b"fd/0", b"fd/1", b"fd/2")
_CONTEXT_FILES = (b"cgroup", b"loginuid", b"environ")


def python_full_pass(
    *, context: bool = False, clock: Callable[[], int] = time.perf_counter_ns
) -> tuple[float, int]:
    """One Python pass of the full-read floor: (ns per process, processes read). `context`
    adds the files the context reader reads (collector/context.py: four namespace links, the
    three stdio links, cgroup, loginuid, environ), unparsed. `clock` time.thread_time_ns
    gives the CPU time, which a loaded machine inflates less than the wall clock."""
    started = clock()
    processes = 0
    for name in os.listdir(b"/proc"):
        if not name.isdigit():
            continue
        try:
            dir_fd = os.open(b"/proc/" + name, _DIR_FLAGS)
        except OSError:
            continue
        try:
            if not _read_all(b"stat", dir_fd):
                continue
            processes += 1
            _read_all(b"cmdline", dir_fd)
            for link in (b"exe", b"cwd"):
                # A kernel thread, a zombie or a vanished process: the scanner skips it too.
                with contextlib.suppress(OSError):
                    os.readlink(link, dir_fd=dir_fd)
            if context:
                for link in _CONTEXT_LINKS:
                    with contextlib.suppress(OSError):
                        os.readlink(link, dir_fd=dir_fd)
                for file in _CONTEXT_FILES:  # one read each, as the reader does
                    with contextlib.suppress(OSError):
                        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
                        try:
                            os.read(fd, 65536)
                        finally:
                            os.close(fd)
            _read_all(b"status", dir_fd)
        except OSError:
            pass  # vanished mid-read
        finally:
            os.close(dir_fd)
    elapsed = clock() - started
    return (elapsed / processes if processes else 0.0, processes)
