"""Fewer wake-ups, on this machine's kernel: the datagrams that reach the event reader for a
known workload, with and without the kernel's event mask and the BPF socket filter.

Other programs run on the host meanwhile, so counts are taken over the datagrams about this
test's own children, and "never" claims (no thread event, no id change) over all of them.
Skipped without root or without the process connector."""

from __future__ import annotations

import functools
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator

import pytest

from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.netlink import EVENT_MASK, ProcConnector, probe, takes_event_mask
from daemoneye.collector.proc_events import (
    CommEvent,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    GidEvent,
    ProcConnectorEvent,
    SidEvent,
    UidEvent,
    parse_messages,
)
from daemoneye.collector.procfs import read_boot_time
from tests.integration.conftest import DaemonHarness, wait_for

if not sys.platform.startswith("linux"):
    pytest.skip("the process connector is Linux-only", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("subscribing to the process connector needs root here", allow_module_level=True)
_UNAVAILABLE = probe()
if _UNAVAILABLE is not None:
    pytest.skip(f"process connector unavailable: {_UNAVAILABLE}", allow_module_level=True)

TRUE = os.path.realpath("/bin/true")
RUNS = 200
THREADS = 20
THREADED = (
    "import threading\n"
    f"for _ in range({THREADS}):\n"
    "    t = threading.Thread(target=int); t.start(); t.join()\n"
)
# setuid() from a threaded process: glibc changes every thread's ids, one event per thread
SETIDS = (
    "import os, threading, time\n"
    "ts = [threading.Thread(target=time.sleep, args=(0.5,)) for _ in range(4)]\n"
    "[t.start() for t in ts]\n"
    "os.setgid(65534); os.setuid(65534)\n"
    "[t.join() for t in ts]\n"
)
SETSID = "import os; os.setsid()"
GUARD_S = 60.0  # a hang guard, not a timing assertion
MODERN_KERNEL = takes_event_mask(os.uname().release)


class RecordingConnector(ProcConnector):
    """A ProcConnector that keeps a copy of every datagram its reader receives."""

    def __init__(self, **options: object) -> None:
        super().__init__(rcvbuf_bytes=32 << 20, **options)  # type: ignore[arg-type]
        self.received: list[bytes] = []

    def recv(self) -> memoryview:
        view = super().recv()
        if view:
            self.received.append(bytes(view))
        return view

    def messages(self) -> list[ProcConnectorEvent]:
        return [message for data in self.received for message in parse_messages(data)]


def pid_of(message: ProcConnectorEvent) -> int | None:
    if isinstance(message, ForkEvent):
        return message.child_tgid
    if isinstance(message, ExecEvent | ExitEvent | CommEvent | UidEvent | GidEvent | SidEvent):
        return message.tgid
    return None


def of_a_thread(message: ProcConnectorEvent) -> bool:
    """A thread's fork, exit, rename or id change: what the filter keeps from the reader."""
    if isinstance(message, ForkEvent | ExitEvent):
        return message.is_thread
    if isinstance(message, CommEvent | UidEvent | GidEvent):
        return message.pid != message.tgid
    return False


def read_until_exited(connector: RecordingConnector, pids: Iterable[int]) -> None:
    """Receive until every pid's process exit arrived (and whatever is queued behind it)."""
    waiting = set(pids)
    deadline = time.monotonic() + GUARD_S
    poller = select.poll()
    poller.register(connector.fileno(), select.POLLIN)
    while time.monotonic() < deadline:
        if not poller.poll(500):
            if not waiting:
                return
            continue
        while data := connector.recv():
            for message in parse_messages(data):
                if isinstance(message, ExitEvent) and not message.is_thread:
                    waiting.discard(message.tgid)
    raise AssertionError(f"{len(waiting)} exits never arrived")


def run_workload() -> tuple[list[int], int]:
    """200 /bin/true one after the other, then one process whose 20 threads start and exit."""
    pids = []
    for _ in range(RUNS):
        child = subprocess.Popen([TRUE])
        child.wait()
        pids.append(child.pid)
    threaded = subprocess.Popen([sys.executable, "-c", THREADED])
    assert threaded.wait() == 0
    return pids, threaded.pid


@pytest.fixture
def connectors() -> Iterator[tuple[RecordingConnector, RecordingConnector]]:
    """The default connector (mask where the kernel takes one, socket filter) and a legacy
    one that receives everything, open side by side on the same workload."""
    filtered = RecordingConnector()
    everything = RecordingConnector(event_mask=None, socket_filter=False)
    filtered.open()
    everything.open()
    yield filtered, everything
    filtered.close()
    everything.close()


def test_forks_exits_of_threads_never_reach_the_reader(
    connectors: tuple[RecordingConnector, RecordingConnector],
) -> None:
    filtered, everything = connectors
    assert filtered.socket_filter and not everything.socket_filter
    assert filtered.event_mask == (EVENT_MASK if MODERN_KERNEL else None)
    pids, threaded = run_workload()
    read_until_exited(filtered, [*pids, threaded])
    read_until_exited(everything, [*pids, threaded])
    ours = {*pids, threaded}

    legacy = [m for m in everything.messages() if pid_of(m) in ours]
    legacy_threads = [m for m in legacy if isinstance(m, ForkEvent | ExitEvent) and m.is_thread]
    assert len(legacy_threads) >= 2 * THREADS  # the workload makes what is to be filtered

    messages = filtered.messages()
    assert not [m for m in messages if of_a_thread(m)]
    mine = [m for m in messages if pid_of(m) in ours]
    for pid in ours:  # each child: exactly its fork, its exec and its exit
        kinds = sorted(type(m).__name__ for m in mine if pid_of(m) == pid)
        assert kinds == ["ExecEvent", "ExitEvent", "ForkEvent"], pid
    assert len(mine) == 3 * (RUNS + 1) < len(legacy)
    print(
        f"\ndatagrams about the workload: all events {len(legacy)}, "
        f"{filtered.filtering}: {len(mine)}; total received (host-wide) "
        f"{everything.datagrams_total} vs {filtered.datagrams_total}"
    )


def test_a_process_id_change_reaches_the_reader_once_its_threads_do_not(
    connectors: tuple[RecordingConnector, RecordingConnector],
) -> None:
    filtered, everything = connectors
    child = subprocess.Popen([sys.executable, "-c", SETIDS])
    assert child.wait() == 0
    read_until_exited(filtered, [child.pid])
    read_until_exited(everything, [child.pid])
    legacy = [m for m in everything.messages() if isinstance(m, UidEvent) and m.tgid == child.pid]
    assert len(legacy) >= 5  # the leader and its four threads
    uids = [m for m in filtered.messages() if isinstance(m, UidEvent) and m.tgid == child.pid]
    gids = [m for m in filtered.messages() if isinstance(m, GidEvent) and m.tgid == child.pid]
    assert [(m.pid, m.ruid) for m in uids] == [(child.pid, 65534)]
    assert [(m.pid, m.rgid) for m in gids] == [(child.pid, 65534)]
    print(f"\nuid events about one setuid(): all events {len(legacy)}, filtered {len(uids)}")


@pytest.mark.skipif(not MODERN_KERNEL, reason="the connector's event mask needs Linux >= 6.6")
def test_the_kernel_mask_alone_keeps_unused_event_types_away(
    connectors: tuple[RecordingConnector, RecordingConnector],
) -> None:
    """Without the socket filter, what stays away is the kernel's doing: the mask survived the
    handshake (a masked request is not acknowledged). setsid() is an event type the source
    does not use."""
    masked = RecordingConnector(socket_filter=False)
    masked.open()
    try:
        assert masked.event_mask == EVENT_MASK and not masked.socket_filter
        child = subprocess.Popen([sys.executable, "-c", SETSID])
        assert child.wait() == 0
        read_until_exited(masked, [child.pid])
        _, everything = connectors
        read_until_exited(everything, [child.pid])
    finally:
        masked.close()
    assert [m for m in everything.messages() if isinstance(m, SidEvent) and m.tgid == child.pid]
    kinds = {type(m).__name__ for m in masked.messages() if pid_of(m) == child.pid}
    assert kinds == {"ForkEvent", "ExecEvent", "ExitEvent"}
    assert not [m for m in masked.messages() if isinstance(m, SidEvent)]


def test_the_event_source_still_sees_every_exec_and_exit() -> None:
    """The default event source (mask and filter): nothing it reports is missing, no thread
    event reaches it, and the gaps the filtering leaves in the kernel's sequence numbers are
    not mistaken for lost events."""
    source = ProcEventSource(read_boot_time(), connector=ProcConnector(rcvbuf_bytes=32 << 20))
    source.start()
    try:
        pids, threaded = run_workload()
        wanted = {*pids, threaded}
        seen: dict[str, set[int]] = {"exec": set(), "exit": set()}
        deadline = time.monotonic() + GUARD_S
        while not wanted <= seen["exit"] and time.monotonic() < deadline:
            source.ready.wait(0.2)
            for event in source.drain():
                if event.kind in seen:
                    seen[event.kind].add(event.pid)
        stats = source.stats()
    finally:
        source.stop()
    assert source.error is None
    assert wanted <= seen["exec"] and wanted <= seen["exit"]
    assert stats.threads_ignored_total == 0  # the filter dropped every thread event, host-wide
    assert stats.lost_total == 0
    assert stats.overruns_total > 0 or not source.needs_reconcile
    assert "socket filter drops threads" in stats.filtering
    assert stats.datagrams_total >= 3 * len(wanted)


def test_health_says_what_is_filtered(harness: DaemonHarness) -> None:
    """A real daemon reports its event filtering in `health` (JSON field and table row), and
    still records a threaded child's exit."""
    harness.start(interval="5")
    child = subprocess.Popen([sys.executable, "-c", THREADED])
    assert child.wait() == 0
    sql = f"SELECT kind FROM process_events WHERE pid = {child.pid} AND kind = 'exit'"
    wait_for(functools.partial(harness.query, sql), "the threaded child's exit")
    harness.wait_ticks(1)
    health = json.loads(harness.cli("-o", "json", "health", check=True).stdout)[0]
    assert health["event_source"] == "netlink"
    expected = (
        "kernel mask fork|exec|exit|uid|gid|ptrace|comm"
        if MODERN_KERNEL
        else "kernel sends all events"
    )
    assert health["event_filter"] == f"{expected}; socket filter drops threads"
    table = harness.cli("health", check=True).stdout
    assert f"netlink ({expected}; socket filter drops threads)" in table
