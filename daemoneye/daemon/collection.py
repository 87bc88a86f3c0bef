"""The daemon's one worker: scan /proc, write the tick to the store, run retention.

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

from daemoneye import __version__
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.hashing import ExeHasher
from daemoneye.collector.netlink import EventsUnavailable, ProcConnector, probe
from daemoneye.collector.procfs import read_boot_id, read_boot_time
from daemoneye.collector.scanner import ProcScanner
from daemoneye.collector.users import UserNames
from daemoneye.config.schema import Config
from daemoneye.daemon.events_feed import EventFeed
from daemoneye.daemon.privilege_drop import privileges_of
from daemoneye.daemon.store_outage import StoreOutage
from daemoneye.engine.audit_prune import audit_pruner
from daemoneye.engine.detection import DetectionEngine
from daemoneye.engine.outbox import sink_health
from daemoneye.engine.spill import AlertSpill
from daemoneye.errors import StoreUnwritable
from daemoneye.models import HealthReport, ScanDelta, ScanStats
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


class Collection:
    """Scanner + hasher + store, advanced one tick at a time by `tick()`."""

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
        self._proc_root = proc_root
        self.boot_time = store.boot_time(read_boot_id(proc_root), read_boot_time(proc_root))
        self.user_names = UserNames()
        self.events: EventFeed | None = None
        self.engine: DetectionEngine | None = None  # attached by the daemon after startup
        self.procmond_pid: int | None = None  # the collector process, once the agent started it
        self.hasher: ExeHasher | None = (
            ExeHasher(max_bytes=config.collector.hash_max_bytes, proc_root=proc_root)
            if config.collector.hash_executables
            else None
        )
        self.scanner = ProcScanner(
            proc_root,
            boot_time=self.boot_time,
            update_interval=config.collector.update_interval,
            clock=clock,
            hasher=self.hasher,
            user_names=self.user_names,
        )
        self.started_at = clock()
        self.ticks = 0
        self._scan_ms_total = 0.0
        self._last_scan_ms = 0.0
        self._new_recent: list[tuple[float, int]] = []
        self._last_retention = 0.0
        self._audit_problem: str | None = None  # why the last pass could not prune the audit log
        self._cpu_mark = (time.monotonic(), _self_cpu_seconds())
        self._cpu_percent = 0.0
        self.outage = StoreOutage()
        self._written_mark = 0  # the spill's written_total when the outage began
        self._recovered_after: float | None = None  # set when a write ends an outage

    def resume(self) -> int:
        """Seed the scanner with the processes the store still thinks are alive, so that after a
        restart (even a kill -9) running processes keep their rows and the dead ones get ended
        in the first tick. Returns how many rows were carried over."""
        known = self.store.live_processes()
        self.scanner.prime(known)
        return len(known)

    def start_events(self, wakeup: Callable[[], None]) -> str:
        """Subscribe to the kernel's process events when configured and permitted. Returns the
        event source as `health` shows it: 'netlink', or 'polling-only: <why>'."""
        if not self.config.collector.events:
            self._event_source = "polling-only: collector.events is off"
            return self._event_source
        reason = probe()
        source: ProcEventSource | None = None
        if reason is None:
            source = ProcEventSource(
                self.boot_time,
                wakeup=wakeup,
                connector=ProcConnector(rcvbuf_bytes=self.config.collector.event_buffer),
                proc_root=self._proc_root,
                user_of=self.user_names,
            )
            try:
                source.start()
            except EventsUnavailable as exc:
                reason, source = str(exc), None
        if source is None:
            self._event_source = f"polling-only: {reason}"
        else:
            self.events = EventFeed(
                source, self.scanner, self.user_names, self.hasher, clock=self._clock
            )
            self._event_source = "netlink"
        return self._event_source

    def drain_events(self) -> ScanDelta | None:
        """Write what the kernel events reported since the last call (one transaction)."""
        if self.events is None:
            return None
        delta = self.events.take()
        if delta is not None:
            written = self._try_write(self.store.apply, delta)
            if self.engine is not None:
                self.engine.on_delta(delta, written=written)
            self._after_write(delta.ts)
        return delta

    @property
    def events_pending(self) -> bool:
        return self.events is not None and self.events.source.ready.is_set()

    @property
    def reconcile_requested(self) -> bool:
        """True once, after events were lost: the next poll must run now."""
        return self.events is not None and self.events.source.take_reconcile()

    def reconfigure(self, config: Config) -> None:
        """Apply what can change without a restart (called on SIGHUP, between ticks)."""
        self.config = config
        self.scanner.update_interval = config.collector.update_interval
        if self.hasher is not None:
            self.hasher.max_bytes = config.collector.hash_max_bytes

    def tick(self) -> ScanDelta:
        """One scan, written in one transaction, then retention when it is due."""
        delta = self.scanner.scan()
        if self.events is not None:
            delta = self.events.without_duplicates(delta)
        hashes = self.hasher.drain() if self.hasher is not None else []
        written = self._try_write(self.store.apply, delta, hashes)
        if self.engine is not None:
            fresh = self.events.not_yet_evaluated(delta) if self.events is not None else delta
            self.engine.on_delta(fresh, written=written)
        self._after_write(delta.ts)
        self.ticks += 1
        self._last_scan_ms = delta.stats.duration_s * 1000.0
        self._scan_ms_total += self._last_scan_ms
        self._new_recent.append((delta.ts, delta.stats.new))
        now = delta.ts
        if (
            now - self._last_retention >= self.config.store.retention_check_interval
            and not self.outage.active
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
        return delta

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
        snapshot = self.scanner.snapshot()
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

    def health(self) -> HealthReport:
        now = self._clock()
        self._new_recent = [(ts, n) for ts, n in self._new_recent if now - ts <= 60.0]
        window = min(60.0, max(now - self.started_at, 1e-9))
        mono, cpu = time.monotonic(), _self_cpu_seconds()
        if mono - self._cpu_mark[0] >= 5.0:
            self._cpu_percent = (cpu - self._cpu_mark[1]) / (mono - self._cpu_mark[0]) * 100.0
            self._cpu_mark = (mono, cpu)
        scanner = self.scanner
        problems = []
        events = self.events.source.stats() if self.events is not None else None
        reader_failure = self.events.source.failure if self.events is not None else None
        if reader_failure is not None:
            problems.append(f"the kernel event reader stopped: {reader_failure}")
        if not scanner.sees_all:
            problems.append(
                f"running as uid {os.geteuid()}: the details of other users' processes are hidden"
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
        return HealthReport(
            daemon_pid=os.getpid(),
            daemon_uid=os.geteuid(),
            version=__version__,
            mode=self._mode,
            privileged=scanner.sees_all,
            event_source=self._event_source,
            started_at=self.started_at,
            updated_at=now,
            interval_s=self.config.collector.interval,
            ticks=self.ticks,
            last_scan_ms=round(self._last_scan_ms, 3),
            avg_scan_ms=round(self._scan_ms_total / self.ticks, 3) if self.ticks else 0.0,
            processes=len(scanner.snapshot()),
            new_per_second=round(sum(n for _, n in self._new_recent) / window, 3),
            denied_total=scanner.denied_total,
            vanished_total=scanner.vanished_total,
            hash_dropped_total=self.hasher.dropped_total if self.hasher else 0,
            store_bytes=self.store.size_bytes(),
            daemon_cpu_percent=round(self._cpu_percent, 2),
            daemon_rss_bytes=_self_rss_bytes(),
            events_total=events.events_total if events else 0,
            events_lost_total=events.lost_total if events else 0,
            events_dropped_total=events.dropped_total if events else 0,
            event_filter=events.filtering if events else "",
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
            agent_privileges=privileges_of(os.getpid(), "agent"),
            procmond_privileges=privileges_of(self.procmond_pid, "procmond"),
        )

    def write_health(self, *extra_problems: str) -> None:
        report = self.health()
        if extra_problems:
            report = dataclasses.replace(report, problems=report.problems + extra_problems)
        self._try_write(
            self.store.put_meta, HEALTH_META_KEY, json.dumps(dataclasses.asdict(report))
        )

    def close(self) -> None:
        """Stop the hasher and leave a last health report that says the daemon stopped."""
        if self.events is not None:
            self.events.source.stop()
            self.drain_events()
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
        if self.hasher is not None:
            self.hasher.close()
        self.scanner.close()
        self.write_health(f"the daemon stopped at {time.strftime('%Y-%m-%d %H:%M:%S')}")
