"""Real-time process events: a reader thread on the process connector that turns the kernel's
fork/exec/exit notifications into `ProcessEvent`s, reading /proc the moment a program starts.

Conventions every consumer relies on:

- Identity is (pid, start_time) with ``start_time = boot_time + start_ticks / clk_tck`` (stat
  field 22), computed with exactly that expression so it equals the poller's key bit for bit.
  ``start_time == 0.0`` means "unknown": the process was gone before we could read it and no
  earlier fork/exec taught us its start. Such events have ``partial=True``.
- Only processes are reported: thread creation (fork with child_pid != child_tgid) and thread
  exits are dropped; exec is reported for the thread group (the kernel makes the exec'ing thread
  the leader). Renames, real uid/gid changes and ptrace attaches of a thread group leader are
  reported as change events ('rename', 'uid', 'gid', 'ptrace') with the new value; a thread's
  own rename or id change is not.
- ``exit_code`` is the exit(2) status after a normal exit, and the *negative signal number*
  after death by signal (-9 for SIGKILL), as Python's ``Popen.returncode`` does. Unlike the
  shell's 128+N it cannot be confused with a program that calls exit(137).
"""

from __future__ import annotations

import collections
import logging
import os
import select
import stat as stat_mode
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from daemoneye.collector.context import ContextReader
from daemoneye.collector.details import NO_CONTEXT_VALUES, read_instance
from daemoneye.collector.event_records import EventConnector, EventSourceStats, ObservedEvent
from daemoneye.collector.exec_capture import CapturedExec, ExecCapture
from daemoneye.collector.netlink import (
    ConnectorOverrun,
    ProcConnector,
)
from daemoneye.collector.proc_events import (
    AckEvent,
    CommEvent,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    GidEvent,
    MalformedMessage,
    NetlinkError,
    NetlinkOverrun,
    ProcConnectorEvent,
    PtraceEvent,
    UidEvent,
    parse_messages,
)
from daemoneye.collector.procfs import StatFields, parse_stat_fields, read_file
from daemoneye.models import ProcessDetails, ProcessEvent

log = logging.getLogger(__name__)

_SEQ_MODULUS = 1 << 32
# With the exec capture on, the reader waits this long after it is woken before it reads: a
# burst's datagrams are then handled as one batch (one wake-up, one drain of the rings, one
# pass of /proc reads) instead of one or two each. Nothing a process gone meanwhile takes with
# it is lost: its record holds the argv, exe, working directory, ids and context, and its
# fork takes its start from the record. Without the capture the reader reads at once, racing
# the process for its /proc entry.
CAPTURED_BATCH_S = 0.002
# With the capture on, a fork whose child did nothing else in its batch is held to the next
# read (at most this long when nothing else wakes the reader): the child has usually exec'd by
# then, and its exec's read or record gives the start time that the fork would have read stat
# for. A fork only teaches start times (the feed stores none). What holding it can lose: the
# start time of a child that exits without exec'ing between the two reads and is reaped at
# once; its exit is then partial, as a child's that lived under the 2 ms batch always was.
HELD_FORK_WAIT_MS = 10
# the messages after a fork that say its child did something: the fork is not held then
_ABOUT_A_CHILD = (ExecEvent, ExitEvent, CommEvent, UidEvent, GidEvent, PtraceEvent)
_NO_DETAILS = ProcessDetails(None, False, (), None, None, None, None)
# what an exec's read gives: stat (None: gone first), details, gone, the record it used
_ExecRead = tuple[StatFields | None, ProcessDetails, bool, CapturedExec | None]


@dataclass(frozen=True, slots=True)
class _Known:
    """What fork/exec taught us about a pid, for events that arrive after it is gone."""

    start_ticks: int | None
    ppid: int | None


class ProcEventSource:
    """A daemon thread that reads the process connector into a bounded queue.

    The reader never waits for the consumer: past ``high_water`` queued items fork events are
    discarded, at ``capacity`` everything new is, and a lost exec/exit sets `needs_reconcile`
    (so does a kernel overrun). `wakeup` runs on the reader thread after it queues events and
    the consumer has not yet drained since the previous call; pass
    ``lambda: loop.call_soon_threadsafe(event.set)``. `ready` is set while items are queued.
    """

    def __init__(
        self,
        boot_time: float,
        *,
        clk_tck: int | None = None,
        capacity: int = 65_536,
        high_water: int | None = None,
        wakeup: Callable[[], None] | None = None,
        connector: EventConnector | None = None,
        proc_root: str = "/proc",
        user_of: Callable[[int], str | None] = lambda uid: None,
        known_capacity: int = 8192,
        batch: int = 256,
        priority_boost: int = 10,
        realtime: bool = False,
        context: ContextReader | None = None,
        capture: ExecCapture | None = None,
    ) -> None:
        self._boot_time = boot_time
        self._clk_tck = clk_tck or os.sysconf("SC_CLK_TCK")
        self._tick_ns = 1_000_000_000 // self._clk_tck
        self._capacity = capacity
        self._high_water = high_water if high_water is not None else capacity * 3 // 4
        self._wakeup = wakeup
        self._connector: EventConnector = connector or ProcConnector()
        self._proc_root = proc_root
        self._proc_root_bytes = os.fsencode(proc_root)
        self._user_of = user_of
        self._context = context  # owned by the reader thread: reads each exec's context
        self._capture = capture  # owned by the reader thread too: each exec's argv, in-kernel
        self._known: collections.OrderedDict[int, _Known] = collections.OrderedDict()
        self._known_capacity = known_capacity
        self._exec_reads: dict[int, _ExecRead] = {}
        self._held_forks: list[ForkEvent] = []  # from the last read, handled at the next
        # a fork (by id) -> the kind of its child's next message in the batch (ExecEvent or
        # ExitEvent), set by prefetch_execs: only an exec right after it may give its start
        self._fork_next: dict[int, type[ExecEvent] | type[ExitEvent]] = {}
        self._batch = batch
        self._priority_boost = priority_boost
        self._realtime = realtime
        self._queue: collections.deque[ObservedEvent] = collections.deque()
        self._lock = threading.Lock()
        self._signalled = False
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._stop_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._last_seq_by_cpu: dict[int, int] = {}
        self._gaps_are_losses = True  # until start() learns that events are filtered for us
        self._needs_reconcile = False
        self._wall_minus_mono_ns = 0
        self._boot_minus_mono_ns = 0
        self._refresh_clocks()
        self.error: BaseException | None = None  # why the reader thread ended early
        self.messages_total = 0
        self.events_total = 0
        self.lost_total = 0
        self.dropped_total = 0
        self.partial_total = 0
        self.malformed_total = 0
        self.threads_ignored_total = 0
        self.rescued_total = 0  # execs that went during the /proc read, completed by the capture
        self.uncaptured_total = 0  # execs the capture had no record of (its ring was full)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe (raising EventsUnavailable with the reason) and start the reader thread."""
        if self._thread is not None:
            raise RuntimeError("ProcEventSource already started")
        self._connector.open()
        self._gaps_are_losses = self._connector.delivers_every_event
        if self._connector.overruns:
            self._request_reconcile()
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="daemoneye-netlink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Wake the reader through an eventfd (closing a socket does not interrupt a recv
        blocked in another thread), join it, and release the socket."""
        self._stopping.set()
        if self._stop_fd is not None:
            os.eventfd_write(self._stop_fd, 1)
        if self._thread is None:
            self._connector.close()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("netlink reader did not stop within %.1f s", timeout)
            return
        if self._stop_fd is not None:
            os.close(self._stop_fd)
            self._stop_fd = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def failure(self) -> str | None:
        """Why the reader is not reading, or None while it runs or after `stop()` ended it
        (a requested stop is not a failure)."""
        if self.alive or (self._stopping.is_set() and self.error is None):
            return None
        if self.error is not None:
            return str(self.error) or type(self.error).__name__
        return "it was never started" if self._thread is None else "unknown reason"

    # -- consumer side ---------------------------------------------------------------------

    def drain_observed(self, max_items: int | None = None) -> list[ObservedEvent]:
        """Take up to max_items queued events, oldest first, with their /proc details."""
        with self._lock:
            count = len(self._queue) if max_items is None else min(max_items, len(self._queue))
            items = [self._queue.popleft() for _ in range(count)]
            self._signalled = False
            if not self._queue:
                self.ready.clear()
        return items

    def drain(self, max_items: int | None = None) -> list[ProcessEvent]:
        """Take up to max_items queued events, oldest first."""
        return [observed.event for observed in self.drain_observed(max_items)]

    @property
    def needs_reconcile(self) -> bool:
        """True once events were lost: the caller should run a full scan, then `take_reconcile`."""
        return self._needs_reconcile

    def _request_reconcile(self) -> None:
        with self._lock:  # so that take_reconcile cannot clear a request it did not see
            self._needs_reconcile = True

    def _overrun(self) -> None:
        """The kernel reported that it dropped events. Unfiltered, the sequence gaps count
        them; filtered, gaps are normal and cannot say how many went, so the report counts
        one: a loss is never shown as none."""
        if not self._gaps_are_losses:
            self.lost_total += 1
        self._events_lost()

    def _events_lost(self) -> None:
        """The kernel dropped events: ask for a scan, and let go of the exec capture's waiting
        records, which can no longer be paired safely (a record whose event was lost would
        lend its argv to the next exec of the same process)."""
        self._request_reconcile()
        if self._capture is not None:
            self._capture.forget()

    def take_reconcile(self) -> bool:
        """Return and clear `needs_reconcile` in one step."""
        with self._lock:
            needed, self._needs_reconcile = self._needs_reconcile, False
        return needed

    def stats(self) -> EventSourceStats:
        return EventSourceStats(
            messages_total=self.messages_total,
            events_total=self.events_total,
            lost_total=self.lost_total,
            overruns_total=self._connector.overruns,
            dropped_total=self.dropped_total,
            partial_total=self.partial_total,
            malformed_total=self.malformed_total,
            threads_ignored_total=self.threads_ignored_total,
            rescued_total=self.rescued_total,
            uncaptured_total=self.uncaptured_total,
            queued=len(self._queue),
            rcvbuf_bytes=self._connector.rcvbuf_bytes,
            datagrams_total=self._connector.datagrams_total,
            filtering=self._connector.filtering,
        )

    # -- reader thread ---------------------------------------------------------------------

    def _run(self) -> None:
        assert self._stop_fd is not None
        self._boost_priority()
        poller = select.poll()
        poller.register(self._connector.fileno(), select.POLLIN)
        poller.register(self._stop_fd, select.POLLIN)
        behind = False  # the last read took a whole batch: more is waiting, no pause
        try:
            while not self._stopping.is_set():
                woken = poller.poll(HELD_FORK_WAIT_MS if self._held_forks else None)
                if woken and self._capture is not None and not behind:
                    time.sleep(CAPTURED_BATCH_S)
                if not self._stopping.is_set():
                    behind = self._read_available() >= self._batch
        except BaseException as error:
            self.error = error
            self._request_reconcile()
            raise
        finally:
            self._connector.close()
            if self._capture is not None:
                self._capture.close()

    def _boost_priority(self) -> None:
        """Lower this thread's nice value (like auditd's priority_boost). Many programs live
        under a millisecond; on a busy host the boost decides whether the reader reaches /proc
        before most of them are gone or after half of them are. Needs CAP_SYS_NICE; without it
        the reader runs at the process's own nice value."""
        tid = threading.get_native_id()
        if self._realtime:
            # SCHED_FIFO at the lowest real-time priority: woken by an exec event, the reader
            # preempts every ordinary task on its CPU at once, instead of waiting its turn
            # while the new program runs to its end. It blocks in poll() between batches, and
            # the kernel's real-time throttling (sched_rt_runtime_us) bounds it under a storm.
            try:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(1))
                return
            except PermissionError:
                log.info("netlink reader runs without real-time priority (no CAP_SYS_NICE)")
        if self._priority_boost <= 0:
            return
        try:
            nice = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, max(-20, nice - self._priority_boost))
        except PermissionError:
            log.info("netlink reader runs without priority boost (no CAP_SYS_NICE)")

    def _read_available(self) -> int:
        """Read and handle what the connector holds, up to a batch; the datagrams read."""
        self._refresh_clocks()
        held, self._held_forks = self._held_forks, []
        messages: list[ProcConnectorEvent] = [*held]  # before what followed them
        received = 0  # datagrams, and overruns
        while received < self._batch:
            try:
                data = self._connector.recv()
            except ConnectorOverrun:
                self._overrun()
                received += 1
                continue
            if not data:
                break
            received += 1
            messages += parse_messages(data)
        if self._capture is not None:  # its records were committed before their events
            self._capture.collect()
        if self._context is not None:
            self._context.new_scan()  # socket tables are read at most once per batch
        self.prefetch_execs(messages)
        fresh = messages[len(held) :]
        for message in fresh:  # in the order they came: a held fork is handled later
            if not isinstance(message, MalformedMessage | NetlinkOverrun | NetlinkError):
                self._track_sequence(message.cpu, message.seq)
        if self._capture is not None:
            messages = self._hold_forks(messages, held)
        produced = [
            observed for m in messages if (observed := self.handle(m, tracked=True)) is not None
        ]
        self._exec_reads.clear()
        self._fork_next.clear()
        if produced:
            self.enqueue(produced)
        return received

    def _refresh_clocks(self) -> None:
        mono = time.monotonic_ns()
        self._wall_minus_mono_ns = time.time_ns() - mono
        self._boot_minus_mono_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - mono

    def enqueue(self, produced: list[ObservedEvent]) -> None:
        """Queue what `handle` produced, applying the shedding policy; then wake the consumer."""
        should_wake = False
        with self._lock:
            for observed in produced:
                depth = len(self._queue)
                is_fork = observed.event.kind == "fork"
                if depth >= self._capacity or (is_fork and depth >= self._high_water):
                    self.dropped_total += 1
                    self._needs_reconcile = self._needs_reconcile or not is_fork  # lock held
                    continue
                self._queue.append(observed)
            if self._queue and not self._signalled:
                self._signalled = should_wake = True
                self.ready.set()
        if should_wake and self._wakeup is not None:
            try:
                self._wakeup()
            except RuntimeError as error:  # the event loop closed under us during shutdown
                log.debug("netlink wakeup failed: %s", error)

    # -- translation (public for tests: pure apart from /proc reads) -----------------------

    def prefetch_execs(self, messages: list[ProcConnectorEvent]) -> None:
        """Read /proc for every exec in a batch before handling any message: an exec'd program
        may live well under a millisecond, while forks and exits lose nothing by waiting. A
        fork whose exec is in the same batch then takes its start from this read instead of
        reading stat again. Only batches that queued up while the reader was busy hold more
        than one message, so this is the reader shedding work exactly when it falls behind."""
        self._fork_next.clear()
        waiting: dict[int, int] = {}  # a child's pid -> its fork, until its next message
        for message in messages:
            if isinstance(message, ForkEvent):
                if not message.is_thread:
                    waiting[message.child_tgid] = id(message)
                continue
            if isinstance(message, ExecEvent) or (
                isinstance(message, ExitEvent) and not message.is_thread
            ):
                fork = waiting.pop(message.tgid, None)
                if fork is not None:
                    self._fork_next[fork] = type(message)
            if isinstance(message, ExecEvent) and message.tgid not in self._exec_reads:
                self._exec_reads[message.tgid] = self._read_exec(message.tgid, message.timestamp_ns)

    def _hold_forks(
        self, messages: list[ProcConnectorEvent], held: list[ForkEvent]
    ) -> list[ProcConnectorEvent]:
        """`messages` without the forks to hold to the next read (HELD_FORK_WAIT_MS): a
        process's fork whose child has no other message in this batch, unless it was held
        once already. Its child's later exec then gives its start time instead of a read of
        stat now, which under an exec storm was a sixth of the reader's CPU."""
        followed = {m.tgid for m in messages if isinstance(m, _ABOUT_A_CHILD)}
        once = {id(fork) for fork in held}
        kept: list[ProcConnectorEvent] = []
        for message in messages:
            if (
                isinstance(message, ForkEvent)
                and not message.is_thread
                and id(message) not in once
                and message.child_tgid not in followed
                and message.child_tgid not in self._exec_reads
            ):
                self._held_forks.append(message)
            else:
                kept.append(message)
        return kept

    def handle(self, message: ProcConnectorEvent, *, tracked: bool = False) -> ObservedEvent | None:
        """Turn one decoded connector message into a queued record, or None. `tracked`: its
        sequence number was already checked for gaps, as it arrived (`_read_available`)."""
        if isinstance(message, MalformedMessage):
            self.malformed_total += 1
            return None
        if isinstance(message, NetlinkOverrun):
            self._overrun()
            return None
        if isinstance(message, NetlinkError):
            log.debug("process connector: netlink error %d", message.error)
            return None
        self.messages_total += 1
        if not tracked:
            self._track_sequence(message.cpu, message.seq)
        observed: ObservedEvent | None = None
        if isinstance(message, ExecEvent):
            observed = self._on_exec(message)
        elif isinstance(message, ForkEvent):
            observed = self._on_fork(message)
        elif isinstance(message, ExitEvent):
            observed = self._on_exit(message)
        elif isinstance(message, CommEvent | UidEvent | GidEvent | PtraceEvent):
            observed = self._on_change(message)
        elif isinstance(message, AckEvent) and message.err:
            log.warning("process connector ack error: %s", os.strerror(message.err))
        if observed is not None:
            self.events_total += 1
            self.partial_total += int(observed.event.partial)
        return observed

    def _track_sequence(self, cpu: int, seq: int) -> None:
        """Count a gap in a CPU's sequence numbers as lost events. The kernel numbers every
        event it emits, so when its mask or our socket filter holds some back, gaps are
        normal and only ENOBUFS (an overrun) says that events were lost."""
        if not self._gaps_are_losses:
            return
        last = self._last_seq_by_cpu.get(cpu)
        self._last_seq_by_cpu[cpu] = seq
        if last is None:
            return
        gap = (seq - last - 1) % _SEQ_MODULUS
        if 0 < gap < _SEQ_MODULUS // 2:  # a huge "gap" is a counter restart, not a loss
            self.lost_total += gap
            self._events_lost()

    def _on_fork(self, message: ForkEvent) -> ObservedEvent | None:
        if message.is_thread:
            self.threads_ignored_total += 1
            return None
        if len(self._queue) >= self._high_water:  # shed forks first, before reading /proc
            self.events_total += 1
            self.dropped_total += 1
            return None
        pid = message.child_tgid
        after = self._fork_next.get(id(message))  # the child's next message in this batch
        exec_read = self._exec_reads.get(pid) if after is ExecEvent else None
        read_ticks = exec_read[0].start_ticks if exec_read and exec_read[0] else None
        record_ticks = exec_read[3].start_ticks if exec_read and exec_read[3] else None
        ticks: int | None = None
        if after is ExitEvent:
            pass  # ended before this read: its stat is gone or a newcomer's (its exit reads it)
        elif read_ticks is not None and self._ticks_started_by(read_ticks, message.timestamp_ns):
            ticks = read_ticks
        elif record_ticks is not None and self._ticks_started_by(
            record_ticks, message.timestamp_ns
        ):
            ticks = record_ticks  # gone before its read: the exec's record says
        else:
            stat = self._read_stat(pid, message.timestamp_ns)
            ticks = stat.start_ticks if stat is not None else None
        self._remember(pid, _Known(ticks, message.parent_tgid))
        event = ProcessEvent(
            ts=self._wall(message.timestamp_ns),
            kind="fork",
            pid=pid,
            start_time=self._start_time(ticks),
            ppid=message.parent_tgid,
            source="netlink",
            partial=ticks is None,
        )
        return ObservedEvent(event, ticks, None)

    def _on_exec(self, message: ExecEvent) -> ObservedEvent:
        pid = message.tgid
        exec_read = self._exec_reads.pop(pid, None)
        if exec_read is None:
            exec_read = self._read_exec(pid, message.timestamp_ns)
        stat, details, gone, captured = exec_read
        known = self._known.get(pid)
        if self._capture is not None:
            self.uncaptured_total += captured is None
        if stat is not None:
            known = _Known(stat.start_ticks, stat.ppid)
            self._remember(pid, known)
        elif captured is not None:
            known = _Known(captured.start_ticks, captured.ppid)
            self._remember(pid, known)
        if captured is not None and gone:
            self.rescued_total += 1
            if stat is None:  # gone before stat: the record alone
                details = self._from_capture(captured)
        ticks = known.start_ticks if known is not None else None
        event = ProcessEvent(
            ts=self._wall(message.timestamp_ns),
            kind="exec",
            pid=pid,
            start_time=self._start_time(ticks),
            ppid=known.ppid if known is not None else None,
            exe=details.exe,
            cmdline=details.cmdline if not gone or details.cmdline else None,
            source="netlink",
            partial=gone,
        )
        return ObservedEvent(event, ticks, details)

    def _from_capture(self, captured: CapturedExec) -> ProcessDetails:
        """The details of an exec whose process was gone before /proc could be read: what the
        kernel captured at the exec (its argv, the executable's path and the working directory
        as the kernel walked them, the real ids, and the context the record and what is known
        of it give). The path execve was given is never taken for the exe: it may be relative,
        a symlink or a decoy."""
        found = (
            NO_CONTEXT_VALUES
            if self._context is None
            else self._context.read_values(
                None, None, captured.start_ticks, captured.context, captured.environ
            )
        )
        return ProcessDetails(
            captured.path,
            captured.path_deleted,
            captured.argv,
            captured.cwd,
            captured.uid,
            captured.gid,
            self._user_of(captured.uid),
            *found,
        )

    def _on_exit(self, message: ExitEvent) -> ObservedEvent | None:
        if message.is_thread:
            self.threads_ignored_total += 1
            return None
        pid = message.tgid
        known = self._known.pop(pid, None)
        ticks = known.start_ticks if known is not None else None
        if ticks is None:  # not reaped yet? a zombie's stat still names its start
            stat = self._read_stat(pid, message.timestamp_ns)
            if stat is not None and stat.state in ("Z", "X"):
                ticks = stat.start_ticks
        if message.exited:
            exit_code = message.exit_status
        else:
            signal_number = message.term_signal
            exit_code = -signal_number if signal_number is not None else None
        event = ProcessEvent(
            ts=self._wall(message.timestamp_ns),
            kind="exit",
            pid=pid,
            start_time=self._start_time(ticks),
            ppid=message.parent_tgid or (known.ppid if known is not None else None),
            exit_code=exit_code,
            source="netlink",
            partial=ticks is None,
        )
        return ObservedEvent(event, ticks, None)

    def _on_change(
        self, message: CommEvent | UidEvent | GidEvent | PtraceEvent
    ) -> ObservedEvent | None:
        """A rename, a real uid/gid change or a ptrace attach of a running process. The event
        carries the new value; the consumer, which knows the process's record, adds the old
        one. Threads' events are the socket filter's to drop; any that arrive are counted."""
        if message.pid != message.tgid:
            self.threads_ignored_total += 1
            return None
        if len(self._queue) >= self._high_water:  # shed like forks: the scan finds the state
            self.events_total += 1
            self.dropped_total += 1
            return None
        pid = message.tgid
        known = self._known.get(pid)
        ticks = known.start_ticks if known is not None else None
        if ticks is None:
            stat = self._read_stat(pid, message.timestamp_ns)
            ticks = stat.start_ticks if stat is not None else None
        kind, new_value, setid = self._change_value(message)
        event = ProcessEvent(
            ts=self._wall(message.timestamp_ns),
            kind=kind,
            pid=pid,
            start_time=self._start_time(ticks),
            ppid=known.ppid if known is not None else None,
            source="netlink",
            partial=ticks is None,
            new_value=new_value,
            exe_setid=setid,
        )
        return ObservedEvent(event, ticks, None)

    def _change_value(
        self, message: CommEvent | UidEvent | GidEvent | PtraceEvent
    ) -> tuple[str, str, bool | None]:
        """(kind, new value, exe_setid) of a change event."""
        if isinstance(message, CommEvent):
            return "rename", message.comm, None
        if isinstance(message, PtraceEvent):
            return "ptrace", str(message.tracer_tgid), None
        if isinstance(message, UidEvent):
            return "uid", str(message.ruid), self._exe_has(message.tgid, stat_mode.S_ISUID)
        return "gid", str(message.rgid), self._exe_has(message.tgid, stat_mode.S_ISGID)

    def _exe_has(self, pid: int, bit: int) -> bool | None:
        """Whether the process's executable carries `bit` (set-user-ID or set-group-ID), None
        when it cannot be told (gone, no permission, a kernel thread)."""
        try:
            return bool(os.stat(f"{self._proc_root}/{pid}/exe").st_mode & bit)
        except OSError:
            return None

    def _remember(self, pid: int, known: _Known) -> None:
        self._known[pid] = known
        self._known.move_to_end(pid)
        if len(self._known) > self._known_capacity:
            self._known.popitem(last=False)

    def _start_time(self, start_ticks: int | None) -> float:
        if start_ticks is None:
            return 0.0
        return self._boot_time + start_ticks / self._clk_tck

    def _wall(self, timestamp_ns: int) -> float:
        return (timestamp_ns + self._wall_minus_mono_ns) / 1e9

    # -- /proc readers ---------------------------------------------------------------------

    def _read_stat(self, pid: int, event_ns: int) -> StatFields | None:
        """stat of the process the event is about, or None: gone, unreadable, garbled."""
        try:
            raw = read_file(f"{self._proc_root}/{pid}/stat")
            stat = parse_stat_fields(raw)
        except (OSError, ValueError):
            return None
        return stat if self._started_by(stat, event_ns) else None

    def _started_by(self, stat: StatFields, event_ns: int) -> bool:
        """False when the process we read started after the event: a newcomer reused the pid."""
        return self._ticks_started_by(stat.start_ticks, event_ns)

    def _ticks_started_by(self, start_ticks: int, event_ns: int) -> bool:
        started_ns = start_ticks * self._tick_ns
        return started_ns <= event_ns + self._boot_minus_mono_ns + self._tick_ns

    def _read_exec(self, pid: int, event_ns: int) -> _ExecRead:
        """stat and details of the exec'd process, read like the poller reads them (through one
        pinned /proc/<pid> directory fd, see `daemoneye.collector.details`), with what the exec
        capture recorded at the exec taken instead of read. The flag is True when the process
        was gone (or a zombie) before everything was read; the details then hold what was read
        in time. The record is returned when it was this instance's."""
        captured = self._capture.take(pid, event_ns) if self._capture is not None else None
        try:
            read = read_instance(
                self._proc_root_bytes,
                str(pid).encode(),
                self._user_of,
                self._context,
                captured=captured,
            )
        except (PermissionError, ValueError):  # hidepid, or a garbled stat line
            read = None
        if read is None or not self._started_by(read.stat, event_ns):
            return None, _NO_DETAILS, True, captured
        gone = read.partial or read.stat.state in ("Z", "X")
        return read.stat, read.details, gone, read.captured
