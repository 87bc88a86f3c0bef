"""The held stat descriptors of the real /proc: one per known process, closed when it ends."""

from __future__ import annotations

import os
import subprocess
import sys

from daemoneye.collector import stat_poll
from daemoneye.collector.procfs import read_boot_time
from daemoneye.collector.scanner import ProcScanner
from daemoneye.models import ProcessKey


def held_stat_files(pid: int) -> list[str]:
    """Our descriptors open on /proc/<pid>/stat."""
    target = f"/proc/{pid}/stat"
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                found.append(fd)
        except OSError:
            continue  # the descriptor of the listing itself
    return found


def test_an_ended_process_is_seen_through_its_held_descriptor_and_released() -> None:
    scanner = ProcScanner(boot_time=read_boot_time())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        scanner.scan()  # the first scan may predate the child; this one adds it
        scanner.scan()
        added = {r.pid: r for r in scanner.snapshot().values()}
        assert child.pid in added
        key = ProcessKey(child.pid, added[child.pid].start_time)
        assert len(held_stat_files(child.pid)) == 1  # kept open between ticks
    finally:
        child.kill()
        child.wait()  # reaped: its held stat file now fails to read
    assert key in scanner.scan().ended
    assert held_stat_files(child.pid) == []
    held_before_close = stat_poll._Budget.held
    scanner.close()  # (other scanners in this process may hold their own descriptors)
    assert stat_poll._Budget.held <= held_before_close - len(scanner.snapshot())
