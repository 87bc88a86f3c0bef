"""The process connector on this machine's kernel: real children, real events.

Skipped, with the probe's reason, where the connector cannot be used (not root on an older
kernel, a container outside the initial namespaces, a kernel without CONFIG_PROC_EVENTS)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from daemoneye.collector.event_records import ObservedEvent
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.netlink import ProcConnector, probe
from daemoneye.collector.procfs import read_boot_time

if not sys.platform.startswith("linux"):
    pytest.skip("the process connector is Linux-only", allow_module_level=True)
_UNAVAILABLE = probe()
if _UNAVAILABLE is not None:
    pytest.skip(f"process connector unavailable: {_UNAVAILABLE}", allow_module_level=True)

SH = os.path.realpath("/bin/sh")
TRUE = os.path.realpath("/bin/true")
GUARD_S = 60.0  # a hang guard, not a timing assertion


@pytest.fixture
def source() -> Iterator[ProcEventSource]:
    events = ProcEventSource(read_boot_time())
    events.start()
    yield events
    events.stop()
    assert events.error is None


def collect_until(
    source: ProcEventSource, done: Callable[[list[ObservedEvent]], bool]
) -> list[ObservedEvent]:
    seen: list[ObservedEvent] = []
    deadline = time.monotonic() + GUARD_S
    while not done(seen) and time.monotonic() < deadline:
        source.ready.wait(0.2)
        seen += source.drain_observed()
    return seen


def exited(*pids: int) -> Callable[[list[ObservedEvent]], bool]:
    wanted = set(pids)
    return lambda seen: wanted <= {o.event.pid for o in seen if o.event.kind == "exit"}


def test_a_child_held_open_is_seen_in_full(source: ProcEventSource) -> None:
    """The child blocks on stdin until its exec was observed, so nothing here races."""
    child = subprocess.Popen(
        [SH, "-c", "read line; exit 3", "marker-held-7f3a"], stdin=subprocess.PIPE
    )
    seen = collect_until(
        source, lambda s: any(o.event.kind == "exec" and o.event.pid == child.pid for o in s)
    )
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait() == 3
    seen += collect_until(source, exited(child.pid))
    mine = [o for o in seen if o.event.pid == child.pid]
    assert [o.event.kind for o in mine] == ["fork", "exec", "exit"]
    fork, exec_, exit_ = (o.event for o in mine)
    assert exec_.exe == SH and not exec_.partial
    assert exec_.cmdline == (SH, "-c", "read line; exit 3", "marker-held-7f3a")
    assert fork.ppid == exec_.ppid == os.getpid()
    assert exit_.exit_code == 3 and exit_.ppid == os.getpid()
    assert fork.start_time == exec_.start_time == exit_.start_time > 0
    exec_details = mine[1].details
    assert exec_details is not None and exec_details.cwd == os.getcwd()
    assert exec_details.uid == os.getuid()


def test_a_two_millisecond_child(source: ProcEventSource) -> None:
    child = subprocess.Popen([SH, "-c", "exit 3", "marker-short-c41d"])
    assert child.wait() == 3
    seen = collect_until(source, exited(child.pid))
    by_kind = {o.event.kind: o.event for o in seen if o.event.pid == child.pid}
    assert set(by_kind) == {"fork", "exec", "exit"}
    assert by_kind["exit"].exit_code == 3
    assert by_kind["exec"].ppid == os.getpid()
    if not by_kind["exec"].partial:  # it may be gone before /proc is read; then pid is all
        assert by_kind["exec"].exe == SH
        assert by_kind["exec"].cmdline == (SH, "-c", "exit 3", "marker-short-c41d")


def test_a_signal_death_is_a_negative_exit_code(source: ProcEventSource) -> None:
    child = subprocess.Popen([SH, "-c", "kill -TERM $$"])
    assert child.wait() == -15
    seen = collect_until(source, exited(child.pid))
    (exit_,) = [o.event for o in seen if o.event.pid == child.pid and o.event.kind == "exit"]
    assert exit_.exit_code == -15


def test_threads_do_not_appear_as_processes() -> None:
    """Without the socket filter (which drops thread events before they reach us) the source
    itself must tell threads from processes."""
    unfiltered = ProcConnector(event_mask=None, socket_filter=False)
    source = ProcEventSource(read_boot_time(), connector=unfiltered)
    source.start()
    try:
        script = "import threading\nfor _ in range(20): t = threading.Thread(target=int); t.start()"
        child = subprocess.Popen([sys.executable, "-c", script])
        child.wait()
        seen = collect_until(source, exited(child.pid))
    finally:
        source.stop()
    mine = [o.event.kind for o in seen if o.event.pid == child.pid]
    assert mine == ["fork", "exec", "exit"]
    assert source.threads_ignored_total >= 40  # 20 thread creations and 20 thread exits


def test_a_burst_of_500_children_is_seen_exec_by_exec(source: ProcEventSource) -> None:
    children = [subprocess.Popen([TRUE]) for _ in range(500)]
    for child in children:
        child.wait()
    pids = {child.pid for child in children}
    seen = collect_until(source, exited(*pids))
    execed = {o.event.pid for o in seen if o.event.kind == "exec"}
    assert len(pids & execed) == 500
