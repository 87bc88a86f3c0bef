"""A pid reused between two ticks: the scanner ends the old instance and finds the newcomer in
the same tick, even when no other pid was allocated after it (the tick's listing of /proc is
skipped while /proc/loadavg's last pid has not moved).

Root only: the newcomer is put on the old pid through /proc/sys/kernel/ns_last_pid."""

from __future__ import annotations

import os
import subprocess

import pytest

from daemoneye.collector.procfs import read_boot_time
from daemoneye.collector.scanner import ProcScanner

LAST_PID = "/proc/sys/kernel/ns_last_pid"


def _can_place_pids() -> str | None:
    if os.geteuid() != 0:
        return "placing a pid (ns_last_pid) needs root"
    try:
        with open(LAST_PID, "r+"):
            return None
    except OSError as exc:
        return f"{LAST_PID}: {exc.strerror}"


@pytest.mark.skipif(_can_place_pids() is not None, reason=str(_can_place_pids()))
def test_a_newcomer_on_a_pid_that_just_ended_is_found_in_the_same_tick() -> None:
    scanner = ProcScanner("/proc", boot_time=read_boot_time())
    first = subprocess.Popen(["sleep", "100"])
    newcomer = None
    try:
        scanner.scan()
        scanner.scan()
        pid = first.pid
        first.kill()
        first.wait()
        for _attempt in range(5):  # another fork may take the pid first: try again
            with open(LAST_PID, "w") as file:
                file.write(str(pid - 1))
            newcomer = subprocess.Popen(["sleep", "101"])
            if newcomer.pid == pid:
                break
            newcomer.kill()
            newcomer.wait()
            newcomer = None
        if newcomer is None:
            pytest.skip("another process kept taking the pid")
        delta = scanner.scan()
        assert any(key.pid == pid for key in delta.ended)
        added = [rec for rec in delta.added if rec.pid == pid]
        assert added and added[0].cmdline == ("sleep", "101")
    finally:
        scanner.close()
        for child in (first, newcomer):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
