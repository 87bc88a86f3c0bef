"""A change after start that the collector counts reaches the store the rules read, not only
IPC: a process that moves to another directory and drops to another user, then renames
itself (which makes the scanner read its details again)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
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


# -- changes after start: events, new state, rules evaluated again ---------------------------

# Waits for a line on stdin before each step; says "ok" after it. Steps: rename NAME, chdir
# DIR, ids R E S (setresuid and setresgid), then it sleeps.
STEPPER = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
for line in sys.stdin:
    step, *args = line.split()
    if step == "rename":
        libc.prctl(15, args[0].encode(), 0, 0, 0)  # PR_SET_NAME
    elif step == "chdir":
        os.chdir(args[0])
    elif step == "ids":
        r, e, s = (int(a) for a in args)
        os.setresgid(r, e, s)
        os.setresuid(r, e, s)
    print("ok", flush=True)
"""


class Stepper:
    """A child that makes one change after start per `step()`."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.child = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.child.pid

    def step(self, *words: str) -> None:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write((" ".join(words) + "\n").encode())
        self.child.stdin.flush()
        assert self.child.stdout.readline() == b"ok\n"

    def stop(self) -> None:
        self.child.kill()
        self.child.wait()


@pytest.fixture
def stepper(tmp_path: Path) -> Iterator[Stepper]:
    started = Stepper([sys.executable, "-c", STEPPER], tmp_path)
    yield started
    started.stop()


def events_of(harness: DaemonHarness, pid: int, kind: str) -> list[dict[str, Any]]:
    return harness.query(
        "SELECT kind, old_value, new_value, exe_setid, source FROM process_events "
        f"WHERE pid = {pid} AND kind = '{kind}' ORDER BY id"
    )


def alerts_of(harness: DaemonHarness, pid: int, rule_id: str) -> list[dict[str, Any]]:
    return harness.query(
        f"SELECT rule_id, count, title FROM alerts WHERE pid = {pid} AND rule_id = '{rule_id}'"
    )


def test_a_rename_after_start_triggers_a_rule_on_the_new_name_once_per_instance(
    harness: DaemonHarness, stepper: Stepper
) -> None:
    harness.start()
    wait_for(lambda: row(harness, stepper.pid), "the child in the store")
    stepper.step("rename", "[kworker/0:1]")
    source = "netlink" if os.geteuid() == 0 else "poll"
    renamed = wait_for(lambda: events_of(harness, stepper.pid, "rename"), "the rename event")
    assert [(e["old_value"], e["new_value"], e["source"]) for e in renamed] == [
        (Path(sys.executable).name, "[kworker/0:1]", source)
    ]
    (alert,) = wait_for(
        lambda: alerts_of(harness, stepper.pid, "renamed-to-masquerade"), "the rule's alert"
    )
    assert "renamed itself [kworker/0:1]" in alert["title"]
    current = row(harness, stepper.pid)
    assert current is not None and current["name"] == "[kworker/0:1]"
    stepper.step("rename", "kswapd0")
    wait_for(lambda: len(events_of(harness, stepper.pid, "rename")) == 2, "the second rename")
    (again,) = wait_for(
        lambda: [
            a for a in alerts_of(harness, stepper.pid, "renamed-to-masquerade") if a["count"] == 2
        ],
        "the same alert counted twice",
    )
    assert again["count"] == 2
    stepper.step("rename", "\x1b[2Jx")  # hostile: a terminal escape in the name
    wait_for(lambda: len(events_of(harness, stepper.pid, "rename")) == 3, "the third rename")
    shown = harness.cli("processes", "show", str(stepper.pid), check=True).stdout
    changes = shown[shown.index("CHANGES") :].splitlines()[1:4]
    assert ["[kworker/0:1]" in changes[0], "kswapd0" in changes[1]] == [True, True]
    assert "kswapd0 -> \\x1b[2Jx" in changes[2] and "\x1b" not in shown
    as_json = json.loads(harness.cli("-o", "json", "processes", "show", str(stepper.pid)).stdout)
    assert [c["new_value"] for c in as_json[0]["changes"]] == [
        "[kworker/0:1]",
        "kswapd0",
        "\x1b[2Jx",
    ]


def test_a_new_cwd_is_an_event_a_rule_can_match(
    harness: DaemonHarness, stepper: Stepper, tmp_path: Path
) -> None:
    rules = harness.root / "config" / "daemoneye" / "rules.d"
    rules.mkdir(parents=True)
    (rules / "cwd.toml").write_text(
        """
[[rule]]
id = "moved-to-shm"
name = "moved into /dev/shm"
description = "A process changed its working directory to /dev/shm."
severity = "low"
tags = ["T1074"]
query = '''
SELECT p.pid, p.start_time, p.name, e.old_value
FROM process_events e JOIN processes p ON p.pid = e.pid AND p.start_time = e.start_time
WHERE e.kind = 'cwd' AND e.new_value = '/dev/shm'
'''
"""
    )
    harness.env["DAEMONEYE_COLLECTOR__UPDATE_INTERVAL"] = "1"
    harness.start()
    wait_for(lambda: row(harness, stepper.pid), "the child in the store")
    stepper.step("chdir", "/dev/shm")  # no rename: only the scan's round can find it
    moved = wait_for(lambda: events_of(harness, stepper.pid, "cwd"), "the cwd event")
    assert [(e["old_value"], e["new_value"]) for e in moved] == [(str(tmp_path), "/dev/shm")]
    wait_for(lambda: alerts_of(harness, stepper.pid, "moved-to-shm"), "the cwd rule's alert")
    current = row(harness, stepper.pid)
    assert current is not None and current["cwd"] == "/dev/shm"


def test_an_executable_deleted_after_start(harness: DaemonHarness, tmp_path: Path) -> None:
    copy = tmp_path / "sleepy"
    shutil.copy("/bin/sleep", copy)
    harness.env["DAEMONEYE_COLLECTOR__UPDATE_INTERVAL"] = "1"
    harness.start()
    child = subprocess.Popen([str(copy), "120"])
    try:
        wait_for(lambda: row(harness, child.pid), "the copy in the store")
        copy.unlink()
        (event,) = wait_for(lambda: events_of(harness, child.pid, "exe_deleted"), "the event")
        assert event["old_value"] == str(copy)
        wait_for(
            lambda: alerts_of(harness, child.pid, "executable-deleted-after-start"),
            "the deleted-executable alert",
        )
        deleted = harness.query(f"SELECT exe_deleted FROM processes WHERE pid = {child.pid}")
        assert deleted == [{"exe_deleted": 1}]
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing uids needs root")
def test_a_uid_that_becomes_0_without_a_setuid_exec(
    harness: DaemonHarness, stepper: Stepper
) -> None:
    """What root can really make happen here: a process drops its real and effective uid to
    nobody but keeps a saved uid of 0, then takes root back with setresuid(0, 0, 0) — the same
    uid 65534 -> 0 change a kernel exploit makes, with no setuid program involved."""
    harness.start()
    wait_for(lambda: row(harness, stepper.pid), "the child in the store")
    stepper.step("ids", "65534", "65534", "0")
    dropped = wait_for(lambda: events_of(harness, stepper.pid, "uid"), "the drop")
    assert [(e["old_value"], e["new_value"], e["exe_setid"]) for e in dropped] == [
        ("0", "65534", 0)
    ]
    assert not alerts_of(harness, stepper.pid, "uid-zero-without-setuid-exec")
    stepper.step("ids", "0", "0", "0")
    wait_for(lambda: len(events_of(harness, stepper.pid, "uid")) == 2, "the return to root")
    (alert,) = wait_for(
        lambda: alerts_of(harness, stepper.pid, "uid-zero-without-setuid-exec"), "the alert"
    )
    assert "uid 65534 -> 0" in alert["title"]
    gids = [(e["old_value"], e["new_value"]) for e in events_of(harness, stepper.pid, "gid")]
    assert gids == [("0", "65534"), ("65534", "0")]


@pytest.mark.skipif(os.geteuid() != 0, reason="the process connector needs root here")
def test_a_ptrace_attach_is_an_event(harness: DaemonHarness, stepper: Stepper) -> None:
    harness.start()
    wait_for(lambda: row(harness, stepper.pid), "the child in the store")
    tracer = subprocess.Popen(
        ["strace", "-qq", "-e", "trace=none", "-p", str(stepper.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        (event,) = wait_for(lambda: events_of(harness, stepper.pid, "ptrace"), "the attach")
        assert event["new_value"] == str(tracer.pid)
    finally:
        tracer.terminate()
        tracer.wait()


def test_the_alert_names_the_name_taken_even_after_a_rename_back(
    harness: DaemonHarness, stepper: Stepper
) -> None:
    """An implant that takes a kernel thread's name for a moment and takes its own back: the
    alert says which name it took (the event's), not the one it holds when the rule runs."""
    harness.start()
    wait_for(lambda: row(harness, stepper.pid), "the child in the store")
    stepper.step("rename", "[kworker/0:1]")
    stepper.step("rename", Path(sys.executable).name)
    (alert,) = wait_for(
        lambda: alerts_of(harness, stepper.pid, "renamed-to-masquerade"), "the rule's alert"
    )
    assert "renamed itself [kworker/0:1]" in alert["title"]
