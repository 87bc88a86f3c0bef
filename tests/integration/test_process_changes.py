"""A change after start that the collector counts reaches the store the rules read, not only
IPC: a process that moves to another directory and drops to another user, then renames
itself (which makes the scanner read its details again)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import DaemonHarness, wait_for

# Waits for a line on stdin, moves, drops (as root) and renames, then says so on stdout:
# pipes, because after the drop it could not reach a file under the test's directory.
MOVER = """
import ctypes, os, sys, time
target, drop = sys.argv[1], sys.argv[2] == "1"
sys.stdin.readline()
os.chdir(target)
if drop:
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
ctypes.CDLL(None).prctl(15, b"moved-away", 0, 0, 0)  # PR_SET_NAME
print("moved", flush=True)
time.sleep(120)
"""


@pytest.fixture
def mover(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    start_dir, target = tmp_path / "start", tmp_path / "target"
    start_dir.mkdir()
    target.mkdir()
    drop = "1" if os.geteuid() == 0 else "0"
    child = subprocess.Popen(
        [sys.executable, "-c", MOVER, str(target), drop],
        cwd=start_dir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    yield child, target
    child.kill()
    child.wait()


def row(harness: DaemonHarness, pid: int) -> dict[str, Any] | None:
    rows = harness.query(f"SELECT name, cwd, uid, user, gid FROM live_processes WHERE pid = {pid}")
    return rows[0] if rows else None


def test_a_new_cwd_and_uid_reach_the_rules(
    harness: DaemonHarness, mover: tuple[subprocess.Popen[bytes], Path]
) -> None:
    harness.env["DAEMONEYE_COLLECTOR__UPDATE_INTERVAL"] = "1"
    harness.start()
    child, target = mover
    assert child.stdin is not None and child.stdout is not None
    before = wait_for(lambda: row(harness, child.pid), "the mover in the store")
    assert before["cwd"] is not None and before["cwd"].endswith("/start")
    child.stdin.write(b"go\n")
    child.stdin.flush()
    assert child.stdout.readline() == b"moved\n"
    want: dict[str, object] = {"name": "moved-away", "cwd": str(target)}
    if os.geteuid() == 0:
        want |= {"uid": 65534, "user": pwd.getpwuid(65534).pw_name, "gid": 65534}

    def moved() -> dict[str, Any] | None:
        current = row(harness, child.pid)
        return current if current and all(current[k] == v for k, v in want.items()) else None

    wait_for(moved, f"the store to show {want}")
