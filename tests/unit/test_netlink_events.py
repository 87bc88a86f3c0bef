"""ProcEventSource without the kernel: decoded events in, ProcessEvents out, /proc faked in a
temporary directory, and the reader thread fed through a socketpair."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.collector.event_records import ObservedEvent
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.netlink import (
    ConnectorOverrun,
)
from daemoneye.collector.proc_events import (
    NLMSG_DONE,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    MalformedMessage,
)

BOOT = 1_700_000_000.0
EVENT_NS = time.monotonic_ns()  # every fake process started long before this
PARENT = 100


def write_process(
    root: Path,
    pid: int,
    *,
    start_ticks: int = 4321,
    ppid: int = PARENT,
    state: str = "S",
    exe: str = "/usr/bin/curl",
    cmdline: bytes = b"curl\0-s\0http://x\0",
    comm: str = "cu) (rl",
    uid: int = 1000,
    gid: int = 1001,
) -> None:
    """A /proc/<pid> directory with the files the source reads."""
    directory = root / str(pid)
    directory.mkdir()
    tail = f"{state} {ppid} 1 1 0 -1 4194304 " + " ".join(["0"] * 12) + f" {start_ticks}"
    (directory / "stat").write_text(f"{pid} ({comm}) {tail} 100 200 0 0\n")
    (directory / "cmdline").write_bytes(cmdline)
    (directory / "status").write_text(
        f"Name:\tcurl\nState:\t{state}\nUid:\t{uid}\t0\t0\t0\nGid:\t{gid}\t0\t0\t0\n"
    )
    (directory / "exe").symlink_to(exe)
    (directory / "cwd").symlink_to("/srv/app")


def fork(child: int, tgid: int | None = None, *, seq: int = 1, cpu: int = 0) -> ForkEvent:
    return ForkEvent(cpu, seq, EVENT_NS, PARENT, PARENT, child, child if tgid is None else tgid)


def exec_(pid: int, *, seq: int = 2, cpu: int = 0) -> ExecEvent:
    return ExecEvent(cpu, seq, EVENT_NS, pid, pid)


def exit_(pid: int, status: int, *, tgid: int | None = None, seq: int = 3) -> ExitEvent:
    tgid = pid if tgid is None else tgid
    return ExitEvent(0, seq, EVENT_NS, pid, tgid, status, 17, PARENT, PARENT)


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    return tmp_path


def make_source(proc: Path, **kwargs: object) -> ProcEventSource:
    return ProcEventSource(BOOT, clk_tck=100, proc_root=str(proc), **kwargs)  # type: ignore[arg-type]


def observed(source: ProcEventSource, *messages: object) -> list[ObservedEvent]:
    results = [source.handle(m) for m in messages]  # type: ignore[arg-type]
    return [r for r in results if r is not None]


# -- translation ----------------------------------------------------------------------------


def test_exec_reads_exe_cmdline_cwd_and_ids_keyed_by_start_time(proc: Path) -> None:
    write_process(proc, 42)
    source = make_source(proc)
    (item,) = observed(source, exec_(42))
    event = item.event
    assert (event.kind, event.pid, event.ppid, event.source) == ("exec", 42, PARENT, "netlink")
    assert event.start_time == BOOT + 4321 / 100
    assert event.exe == "/usr/bin/curl"
    assert event.cmdline == ("curl", "-s", "http://x")
    assert not event.partial
    assert item.start_ticks == 4321
    assert item.details is not None
    assert (item.details.cwd, item.details.uid, item.details.gid) == ("/srv/app", 1000, 1001)


def test_deleted_executable_is_flagged(proc: Path) -> None:
    write_process(proc, 42, exe="/tmp/dropper (deleted)")
    (item,) = observed(make_source(proc), exec_(42))
    assert item.event.exe == "/tmp/dropper"
    assert item.details is not None and item.details.exe_deleted


def test_exec_of_a_vanished_process_is_partial_with_unknown_start(proc: Path) -> None:
    source = make_source(proc)
    (item,) = observed(source, exec_(42))
    assert item.event.partial and item.event.start_time == 0.0
    assert item.event.exe is None and item.event.cmdline is None
    assert source.partial_total == 1


def test_exec_after_a_fork_keeps_the_start_time_learned_at_fork(proc: Path) -> None:
    write_process(proc, 42)
    source = make_source(proc)
    (forked,) = observed(source, fork(42))
    (proc / "42" / "stat").unlink()  # gone before the exec could be read
    (execed,) = observed(source, exec_(42))
    assert forked.event.kind == "fork" and forked.event.ppid == PARENT
    assert execed.event.partial
    assert execed.event.start_time == forked.event.start_time == BOOT + 43.21


def test_exec_of_a_process_never_read_still_names_its_parent(proc: Path) -> None:
    source = make_source(proc)
    (forked,) = observed(source, fork(42))
    (execed,) = observed(source, exec_(42))
    assert forked.event.partial and execed.event.partial
    assert execed.event.ppid == PARENT and execed.event.start_time == 0.0


def test_zombie_at_exec_time_is_partial(proc: Path) -> None:
    write_process(proc, 42, state="Z", cmdline=b"")
    (item,) = observed(make_source(proc), exec_(42))
    assert item.event.partial and item.event.start_time == BOOT + 43.21


def test_a_pid_reused_after_the_event_is_not_attributed_to_it(proc: Path) -> None:
    far_future_ticks = (EVENT_NS // 10_000_000) + 10**9
    write_process(proc, 42, start_ticks=far_future_ticks, exe="/usr/bin/innocent")
    (item,) = observed(make_source(proc), exec_(42))
    assert item.event.partial and item.event.exe is None and item.event.start_time == 0.0


def test_exit_is_keyed_by_the_start_time_seen_at_exec(proc: Path) -> None:
    write_process(proc, 42)
    source = make_source(proc)
    observed(source, exec_(42))
    (item,) = observed(source, exit_(42, 3 << 8))
    assert item.event.kind == "exit" and item.event.exit_code == 3
    assert item.event.start_time == BOOT + 43.21 and not item.event.partial


def test_death_by_signal_is_a_negative_exit_code(proc: Path) -> None:
    write_process(proc, 42)
    source = make_source(proc)
    observed(source, exec_(42))
    (item,) = observed(source, exit_(42, 9))
    assert item.event.exit_code == -9


def test_exit_of_an_unseen_zombie_learns_its_start_from_stat(proc: Path) -> None:
    write_process(proc, 42, state="Z")
    (item,) = observed(make_source(proc), exit_(42, 0))
    assert item.event.start_time == BOOT + 43.21 and not item.event.partial


def test_exit_of_an_unseen_reaped_process_is_partial(proc: Path) -> None:
    (item,) = observed(make_source(proc), exit_(42, 0))
    assert item.event.partial and item.event.start_time == 0.0 and item.event.exit_code == 0


def test_exit_of_an_unseen_live_process_is_not_trusted(proc: Path) -> None:
    write_process(proc, 42, state="S")  # a running process holds this pid: not the one that exited
    (item,) = observed(make_source(proc), exit_(42, 0))
    assert item.event.partial and item.event.start_time == 0.0


def test_threads_are_not_processes(proc: Path) -> None:
    source = make_source(proc)
    assert observed(source, fork(43, tgid=42), exit_(43, 0, tgid=42)) == []
    assert source.threads_ignored_total == 2 and source.events_total == 0


def test_a_sequence_gap_counts_lost_events_and_asks_for_a_scan(proc: Path) -> None:
    source = make_source(proc)
    observed(source, exit_(1, 0, seq=10), exit_(2, 0, seq=11), exit_(3, 0, seq=15))
    assert source.lost_total == 3
    assert source.take_reconcile() and not source.needs_reconcile


def test_sequences_are_per_cpu(proc: Path) -> None:
    source = make_source(proc)
    observed(source, exec_(1, seq=10, cpu=0), exec_(2, seq=500, cpu=1), exec_(3, seq=11, cpu=0))
    assert source.lost_total == 0 and not source.needs_reconcile


def test_malformed_messages_are_counted(proc: Path) -> None:
    source = make_source(proc)
    assert observed(source, MalformedMessage(0, "x")) == []
    assert source.malformed_total == 1


def test_the_start_tick_memory_is_bounded(proc: Path) -> None:
    for pid in (1, 2, 3):
        write_process(proc, pid, start_ticks=pid)
    source = make_source(proc, known_capacity=2)
    observed(source, exec_(1), exec_(2), exec_(3))
    for pid in (1, 2, 3):
        (proc / str(pid) / "stat").unlink()
    exits = observed(source, exit_(1, 0), exit_(2, 0), exit_(3, 0))
    assert [e.event.partial for e in exits] == [True, False, False]


# -- the queue ------------------------------------------------------------------------------


def test_forks_are_shed_first_then_everything_at_capacity(proc: Path) -> None:
    source = make_source(proc, capacity=4, high_water=2)
    items = observed(source, *[exec_(pid) for pid in (1, 2)])
    source.enqueue(items)
    assert observed(source, fork(3)) == []  # past the high-water mark: not even read
    source.enqueue(observed(source, exec_(4), exit_(5, 0), exec_(6)))
    assert [e.kind for e in source.drain()] == ["exec", "exec", "exec", "exit"]
    assert source.dropped_total == 2
    assert source.needs_reconcile  # an exec was lost, not just a fork


def test_drain_respects_max_items_and_clears_ready(proc: Path) -> None:
    source = make_source(proc)
    source.enqueue(observed(source, exec_(1), exec_(2), exec_(3)))
    assert source.ready.is_set()
    assert [e.pid for e in source.drain(2)] == [1, 2]
    assert source.ready.is_set()
    assert [e.pid for e in source.drain(2)] == [3]
    assert not source.ready.is_set()


# -- the reader thread ----------------------------------------------------------------------


class SocketPairConnector:
    """Stands in for ProcConnector: datagrams written to `feed` are what the kernel sent;
    the datagram b"ENOBUFS" plays an overrun."""

    def __init__(self) -> None:
        self.feed, self._reader = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.overruns = 0
        self.datagrams_total = 0
        self.rcvbuf_bytes = 1 << 16
        self.delivers_every_event = True
        self.filtering = "kernel sends all events; no socket filter"
        self.closed = threading.Event()

    def open(self, *, ack_timeout: float = 1.0) -> None:
        self._reader.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def recv(self) -> memoryview:
        try:
            data = self._reader.recv(65536)
        except BlockingIOError:
            return memoryview(b"")
        if data == b"ENOBUFS":
            self.overruns += 1
            raise ConnectorOverrun
        self.datagrams_total += 1
        return memoryview(data)

    def close(self) -> None:
        self._reader.close()
        self.closed.set()


def wire(what: int, body: bytes, seq: int) -> bytes:
    proc_event = struct.pack("=IIQ", what, 0, EVENT_NS) + body
    cn_msg = struct.pack("=IIIIHH", 1, 1, seq, 0, len(proc_event), 0) + proc_event
    return struct.pack("=IHHII", 16 + len(cn_msg), NLMSG_DONE, 0, seq, 0) + cn_msg


@pytest.fixture
def running(proc: Path) -> Iterator[tuple[ProcEventSource, SocketPairConnector, list[int]]]:
    connector = SocketPairConnector()
    wakeups: list[int] = []
    source = make_source(proc, connector=connector, wakeup=lambda: wakeups.append(1))
    source.start()
    yield source, connector, wakeups
    source.stop()
    connector.feed.close()


def drain_until(source: ProcEventSource, count: int) -> list[ObservedEvent]:
    items: list[ObservedEvent] = []
    deadline = time.monotonic() + 10
    while len(items) < count and time.monotonic() < deadline:
        source.ready.wait(0.1)
        items += source.drain_observed()
    return items


def test_the_thread_turns_datagrams_into_events_and_wakes_the_consumer(
    proc: Path, running: tuple[ProcEventSource, SocketPairConnector, list[int]]
) -> None:
    source, connector, wakeups = running
    write_process(proc, 42)
    connector.feed.send(
        wire(PROC_EVENT_FORK, struct.pack("=IIII", PARENT, PARENT, 42, 42), 1)
        + wire(PROC_EVENT_EXEC, struct.pack("=II", 42, 42), 2)
    )
    connector.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 42, 42, 3 << 8, 17, 1, 1), 3))
    items = drain_until(source, 3)
    assert [i.event.kind for i in items] == ["fork", "exec", "exit"]
    assert items[2].event.exit_code == 3
    assert wakeups  # at least once; the consumer was told
    assert source.stats().events_total == 3


def test_an_overrun_asks_for_a_scan_and_the_reader_keeps_going(
    running: tuple[ProcEventSource, SocketPairConnector, list[int]],
) -> None:
    source, connector, _ = running
    connector.feed.send(b"ENOBUFS")
    connector.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 7, 7, 0, 17, 1, 1), 9))
    assert [i.event.pid for i in drain_until(source, 1)] == [7]
    assert source.needs_reconcile and source.stats().overruns_total == 1


def test_a_filtered_connector_s_overrun_counts_a_lost_event_where_gaps_cannot(
    proc: Path,
) -> None:
    # With a kernel mask or a socket filter, sequence numbers skip by design: a gap says
    # nothing, and an overrun is the only sign of a loss. It must not read as none lost.
    connector = SocketPairConnector()
    connector.delivers_every_event = False
    source = make_source(proc, connector=connector)
    source.start()
    try:
        connector.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 6, 6, 0, 17, 1, 1), 1))
        connector.feed.send(b"ENOBUFS")
        connector.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 7, 7, 0, 17, 1, 1), 9))
        assert [i.event.pid for i in drain_until(source, 2)] == [6, 7]
        stats = source.stats()
        assert (stats.lost_total, stats.overruns_total) == (1, 1)  # the gap 1..9 is no loss
        assert source.needs_reconcile
    finally:
        source.stop()
        connector.feed.close()


def test_garbage_on_the_wire_is_counted_not_fatal(
    running: tuple[ProcEventSource, SocketPairConnector, list[int]],
) -> None:
    source, connector, _ = running
    connector.feed.send(b"\0" * 40)
    connector.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 7, 7, 0, 17, 1, 1), 1))
    assert [i.event.pid for i in drain_until(source, 1)] == [7]
    assert source.malformed_total == 1 and source.alive


def test_stop_ends_an_idle_reader_and_closes_the_socket(proc: Path) -> None:
    connector = SocketPairConnector()
    source = make_source(proc, connector=connector)
    source.start()
    source.stop(timeout=10)
    assert not source.alive and connector.closed.is_set()
    assert source.failure is None  # a requested stop is not a failure for `health`
    connector.feed.close()


def test_the_priority_boost_applies_to_the_reader_thread_only(proc: Path) -> None:
    connector = SocketPairConnector()
    source = make_source(proc, connector=connector, priority_boost=3)
    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    source.start()
    try:
        assert source._thread is not None and source._thread.native_id is not None
        reader_nice = _nice_when_settled(source._thread.native_id, main_nice)
    finally:
        source.stop()
        connector.feed.close()
    if reader_nice == main_nice:
        pytest.skip("no CAP_SYS_NICE: the boost is best effort")
    assert reader_nice == max(-20, main_nice - 3)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice


def test_a_realtime_reader_is_sched_fifo_and_the_caller_is_not(proc: Path) -> None:
    """procmond's reader preempts ordinary tasks the moment an exec wakes it."""
    connector = SocketPairConnector()
    source = make_source(proc, connector=connector, realtime=True)
    source.start()
    try:
        assert source._thread is not None and source._thread.native_id is not None
        tid = source._thread.native_id
        deadline = time.monotonic() + 10
        while os.sched_getscheduler(tid) != os.SCHED_FIFO and time.monotonic() < deadline:
            time.sleep(0.01)
        policy = os.sched_getscheduler(tid)
    finally:
        source.stop()
        connector.feed.close()
    if policy != os.SCHED_FIFO and os.geteuid() != 0:
        pytest.skip("no CAP_SYS_NICE: real-time priority is best effort")
    assert policy == os.SCHED_FIFO
    assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER


def _nice_when_settled(tid: int, start: int) -> int:
    deadline = time.monotonic() + 10
    nice = start
    while nice == start and time.monotonic() < deadline:
        time.sleep(0.01)
        nice = os.getpriority(os.PRIO_PROCESS, tid)
    return nice


def test_sequence_gaps_are_not_losses_when_events_are_filtered_for_us(proc: Path) -> None:
    """With the kernel's mask or the socket filter, the per-CPU sequence numbers skip every
    thread event and id change: a gap then says nothing, and must not trigger scans."""
    connector = SocketPairConnector()
    connector.delivers_every_event = False
    connector.filtering = "kernel mask fork|exec|exit; socket filter drops threads"
    source = make_source(proc, connector=connector)
    source.start()
    try:
        connector.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 7, 7, 0, 17, 1, 1), 10))
        connector.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 8, 8, 0, 17, 1, 1), 25))
        assert [i.event.pid for i in drain_until(source, 2)] == [7, 8]
        stats = source.stats()
        assert stats.lost_total == 0 and not source.needs_reconcile
        assert stats.datagrams_total == connector.datagrams_total
        assert stats.filtering == connector.filtering
    finally:
        source.stop()
        connector.feed.close()


def test_sequence_gaps_are_losses_when_every_event_is_delivered(
    running: tuple[ProcEventSource, SocketPairConnector, list[int]],
) -> None:
    source, connector, _ = running
    connector.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 7, 7, 0, 17, 1, 1), 10))
    connector.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 8, 8, 0, 17, 1, 1), 25))
    assert [i.event.pid for i in drain_until(source, 2)] == [7, 8]
    assert source.lost_total == 14 and source.needs_reconcile


def test_a_read_says_whether_it_took_a_whole_batch_so_the_reader_does_not_pause_behind(
    proc: Path,
) -> None:
    """With the exec capture on the reader pauses after a wake-up to gather a burst, but not
    when its last read took a whole batch: more is waiting then. The read tells which."""
    connector = SocketPairConnector()
    connector.open()
    source = make_source(proc, connector=connector, batch=3)
    for pid in range(42, 47):
        write_process(proc, pid)
        connector.feed.send(wire(PROC_EVENT_EXEC, struct.pack("=II", pid, pid), pid))
    assert source._read_available() == 3  # a whole batch: behind, no pause before the next
    assert source._read_available() == 2
    assert source._read_available() == 0
    assert [o.event.pid for o in source.drain_observed()] == [42, 43, 44, 45, 46]
    connector.close()
    connector.feed.close()
