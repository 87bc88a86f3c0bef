"""procmond's one loop: scan /proc, forward kernel process events and hashes, obey two commands.

The collector itself (scanner, event source, hasher, the event feed that reconciles them) lives
in collector/; this loop only drives it and speaks the pair protocol (procmond/frames.py). It
runs alone in its process, so the event reader thread reads the new process's exe, argv and
cwd the moment the kernel reports the exec, never waiting for the agent's rule evaluation.

The main thread waits (select) on the pair, on a pipe the event reader writes to, and on the
next scan's deadline. Writes to the pair block: a slow agent slows this loop, the kernel and
the event source's bounded queue hold what arrives meanwhile, and losses trigger a
reconciling scan as they do in one process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from daemoneye import heap
from daemoneye.collector.btf import BtfError
from daemoneye.collector.connections import ConnectionTracker
from daemoneye.collector.context import ContextReader
from daemoneye.collector.event_feed import EventFeed
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.exec_capture import ExecCapture
from daemoneye.collector.hashing import ExeHasher
from daemoneye.collector.netlink import EventsUnavailable, ProcConnector, probe
from daemoneye.collector.scanner import ProcScanner
from daemoneye.collector.stat_signatures import StatSignatures
from daemoneye.collector.task_iter import TaskIterator
from daemoneye.collector.users import UserNames
from daemoneye.config.schema import CollectorConfig
from daemoneye.models import ExeHash, ProcessEvent, ProcessKey, ScanDelta, ScanStats
from daemoneye.procmond import frames
from daemoneye.procmond.signals import SignalRefused, StaleProcess, signal_instance

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Events are sent in batches taken this long after the batch's first event: one frame (and one
# agent transaction) per burst rather than per exec. The reader thread has already read each
# exec's details by then; only the hand-over waits.
EVENT_BATCH_S = 0.005
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def self_rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_exec_capture(settings: CollectorConfig) -> tuple[ExecCapture | None, str]:
    """The eBPF exec capture and what `health` says of it; loaded before any thread starts,
    while procmond still holds CAP_BPF and CAP_PERFMON (it gives them up right after)."""
    if not settings.events:
        return None, "off: collector.events is off"
    if not settings.exec_capture:
        return None, "off: collector.exec_capture is off"
    try:
        capture = ExecCapture.open()
    except (OSError, BtfError) as exc:
        log.info("eBPF exec capture unavailable: %s", exc)
        return None, f"off: {exc}"
    except Exception as exc:  # a kernel's BTF we misread: run without it, never crash-loop
        log.warning("eBPF exec capture failed to load", exc_info=True)
        return None, f"off: {type(exc).__name__}: {exc}"
    return capture, "eBPF"


@dataclass(frozen=True, slots=True)
class TaskPasses:
    """The scanner's two task iterators as loaded, and for each one missing why (`health`)."""

    tasks: TaskIterator | None = None
    signatures: StatSignatures | None = None
    off: tuple[str, str] = ("off: not loaded", "off: not loaded")


def open_task_passes(settings: CollectorConfig) -> TaskPasses:
    """The scanner's two task iterators, loaded like the exec capture while procmond may: every
    process's context when a scan meets many at once (collector/task_iter.py), and which
    processes' stat may have changed each tick (collector/stat_signatures.py). None (the scan
    reads /proc) where one cannot be loaded."""
    if not settings.exec_capture:
        return TaskPasses(off=("off: collector.exec_capture is off",) * 2)
    tasks, tasks_off = _loaded(TaskIterator.open, "task iterator")
    signatures, signatures_off = _loaded(StatSignatures.open, "stat signature pass")
    if tasks is not None and signatures is not None:
        log.info("BPF task passes loaded: the scan asks the kernel which processes changed")
    return TaskPasses(tasks, signatures, (tasks_off, signatures_off))


def _loaded(load: Callable[[], _T], what: str) -> tuple[_T | None, str]:
    """The loaded pass, or None and why not."""
    try:
        return load(), ""
    except (OSError, BtfError) as exc:
        log.info("BPF %s unavailable: %s", what, exc)
        return None, f"off: {exc}"
    except Exception as exc:  # a kernel's BTF we misread: run without it, never crash-loop
        log.warning("BPF %s failed to load", what, exc_info=True)
        return None, f"off: {type(exc).__name__}: {exc}"


class Procmond:
    """The collector process's state and loop; `run()` returns when the agent goes away."""

    def __init__(
        self,
        pair: socket.socket,
        settings: CollectorConfig,
        *,
        boot_time: float,
        proc_root: str = "/proc",
        clock: Callable[[], float] = time.time,
        capture: tuple[ExecCapture | None, str] = (None, ""),
        tasks: TaskPasses = TaskPasses(),
    ) -> None:
        self.pair = pair
        self._capture, self.exec_capture = capture
        self.settings = settings
        self.boot_time = boot_time
        self.proc_root = proc_root
        self.user_names = UserNames()
        self.hasher = (
            ExeHasher(max_bytes=settings.hash_max_bytes, proc_root=proc_root)
            if settings.hash_executables
            else None
        )
        self.scanner = ProcScanner(
            proc_root,
            boot_time=boot_time,
            update_interval=settings.update_interval,
            clock=clock,
            hasher=self.hasher,
            user_names=self.user_names,
            context=ContextReader(os.fsencode(proc_root), settings.environment),
            tasks=tasks.tasks,
            signatures=tasks.signatures,
            passes_off=tasks.off,
        )
        self.feed: EventFeed | None = None
        # Sockets per instance: walking other users' fds needs procmond's capabilities, so the
        # refresh is here, every collector.connections_interval; the agent writes the deltas.
        self.connections = ConnectionTracker(proc_root, clock=clock, own_pid=os.getpid())
        self._connections_due: float | None = None
        self.event_source = "polling-only: not started"
        self._clock = clock
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._rescan = False
        self._poller = select.poll()  # not select(): descriptors past 1024 are fine
        self._poller.register(pair.fileno(), select.POLLIN)
        self._poller.register(self._wake_r, select.POLLIN)

    # -- startup ---------------------------------------------------------------------------
    def start_events(self) -> None:
        capture, self._capture = self._capture, None  # the event reader owns it from here
        if not self.settings.events:
            self.event_source = "polling-only: collector.events is off"
        else:
            self._start_events(capture)
        if self.feed is None and capture is not None:
            capture.close()
            self.exec_capture = "off: no kernel event reader to pair it with"

    def _start_events(self, capture: ExecCapture | None) -> None:
        reason = probe()
        if reason is None:
            source = ProcEventSource(
                self.boot_time,
                wakeup=self._wakeup,
                connector=ProcConnector(rcvbuf_bytes=self.settings.event_buffer),
                proc_root=self.proc_root,
                user_of=self.user_names,
                realtime=True,
                context=ContextReader(os.fsencode(self.proc_root), self.settings.environment),
                capture=capture,
            )
            try:
                source.start()
            except EventsUnavailable as exc:
                reason = str(exc)
            else:
                self.feed = EventFeed(
                    source, self.scanner, self.user_names, self.hasher, clock=self._clock
                )
                self.event_source = "netlink"
                return
        self.event_source = f"polling-only: {reason}"

    def _wakeup(self) -> None:  # the event reader thread: events are queued
        with contextlib.suppress(BlockingIOError):  # full: the main thread is woken already
            os.write(self._wake_w, b"\0")

    def hello(self) -> frames.Hello:
        source = self.feed.source.stats() if self.feed is not None else None
        return frames.Hello(
            version=frames.PAIR_VERSION,
            pid=os.getpid(),
            uid=os.geteuid(),
            boot_time=self.boot_time,
            event_source=self.event_source,
            event_filter=source.filtering if source is not None else "",
            sees_all=self.scanner.sees_all,
            exec_capture=self.exec_capture,
        )

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Hello, a full first scan, then scans every interval and events as they come, until
        the agent closes the pair (PairClosed) or sends a frame that does not validate."""
        self.send(self.hello())
        with heap.burst():  # no collector passes; then its garbage back, its records frozen
            self.scan(full=True)
        next_scan = time.monotonic() + self.settings.interval
        while True:
            wait = max(0.0, next_scan - time.monotonic())
            ready = {fd for fd, _ in self._poller.poll(wait * 1000.0)}
            if self.pair.fileno() in ready:
                self.obey(frames.read_frame(self.pair, frames.FROM_AGENT))
            if self._wake_r in ready:
                self._drain_wake_pipe()
                time.sleep(EVENT_BATCH_S)
                self.forward_events()
            reconcile = self.feed is not None and self.feed.source.take_reconcile()
            if self._rescan or reconcile or time.monotonic() >= next_scan:
                self._rescan = False
                self.forward_events()  # the scan must not report what is still queued
                self.scan(full=False)
                self.refresh_connections()
                next_scan += self.settings.interval
                if next_scan < time.monotonic():
                    next_scan = time.monotonic() + self.settings.interval

    def refresh_connections(self) -> None:
        """One connections refresh when `connections_interval` has passed (0: never). Not in
        the first scan's tick: walking every fd once must not hold up the first scan."""
        interval = self.settings.connections_interval
        now = time.monotonic()
        if interval <= 0:
            return
        if self._connections_due is None:
            self._connections_due = now + interval
            return
        if now < self._connections_due:
            return
        self._connections_due = now + interval
        self.send(self.connections.refresh(self.scanner.snapshot().keys(), self._net_ns_of))

    def _net_ns_of(self, key: ProcessKey) -> int | None:
        rec = self.scanner.record(key)
        return rec.net_ns if rec is not None else None

    def _drain_wake_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def forward_events(self) -> None:
        if self.feed is None:
            return
        while True:
            delta = self.feed.take()
            if delta is None:
                return
            self.send(frames.Events(delta))

    def scan(self, *, full: bool) -> None:
        delta = self.scanner.scan()
        evaluated: tuple[ProcessKey, ...] = ()
        if self.feed is not None:
            delta = self.feed.without_duplicates(delta)
            fresh = self.feed.not_yet_evaluated(delta)
            fresh_keys = {r.key for r in fresh.added} | {r.key for r in fresh.execed}
            evaluated = tuple(r.key for r in delta.added + delta.execed if r.key not in fresh_keys)
        if full and len(delta.added) > frames.FULL_SCAN_PIECE:
            self._send_in_pieces(delta)
        else:
            self.send(frames.Scan(delta, full, evaluated))
        hashes: list[ExeHash] = self.hasher.drain() if self.hasher is not None else []
        if hashes:
            self.send(frames.Hashes(tuple(hashes)))
        self.send(self.health())

    def _send_in_pieces(self, delta: ScanDelta) -> None:
        """A full scan as SCAN frames of at most FULL_SCAN_PIECE records, each with its
        records' events; the stats and anything not about an added record go with the last."""
        piece = frames.FULL_SCAN_PIECE
        events_of: dict[ProcessKey, list[ProcessEvent]] = {}
        other_events: list[ProcessEvent] = []
        added_keys = {r.key for r in delta.added}
        for event in delta.events:
            key = ProcessKey(event.pid, event.start_time)
            if key in added_keys:
                events_of.setdefault(key, []).append(event)
            else:
                other_events.append(event)
        quiet = ScanStats(0.0, 0, 0, 0, 0, 0, 0)
        for start in range(0, len(delta.added), piece):
            records = delta.added[start : start + piece]
            last = start + piece >= len(delta.added)
            events = [e for r in records for e in events_of.get(r.key, ())]
            part = ScanDelta(
                ts=delta.ts,
                added=records,
                updated=delta.updated if last else (),
                execed=delta.execed if last else (),
                ended=delta.ended if last else (),
                events=tuple(events + other_events) if last else tuple(events),
                stats=delta.stats if last else quiet,
            )
            self.send(frames.Scan(part, True, (), more=not last))

    def health(self) -> frames.Health:
        source = self.feed.source if self.feed is not None else None
        stats = source.stats() if source is not None else None
        failure = source.failure if source is not None else None
        return frames.Health(
            pid=os.getpid(),
            uid=os.geteuid(),
            rss_bytes=self_rss_bytes(),
            cpu_seconds=round(self_cpu_seconds(), 3),
            processes=len(self.scanner.snapshot()),
            scans_total=self.scanner.scans_total,
            denied_total=self.scanner.denied_total,
            vanished_total=self.scanner.vanished_total,
            hash_dropped_total=self.hasher.dropped_total if self.hasher is not None else 0,
            events_total=stats.events_total if stats else 0,
            events_lost_total=stats.lost_total if stats else 0,
            events_dropped_total=stats.dropped_total if stats else 0,
            event_source=self.event_source,
            event_filter=stats.filtering if stats else "",
            problem=f"the kernel event reader stopped: {failure}" if failure else "",
            exec_capture="off: the kernel event reader stopped" if failure else self.exec_capture,
            exec_rescued_total=stats.rescued_total if stats else 0,
            exec_uncaptured_total=stats.uncaptured_total if stats else 0,
            task_passes=self.scanner.task_passes,
        )

    def obey(self, command: object) -> None:
        """The agent's two commands; nothing else reaches here (frames.FROM_AGENT)."""
        if isinstance(command, frames.Rescan):
            self._rescan = True
        elif isinstance(command, frames.SignalRequest):
            self.send(self.signal(command))

    def signal(self, request: frames.SignalRequest) -> frames.SignalResult:
        try:
            sig = signal.Signals(request.signal)
        except ValueError:
            return frames.SignalResult(request.request_id, "refused", "not a signal number")
        try:
            how = signal_instance(
                request.pid,
                request.start_time,
                sig,
                boot_time=self.boot_time,
                proc_root=self.proc_root,
            )
        except StaleProcess as exc:
            return frames.SignalResult(request.request_id, "stale", str(exc))
        except SignalRefused as exc:
            return frames.SignalResult(request.request_id, "refused", str(exc))
        log.info("sent %s to pid %d for the agent", sig.name, request.pid)
        return frames.SignalResult(request.request_id, how, "")

    def send(self, payload: object) -> None:
        frames.write_frame(self.pair, payload)

    def close(self) -> None:
        if self.feed is not None:
            self.feed.source.stop()
        if self.hasher is not None:
            self.hasher.close(timeout=1.0)
        self.scanner.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
