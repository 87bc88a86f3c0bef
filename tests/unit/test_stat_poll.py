"""The held stat descriptors of the real /proc: one per known process, closed when it ends."""

from __future__ import annotations

import os
import subprocess
import sys

from daemoneye.collector.procfs import read_boot_time
from daemoneye.collector.scanner import ProcScanner
from daemoneye.models import ProcessKey


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_ended_process_is_seen_through_its_held_descriptor_and_released() -> None:
    scanner = ProcScanner(boot_time=read_boot_time())
    before = open_fds()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        scanner.scan()  # the first scan may predate the child; this one adds it
        scanner.scan()
        added = {r.pid: r for r in scanner.snapshot().values()}
        assert child.pid in added
        key = ProcessKey(child.pid, added[child.pid].start_time)
        held = open_fds()
        assert held > before  # the stat files of the known processes stay open
    finally:
        child.kill()
        child.wait()  # reaped: its held stat file now fails to read
    ended = scanner.scan().ended
    assert key in ended
    assert open_fds() < held
    scanner.close()
    assert open_fds() <= before
