"""The agent's one worker: write what procmond reports to the store, run the rules, retention.

procmond (the collector process) scans /proc and reads the kernel's process events; its frames
(procmond/frames.py) arrive here through `apply_frames`. The agent keeps its own picture of the
live processes (`mirror`): every record procmond sends is taken relative to it, so that after
procmond restarts, its first (full) scan reconciles: instances the agent knew keep their first
sighting, changed ones come out as exec'd or updated, and those that ended meanwhile are ended.

Everything here runs on a single worker thread, which therefore owns the store's writer
connection (one connection per thread, ARCHITECTURE.md §3). The event loop only schedules it.

When the store cannot be written (disk full: `StoreUnwritable`) collection goes on: the rules
run over the tick's records as they are, new alerts are held in memory and handed to the sinks
(engine/spill.py), `health` says so, and the log says it once, then a summary now and then
(store_outage.py). When a write succeeds again the held alerts are written and the live
processes the store missed meanwhile are added (those that ended meanwhile are ended).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import time
from collections.abc import Callable
from typing import Any

from daemoneye import __version__, heap
from daemoneye.collector.procfs import read_boot_id, read_boot_time
from daemoneye.collector.records import exit_event
from daemoneye.config.schema import Config
from daemoneye.daemon.privilege_drop import privileges_of
from daemoneye.daemon.procmond_link import ProcmondLink, last_pid
from daemoneye.daemon.startup_evaluation import StartupProgress
from daemoneye.daemon.store_outage import StoreOutage
from daemoneye.engine.audit_prune import audit_pruner
from daemoneye.engine.detection import DetectionEngine
from daemoneye.engine.outbox import sink_health
from daemoneye.engine.spill import AlertSpill
from daemoneye.engine.stream import EventStream
from daemoneye.errors import StoreError, StoreUnwritable
from daemoneye.models import (
    Connection,
    ConnectionsDelta,
    ConnectionStats,
    ExeHash,
    HealthReport,
    ProcessEvent,
    ProcessKey,
    ProcessRecord,
    ScanDelta,
    ScanStats,
)
from daemoneye.procmond import frames
from daemoneye.store.connections import live_connections, write_delta
from daemoneye.store.db import Store

log = logging.getLogger(__name__)

HEALTH_META_KEY = "health"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _self_rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def _self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def merge_deltas(deltas: list[ScanDelta]) -> ScanDelta:
    """Several event deltas as one (one transaction): later records of an instance win, and
    each stays what it first was to the store (added, exec'd, or updated: a rename's or a new
    uid's record). Within one delta an update is the latest (procmond applies a change on top
    of an exec of the same batch)."""
    if len(deltas) == 1:
        return deltas[0]
    added: dict[ProcessKey, ProcessRecord] = {}
    execed: dict[ProcessKey, ProcessRecord] = {}
    updated: dict[ProcessKey, ProcessRecord] = {}
    ended: list[ProcessKey] = []
    events: list[ProcessEvent] = []
    for delta in deltas:
        for rec in delta.added:
            execed.pop(rec.key, None)
            updated.pop(rec.key, None)
            added[rec.key] = rec
        for rec in delta.execed:
            updated.pop(rec.key, None)
            (added if rec.key in added else execed)[rec.key] = rec
        for rec in delta.updated:
            if rec.key in added:
                added[rec.key] = rec
            elif rec.key in execed:
                execed[rec.key] = rec
            else:
                updated[rec.key] = rec
        ended.extend(delta.ended)
        events.extend(delta.events)
    stats = ScanStats(
        duration_s=sum(d.stats.duration_s for d in deltas),
        processes=0,
        new=len(added),
        ended=len(ended),
        execs=len(added) + len(execed),
        vanished=0,
        denied=0,
    )
    return ScanDelta(
        deltas[-1].ts,
        tuple(added.values()),
        tuple(updated.values()),
        tuple(execed.values()),
        tuple(ended),
        tuple(events),
        stats,
    )


def _joined(parts: list[ScanDelta]) -> ScanDelta:
    """The pieces of one full scan as one delta (the last piece's time and stats)."""
    return ScanDelta(
        parts[-1].ts,
        tuple(r for d in parts for r in d.added),
        tuple(r for d in parts for r in d.updated),
        tuple(r for d in parts for r in d.execed),
        tuple(k for d in parts for k in d.ended),
        tuple(e for d in parts for e in d.events),
        parts[-1].stats,
    )


def _carry(known: ProcessRecord | None, rec: ProcessRecord) -> ProcessRecord:
    """`rec` as procmond sent it, with what the agent knew of the instance kept: its first
    sighting, and its hash while the executable is the same (a new procmond hashes anew)."""
    if known is None:
        return rec
    keep_sha = rec.exe_sha256 is None and rec.exe == known.exe and known.exe_sha256 is not None
    if rec.first_seen == known.first_seen and not keep_sha:
        return rec
    return dataclasses.replace(
        rec,
        first_seen=known.first_seen,
        exe_sha256=known.exe_sha256 if keep_sha else rec.exe_sha256,
    )


@dataclasses.dataclass(slots=True)
class Applied:
    """What one batch of frames did, for the event loop (readiness, batching)."""

    scans: int = 0
    first_scan: ScanDelta | None = None
    events: int = 0


class Collection:
    """The store, the engine's input and the agent's picture of the live processes, advanced
    by procmond's frames (`apply_frames`)."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        mode: str,
        event_source: str,
        proc_root: str = "/proc",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self._mode = mode
        self._event_source = event_source
        self._clock = clock
        self.proc_root = proc_root
        self.boot_time = store.boot_time(read_boot_id(proc_root), read_boot_time(proc_root))
        self.engine: DetectionEngine | None = None  # attached by the daemon after startup
        self.link: ProcmondLink | None = None  # attached by the daemon when procmond starts
        self.stream: EventStream | None = None  # attached by the daemon when [stream] is on
        self.mirror: dict[ProcessKey, ProcessRecord] = {}
        self.hello: frames.Hello | None = None
        self.procmond: frames.Health | None = None
        self._procmond_cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mono, s, percent
        self._hashes: list[ExeHash] = []
        self.started_at = clock()
        self.ticks = 0
        self._scan_ms_total = 0.0
        self._last_scan_ms = 0.0
        self._new_recent: list[tuple[float, int]] = []
        self._last_retention = 0.0
        # The startup's run of the rules over the store (set by lifecycle.py when there are
        # rules to run): `health` shows its progress, and retention waits while it runs.
        self.startup_evaluation: StartupProgress | None = None
        self._audit_problem: str | None = None  # why the last pass could not prune the audit log
        self._cpu_mark = (time.monotonic(), _self_cpu_seconds())
        self._cpu_percent = 0.0
        self.outage = StoreOutage()
        self._written_mark = 0  # the spill's written_total when the outage began
        self._recovered_after: float | None = None  # set when a write ends an outage
        # procmond's absences: restarts, seconds without a collector, execs possibly missed
        self.restarts = 0
        self.gap_s_total = 0.0
        self.missed_total = 0
        self.collector_down: str | None = None  # why procmond is not running, while it is not
        self._last_frame: tuple[float, int | None] = (time.monotonic(), last_pid(proc_root))
        self._gap_from: tuple[float, int | None] | None = None
        self._full_seen: set[ProcessKey] | None = None  # a full scan's instances, so far
        self._full_parts: list[ScanDelta] = []  # its pieces written so far, for the rules
        self._full_written = True
        self._connections_at: float | None = None  # when procmond's last refresh arrived
        self.connection_stats: ConnectionStats | None = None
        self._connections_missed = False  # a refresh was not written: write the whole set next
        # The open connections by instance after the last refresh, replaced whole: IPC reads it
        # from the event loop's thread.
        self.connections_by_key: dict[ProcessKey, tuple[Connection, ...]] = {}

    @property
    def sees_all(self) -> bool:
        """Whether procmond can read every process's details (False until it said hello)."""
        return self.hello is not None and self.hello.sees_all

    def snapshot(self) -> dict[ProcessKey, ProcessRecord]:
        """Every live instance's current record (a copy, for any thread)."""
        return self.mirror.copy()

    def resume(self) -> int:
        """Start from the processes the store still thinks are alive, so that after a restart
        (even a kill -9) running processes keep their rows and the dead ones get ended by
        procmond's first, full scan. Returns how many rows were carried over."""
        self.mirror = {k: r for k, r in self.store.live_processes().items() if r.ended_at is None}
        return len(self.mirror)

    def reconfigure(self, config: Config) -> None:
        """Apply what can change without a restart (called on SIGHUP, between ticks)."""
        self.config = config

    # -- procmond's frames -------------------------------------------------------------------
    def apply_frames(self, batch: list[object]) -> Applied:
        """Write a batch of procmond's frames in order; kernel events between two scans are
        written in one transaction."""
        applied = Applied()
        events: list[ScanDelta] = []
        for payload in batch:
            if isinstance(payload, frames.Events):
                events.append(payload.delta)
                applied.events += len(payload.delta.events)
            elif isinstance(payload, frames.Scan):
                self._write_events(events)
                events = []
                delta = self.apply_scan(payload)
                if delta is not None:
                    applied.scans += 1
                    if applied.first_scan is None:
                        applied.first_scan = delta
            elif isinstance(payload, frames.Hashes):
                self._take_hashes(payload.hashes)
            elif isinstance(payload, frames.Health):
                self._take_health(payload)
            elif isinstance(payload, ConnectionsDelta):
                self.apply_connections(payload)
            elif isinstance(payload, frames.Hello):
                self._take_hello(payload)
        self._write_events(events)
        self._last_frame = (time.monotonic(), last_pid(self.proc_root))
        return applied

    def _take_hello(self, hello: frames.Hello) -> None:
        self.hello = hello
        # A new procmond knows no sockets yet: its first refresh is written whole, which also
        # ends what the store still has open and it does not report.
        self._connections_missed = True
        self._event_source = hello.event_source
        self.collector_down = None
        if not hello.sees_all:
            log.warning(
                "procmond is running as uid %d without privileges: the exe, cwd and hash of other "
                "users' processes are hidden (run as root for full coverage)",
                hello.uid,
            )

    def _take_health(self, health: frames.Health) -> None:
        mono = time.monotonic()
        mark, seconds, percent = self._procmond_cpu
        if self.procmond is not None and self.procmond.pid == health.pid and mono - mark >= 5.0:
            percent = (health.cpu_seconds - seconds) / (mono - mark) * 100.0
            self._procmond_cpu = (mono, health.cpu_seconds, percent)
        elif self.procmond is None or self.procmond.pid != health.pid:
            self._procmond_cpu = (mono, health.cpu_seconds, 0.0)
        self.procmond = health

    def _take_hashes(self, hashes: tuple[ExeHash, ...]) -> None:
        self._hashes.extend(hashes)
        for result in hashes:
            known = self.mirror.get(result.key)
            if known is not None and result.sha256 is not None:
                self.mirror[result.key] = dataclasses.replace(known, exe_sha256=result.sha256)

    def procmond_lost(self, reason: str) -> None:
        """procmond is gone: the gap starts at its last frame."""
        if self._gap_from is None:
            self._gap_from = self._last_frame
        self.collector_down = reason
        self.hello = None
        self._full_seen = None  # a full scan cut short proves nothing about what ended
        if self._full_parts and self.engine is not None:
            self.engine.on_delta(_joined(self._full_parts), written=self._full_written)
        self._full_parts, self._full_written = [], True

    def _write_events(self, deltas: list[ScanDelta]) -> None:
        if not deltas:
            return
        delta = self._absorb(merge_deltas(deltas), alive=None)
        written = self._try_write(self.store.apply, delta)
        if self.engine is not None:
            self.engine.on_delta(delta, written=written)
        self._after_write(delta.ts)

    def _absorb(self, delta: ScanDelta, *, alive: set[ProcessKey] | None) -> ScanDelta:
        """`delta` relative to what the agent knows (`mirror`), which it then updates. An
        instance procmond reports as new but the agent knew (procmond restarted) is updated
        or exec'd instead; at the end of a full scan (`alive`: every instance it reported),
        the instances it did not report have ended."""
        mirror = self.mirror
        added: list[ProcessRecord] = []
        updated: list[ProcessRecord] = []
        execed: list[ProcessRecord] = []
        demoted: dict[ProcessKey, str] = {}  # a 'start' that is really an exec, or nothing
        gone = [key for key in mirror if key not in alive] if alive is not None else []
        for rec in delta.added:
            known = mirror.get(rec.key)
            if known is None:
                added.append(rec)
            else:
                rec = _carry(known, rec)
                changed = (known.exe, known.cmdline) != (rec.exe, rec.cmdline)
                (execed if changed else updated).append(rec)
                demoted[rec.key] = "exec" if changed else ""
            mirror[rec.key] = rec
        for rec in delta.updated:
            rec = _carry(mirror.get(rec.key), rec)
            updated.append(rec)
            mirror[rec.key] = rec
        for rec in delta.execed:
            rec = _carry(mirror.get(rec.key), rec)
            execed.append(rec)
            mirror[rec.key] = rec
        ended = list(delta.ended)
        events = list(delta.events)
        last_known: dict[ProcessKey, ProcessRecord] = {}  # the ended, for the stream
        for key in ended:
            record = mirror.pop(key, None)
            if record is not None:
                last_known[key] = record
        for key in gone:
            ended.append(key)
            last_known[key] = mirror.pop(key)
            events.append(exit_event(key, last_known[key], delta.ts))
        if demoted:
            events = [_demote(e, demoted) for e in events if _kept(e, demoted)]
        if self.stream is not None and events:
            self.stream.offer(events, lambda key: mirror.get(key) or last_known.get(key))
        return dataclasses.replace(
            delta,
            added=tuple(added),
            updated=tuple(updated),
            execed=tuple(execed),
            ended=tuple(ended),
            events=tuple(events),
        )

    def apply_scan(self, scan: frames.Scan) -> ScanDelta | None:
        """One of procmond's scans, written in one transaction, then retention when due. A full
        scan comes in pieces (`more`); each is written as it comes, the instances that ended
        are known at the last. Returns the delta written (None for a piece)."""
        alive: set[ProcessKey] | None = None
        if scan.full:
            alive = self._full_seen if self._full_seen is not None else set()
            alive.update(r.key for r in scan.delta.added)
            self._full_seen = alive if scan.more else None
        if scan.more:
            # Written piece by piece; the rules see the whole scan at its last piece (one
            # evaluation, with its row caps, as for a scan that came in one frame).
            piece = self._absorb(scan.delta, alive=None)
            self._full_written = self._try_write(self.store.apply, piece) and self._full_written
            self._full_parts.append(piece)
            return None
        delta = self._absorb(scan.delta, alive=alive)
        hashes, self._hashes = self._hashes, []
        written = self._try_write(self.store.apply, delta, hashes)
        if self._full_parts:
            written = written and self._full_written
            delta = _joined([*self._full_parts, delta])
            self._full_parts, self._full_written = [], True
        if self.engine is not None:
            seen = frozenset(scan.evaluated)
            fresh = delta
            if seen:
                fresh = dataclasses.replace(
                    delta,
                    added=tuple(r for r in delta.added if r.key not in seen),
                    execed=tuple(r for r in delta.execed if r.key not in seen),
                )
            self.engine.on_delta(fresh, written=written)
        if scan.full:
            self._close_gap()
        self._after_write(delta.ts)
        self.ticks += 1
        self._last_scan_ms = delta.stats.duration_s * 1000.0
        self._scan_ms_total += self._last_scan_ms
        self._new_recent.append((delta.ts, delta.stats.new))
        now = delta.ts
        if (
            now - self._last_retention >= self.config.store.retention_check_interval
            and not self.outage.active
            and not self.retention_held
        ):
            self._last_retention = now
            try:
                result = self.store.retention(
                    self.config.store.retention,
                    self.config.store.max_bytes,
                    now,
                    prune_audit=audit_pruner(self.store.path, self.config.store),
                )
            except StoreUnwritable as exc:
                self._failed_write(exc)
            else:
                log.debug("retention: %s", result)
                self._audit_problem = result.audit_error
                if result.audit_error is not None:
                    log.warning("retention: %s", result.audit_error)
        self.write_health()
        if scan.full:
            heap.settle()  # the full scan's frames and pieces back to the kernel
        return delta

    def _close_gap(self) -> None:
        """A full scan after procmond restarted: count how long nobody collected and how many
        tasks were created meanwhile (each could have been an exec nobody saw)."""
        if self._gap_from is None:
            return
        since, pid_then = self._gap_from
        self._gap_from = None
        gap = time.monotonic() - since
        pid_now = last_pid(self.proc_root)
        missed = 0
        if pid_then is not None and pid_now is not None:
            missed = pid_now - pid_then if pid_now >= pid_then else pid_now  # wrapped
        self.gap_s_total += gap
        self.missed_total += missed
        log.warning(
            "procmond is back: %.2fs without a collector, up to %d process events missed; "
            "its full scan reconciled the store",
            gap,
            missed,
        )

    @property
    def connections_at(self) -> float | None:
        """When the open connections were last refreshed (None: never, or collection off)."""
        if self.config.collector.connections_interval <= 0 or self.connection_stats is None:
            return None
        return self._connections_at

    def apply_connections(self, delta: ConnectionsDelta) -> None:
        """procmond's connections refresh (it walks the fds; the agent has no capability to):
        keep the open set by instance, write what changed, and evaluate the rules that read
        `connections` for the instances that opened one. After a refresh the store could not
        take, or a new procmond (which starts from nothing), the next one is written whole."""
        self._connections_at = delta.ts
        self.connection_stats = delta.stats
        by_key = {k: list(v) for k, v in self.connections_by_key.items()}
        for conn in delta.closed:
            kept = [c for c in by_key.get(conn.key, []) if c.inode != conn.inode]
            if kept:
                by_key[conn.key] = kept
            else:
                by_key.pop(conn.key, None)
        for conn in delta.opened + delta.changed:
            held = [c for c in by_key.get(conn.key, []) if c.inode != conn.inode]
            by_key[conn.key] = [*held, conn]
        self.connections_by_key = {k: tuple(v) for k, v in by_key.items()}
        if self._connections_missed:
            delta = self._whole_connections(delta)
        if not (delta.opened or delta.changed or delta.closed):
            return
        written = self._try_write(self._write_connections, delta)
        self._connections_missed = not written
        if written and self.engine is not None and delta.opened:
            self.engine.on_connections({c.key for c in delta.opened})

    def _whole_connections(self, delta: ConnectionsDelta) -> ConnectionsDelta:
        """After a refresh the store could not take: every open connection (the upsert keeps
        first_seen) and the end of every row the store still has open that is gone."""
        held = [conn for conns in self.connections_by_key.values() for conn in conns]
        open_now = {(c.pid, c.start_time, c.inode) for c in held}
        try:
            stored = live_connections(self.store)
        except StoreError:
            return delta
        gone = tuple(
            dataclasses.replace(c, ended_at=delta.ts)
            for c in stored
            if (c.pid, c.start_time, c.inode) not in open_now
        )
        return dataclasses.replace(delta, opened=tuple(held), changed=(), closed=gone)

    def _write_connections(self, delta: ConnectionsDelta) -> None:
        with self.store.transaction("writing connections") as conn:
            write_delta(conn, delta)

    # -- a store that cannot be written ------------------------------------------------------
    @property
    def spill(self) -> AlertSpill | None:
        return self.engine.book.spill if self.engine is not None else None

    def _held_text(self) -> str:
        spill = self.spill
        if spill is None:
            return "no alerts held in memory"
        return f"{len(spill)} alerts held in memory ({spill.dropped_total} dropped)"

    def _failed_write(self, exc: StoreUnwritable) -> None:
        if not self.outage.active and self.spill is not None:
            self._written_mark = self.spill.written_total
        self.outage.failed(str(exc), self._held_text)

    def _try_write(self, write: Callable[..., Any], *args: Any) -> bool:
        """Run one write; False (the outage noted) when the store cannot be written."""
        try:
            write(*args)
        except StoreUnwritable as exc:
            self._failed_write(exc)
            return False
        spill = self.spill
        if spill is not None and spill.busy:
            return True  # the outage ends once what is held in memory is written too
        lasted = self.outage.succeeded()
        if lasted is not None:
            self._recovered_after = lasted
        return True

    def _after_write(self, now: float) -> None:
        """Write what is held in memory when the store takes writes again, and say so once."""
        spill = self.spill
        if self.engine is not None and spill is not None and spill.busy:
            self._try_write(self.engine.book.write_held, now)
        if self._recovered_after is None or self.outage.active:
            return
        lasted, self._recovered_after = self._recovered_after, None
        added, ended = self._resync(now)
        written = spill.written_total - self._written_mark if spill is not None else 0
        log.warning(
            "the store is writable again after %.0fs: %d alerts held in memory written, "
            "%d processes started meanwhile added, %d ended meanwhile closed",
            lasted,
            written,
            added,
            ended,
        )

    def _resync(self, now: float) -> tuple[int, int]:
        """Add the live processes the store missed while it could not be written and end the
        rows of those that ended meanwhile; (added, ended)."""
        snapshot = self.snapshot()
        try:
            stored = self.store.live_processes()
            missing = tuple(record for key, record in snapshot.items() if key not in stored)
            if missing:
                self.store.apply(
                    ScanDelta(
                        now,
                        missing,
                        (),
                        (),
                        (),
                        (),
                        ScanStats(0.0, len(snapshot), len(missing), 0, 0, 0, 0),
                    )
                )
            ended = self.store.mark_ended([key for key in stored if key not in snapshot], now)
        except StoreUnwritable as exc:
            self._failed_write(exc)
            return 0, 0
        return len(missing), ended

    @property
    def retention_held(self) -> bool:
        """While the startup runs the rules over the store: history that a rule has yet to
        see is not cleaned away under it."""
        progress = self.startup_evaluation
        return progress is not None and progress.running

    def health(self) -> HealthReport:
        now = self._clock()
        self._new_recent = [(ts, n) for ts, n in self._new_recent if now - ts <= 60.0]
        window = min(60.0, max(now - self.started_at, 1e-9))
        mono, cpu = time.monotonic(), _self_cpu_seconds()
        if mono - self._cpu_mark[0] >= 5.0:
            self._cpu_percent = (cpu - self._cpu_mark[1]) / (mono - self._cpu_mark[0]) * 100.0
            self._cpu_mark = (mono, cpu)
        problems = []
        procmond = self.procmond
        if self.collector_down is not None:
            problems.append(f"procmond (the collector) is not running: {self.collector_down}")
        elif procmond is not None and procmond.problem:
            problems.append(procmond.problem)
        if self.hello is not None and not self.hello.sees_all:
            problems.append(
                f"running as uid {self.hello.uid} (procmond): the details of other users' "
                "processes are hidden"
            )
        if self._audit_problem is not None:
            problems.append(self._audit_problem)
        engine = self.engine.status() if self.engine is not None else None
        sinks = sink_health(self.store, self.engine.book.sinks) if self.engine else []
        if engine is not None and engine.problems:
            problems.append(f"{engine.problems} rule(s) refused: see `daemoneye rules list`")
        spill = self.spill
        if self.outage.active:
            problems.append(
                f"the store cannot be written for {self.outage.duration():.0f}s "
                f"({self.outage.failures} writes failed): {self._held_text()}; collection "
                f"goes on; last write error: {self.outage.last_error}"
            )
        stream = self.stream.stats() if self.stream is not None else ()
        problems.extend(
            f"the process-event stream to {lane.sink} fails ({lane.queued} events waiting): "
            f"{lane.last_error}"
            for lane in stream
            if lane.last_error is not None and lane.queued
        )
        return HealthReport(
            daemon_pid=os.getpid(),
            daemon_uid=os.geteuid(),
            version=__version__,
            mode=self._mode,
            privileged=self.sees_all,
            event_source=self._event_source,
            started_at=self.started_at,
            updated_at=now,
            interval_s=self.config.collector.interval,
            ticks=self.ticks,
            last_scan_ms=round(self._last_scan_ms, 3),
            avg_scan_ms=round(self._scan_ms_total / self.ticks, 3) if self.ticks else 0.0,
            processes=len(self.mirror),
            new_per_second=round(sum(n for _, n in self._new_recent) / window, 3),
            denied_total=procmond.denied_total if procmond else 0,
            vanished_total=procmond.vanished_total if procmond else 0,
            hash_dropped_total=procmond.hash_dropped_total if procmond else 0,
            store_bytes=self.store.size_bytes(),
            daemon_cpu_percent=round(self._cpu_percent, 2),
            daemon_rss_bytes=_self_rss_bytes(),
            events_total=procmond.events_total if procmond else 0,
            events_lost_total=procmond.events_lost_total if procmond else 0,
            events_dropped_total=procmond.events_dropped_total if procmond else 0,
            event_filter=procmond.event_filter if procmond else "",
            rules_loaded=engine.rules_loaded if engine else 0,
            rules_enabled=engine.rules_enabled if engine else 0,
            rule_problems=engine.problems if engine else 0,
            rule_timeouts_total=engine.timeouts_total if engine else 0,
            sink_backlog=sum(h.pending for h in sinks),
            sink_dead=sum(h.dead for h in sinks),
            problems=tuple(problems),
            store_writable=not self.outage.active,
            alerts_held=len(spill) if spill is not None else 0,
            alerts_held_dropped=spill.dropped_total if spill is not None else 0,
            procmond_pid=procmond.pid if procmond and self.collector_down is None else 0,
            procmond_rss_bytes=procmond.rss_bytes if procmond else 0,
            procmond_cpu_percent=round(self._procmond_cpu[2], 2),
            procmond_restarts=self.restarts,
            procmond_gap_s=round(self.gap_s_total, 3),
            procmond_missed_upper=self.missed_total,
            agent_privileges=privileges_of(os.getpid(), "agent"),
            procmond_privileges=privileges_of(
                procmond.pid if procmond and self.collector_down is None else None, "procmond"
            ),
            stream_sinks=tuple(lane.sink for lane in stream),
            stream_sent_total=sum(lane.sent for lane in stream),
            stream_queued=sum(lane.queued for lane in stream),
            stream_dropped_rate_total=stream[0].dropped_rate if stream else 0,
            stream_dropped_queue_total=sum(lane.dropped_queue for lane in stream),
            stream_refused_total=sum(lane.refused for lane in stream),
            exec_capture=procmond.exec_capture if procmond else "",
            exec_rescued_total=procmond.exec_rescued_total if procmond else 0,
            exec_uncaptured_total=procmond.exec_uncaptured_total if procmond else 0,
            task_passes=procmond.task_passes if procmond else "",
            startup_evaluation=(
                self.startup_evaluation.snapshot() if self.startup_evaluation is not None else None
            ),
        )

    def write_health(self, *extra_problems: str) -> None:
        report = self.health()
        if extra_problems:
            report = dataclasses.replace(report, problems=report.problems + extra_problems)
        self._try_write(
            self.store.put_meta, HEALTH_META_KEY, json.dumps(dataclasses.asdict(report))
        )

    def close(self) -> None:
        """Leave a last health report that says the daemon stopped (procmond is stopped by the
        daemon first, and its last frames applied)."""
        spill = self.spill
        if self.engine is not None and spill is not None and spill.busy:
            self._try_write(self.engine.book.write_held, self._clock())
            if spill.busy:
                log.error(
                    "stopping while the store cannot be written: %d alerts held in memory "
                    "are lost to the store (the sinks that were reachable have them)",
                    len(spill),
                )
        if self.engine is not None:
            self.engine.close()
        self.write_health(f"the daemon stopped at {time.strftime('%Y-%m-%d %H:%M:%S')}")


def _kept(event: ProcessEvent, demoted: dict[ProcessKey, str]) -> bool:
    """A poller 'start' of an instance the agent already knew is not a start."""
    kind = demoted.get(ProcessKey(event.pid, event.start_time))
    return kind is None or event.kind != "start" or kind == "exec"


def _demote(event: ProcessEvent, demoted: dict[ProcessKey, str]) -> ProcessEvent:
    if event.kind == "start" and demoted.get(ProcessKey(event.pid, event.start_time)) == "exec":
        return dataclasses.replace(event, kind="exec")
    return event
