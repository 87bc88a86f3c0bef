"""The procfs poller: every tick, what started, exec'd, changed and ended since the last one.

The hot path (`stat_poll.StatPoller`) reads /proc/<pid>/stat of every known process and hands
over only the ones whose bytes changed since the last tick; only those are parsed here. A known
process whose stat is gone has ended. New instances (a pid not seen before, or a known pid whose
start ticks changed: reuse) are read in full through one /proc/<pid> descriptor
(`details.read_instance`).

Exec detection is by comm change and is therefore partial: an execve that keeps the 15-byte
name (bash running bash, a re-exec of itself), or an exec followed by an exit between two
ticks, is missed. The kernel-events source sees every exec; this poller is the safety net that
keeps the picture complete.

Changes after start (collector/changes.py): a comm change without an exec is a rename; each
tick also looks at a slice of the instances (every instance once per update interval) for a
new working directory or a deleted executable. Either leads to a full read of the instance,
and what differs becomes change events written with the new record at once (not held back by
the update interval). uid/gid changes are found on those reads too; the kernel events report
them the moment they happen.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from daemoneye.collector import records
from daemoneye.collector.changes import ChangeSweep, change_events, links_differ
from daemoneye.collector.context import ContextReader
from daemoneye.collector.details import InstanceRead, read_instance
from daemoneye.collector.hashing import ExeHasher
from daemoneye.collector.procfs import (
    CLOCK_TICKS,
    StatFields,
    parse_stat_fields,
    sees_all_processes,
)
from daemoneye.collector.scan_state import Entry, HashJobs, TickOutput
from daemoneye.collector.shared_text import SHARED
from daemoneye.collector.stat_poll import StatPoller
from daemoneye.collector.stat_signatures import StatSignatures
from daemoneye.collector.task_iter import TaskIterator, TaskSnapshot
from daemoneye.collector.users import UserNames
from daemoneye.errors import CollectorError
from daemoneye.models import ProcessKey, ProcessRecord, ScanDelta

log = logging.getLogger(__name__)

# A scan that meets at least this many new processes (the first scan, a burst the kernel's
# events did not report) takes every task's context and real ids in one pass of the task
# iterator instead of reading them from /proc process by process, when they are also at least
# one in SNAPSHOT_SHARE of the processes it then lists: the pass visits every task, at about a
# sixth of the cost of one process's context read through /proc (docs/performance.md), so a
# pass for 32 new processes among 10,000 would cost more than it saves.
SNAPSHOT_AT = 32
SNAPSHOT_SHARE = 8
# The stat signature pass visits every thread and saves one stat read per process: on a host
# with more threads than this per process it costs more than it saves, and the scan reads
# every stat for the next SIGNATURES_REST_TICKS ticks before it tries a pass again.
THREADS_PER_PROCESS_MAX = 16.0
SIGNATURES_REST_TICKS = 30


class ProcScanner:
    """Incremental /proc scanner producing one ScanDelta per `scan()`.

    Not thread-safe: call `prime`, `scan` and `snapshot` from one thread (the collector worker).
    `snapshot()` returns a copy that may be handed to any thread. Executable hashes are computed
    by `hasher` (if given): the scanner submits new and exec'd instances and folds the results
    into its snapshot; the daemon collects the same results for the store with `hasher.drain()`.
    """

    def __init__(
        self,
        proc_root: str = "/proc",
        *,
        boot_time: float,
        update_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
        hasher: ExeHasher | None = None,
        user_names: Callable[[int], str | None] | None = None,
        context: ContextReader | None = None,
        tasks: TaskIterator | None = None,
        signatures: StatSignatures | None = None,
        passes_off: tuple[str, str] = ("off", "off"),
    ) -> None:
        self.proc_root = proc_root
        self.boot_time = boot_time
        self.update_interval = update_interval  # may be changed between scans (config reload)
        self.sees_all = sees_all_processes()  # False: other users' exe/cwd will be denied
        self.scans_total = 0
        self.denied_total = 0
        self.vanished_total = 0
        self._root = os.fsencode(proc_root).rstrip(b"/")
        self._clock = clock
        self._context = context  # None: no context fields (cgroup, session, stdio …) are read
        # every task's context in one pass, for a scan that meets many new processes at once
        # (its real ids replace a read of status; its context is used with a context reader;
        # closed with the scanner either way)
        self._tasks = tasks
        # one pass per tick tells which processes' stat may have changed (closed with it too)
        self._signatures = signatures
        self._signatures_rest = 0  # ticks left without the pass (see THREADS_PER_PROCESS_MAX)
        # what `health` says of a pass that is not there: why it was not loaded, or refused
        self._tasks_off, self._signatures_off = passes_off
        self._snapshot: TaskSnapshot | None = None
        self._user_of = user_names if user_names is not None else UserNames()
        self._ticks_per_s = float(CLOCK_TICKS)
        self._entries: dict[bytes, Entry] = {}
        self._records: dict[ProcessKey, ProcessRecord] = {}
        self._dirty: dict[bytes, Entry] = {}  # changed since last emitted
        self._busy: set[bytes] = set()  # nonzero cpu_percent: must drop to 0 when idle
        self._primed: dict[ProcessKey, ProcessRecord] = {}
        self._hash_jobs = HashJobs(hasher)
        self.sweep = ChangeSweep()
        self._last_ts: float | None = None
        if not os.path.isdir(proc_root):
            raise CollectorError(f"{proc_root} is not a directory: is procfs mounted?")
        self._poller = StatPoller(self._root)

    @property
    def task_passes(self) -> str:
        """What `health` says of the two BPF task passes (collector/task_iter.py,
        collector/stat_signatures.py): each on, resting or off, and why."""
        both_off = self._tasks is None and self._signatures is None
        if both_off and self._tasks_off == self._signatures_off:
            return self._tasks_off  # one reason for both (a setting, no privilege)
        if self._tasks is None:
            context = self._tasks_off
        else:
            runs = self._tasks.passes_total
            context = f"on ({runs} pass{'' if runs == 1 else 'es'})"
        if self._signatures is None:
            stat = self._signatures_off
        elif self._signatures_rest:
            stat = (
                f"resting {self._signatures_rest} ticks (over "
                f"{THREADS_PER_PROCESS_MAX:g} threads per process)"
            )
        else:
            stat = "on"
        return f"context {context}; stat signatures {stat}"

    def prime(self, known: Mapping[ProcessKey, ProcessRecord]) -> None:
        """Seed with the store's live rows before the first scan: instances still running keep
        their first_seen and are not re-added (they come back in `updated`, or `execed` if
        their exe or command line changed meanwhile); the others end in the first delta."""
        if self.scans_total:
            raise RuntimeError("prime() must be called before the first scan()")
        self._primed = {key: rec for key, rec in known.items() if rec.ended_at is None}

    def snapshot(self) -> dict[ProcessKey, ProcessRecord]:
        """Every live instance's current record (a copy). A record is rebuilt only when one of
        its fields changed, so `last_seen` is the time of its last change, not of this tick."""
        return self._records.copy()

    def close(self) -> None:
        """Release the stat descriptors held between ticks, and the task iterator."""
        self._poller.close()
        if self._tasks is not None:
            self._tasks.close()
            self._tasks = None
        if self._signatures is not None:
            self._signatures.close()
            self._signatures = None

    def record(self, key: ProcessKey) -> ProcessRecord | None:
        """The current record of one live instance, None when the scanner does not know it."""
        return self._records.get(key)

    def ended_under(self, pid: int) -> ProcessKey | None:
        """The instance this scanner knows under `pid`, when /proc/<pid> is gone: an exit the
        kernel reported without a readable start time (a process older than the event reader,
        reaped at once) was that instance's, since no process holds a pid whose directory is
        gone. None when the pid is unknown, or lives again (then which one ended is unsure)."""
        name = str(pid).encode()
        entry = self._entries.get(name)
        if entry is None or os.path.lexists(self._root + b"/" + name):
            return None
        return entry.key

    def adopt_exec(self, rec: ProcessRecord) -> None:
        """Take an exec reported by the kernel events as this instance's current state, so the
        next scan compares against the new exe and command line and does not report the same
        exec again."""
        entry = self._entries.get(str(rec.pid).encode())
        if entry is None or entry.key != rec.key:
            return
        self._store(entry, rec)
        entry.emitted_fields, entry.last_emit = None, rec.last_seen

    def adopt_change(self, rec: ProcessRecord, comm: str | None = None) -> None:
        """Take a change reported by the kernel events (a rename, a new uid or gid) as this
        instance's current and emitted state, so the scan does not report it again; `comm` is
        the kernel's new name after a rename."""
        entry = self._entries.get(str(rec.pid).encode())
        if entry is None or entry.key != rec.key:
            return
        self._store(entry, rec)
        if comm is not None:
            entry.comm = SHARED.one(comm)
        entry.emitted_fields = None

    def read_record(self, key: ProcessKey, now: float) -> ProcessRecord | None:
        """A record for an instance the scanner has not met yet, read now and not kept (the
        event feed's, for a change that arrives before the first scan of its process). None
        when it is gone, refused, or its pid now names another instance."""
        try:
            read = read_instance(self._root, str(key.pid).encode(), self._user_of)
        except (PermissionError, ValueError):
            return None
        if read is None or read.partial:
            return None
        start_time = self.boot_time + read.stat.start_ticks / self._ticks_per_s
        if start_time != key.start_time:
            return None
        return records.new_record(
            read.stat,
            read.details,
            start_time=start_time,
            cpu_percent=0.0,
            first_seen=now,
            now=now,
            exe_sha256=None,
        )

    def scan(self) -> ScanDelta:
        """One tick: read stat of every known process, look for new ones, report differences."""
        started = time.perf_counter()
        now = self._clock()
        out = TickOutput()
        if self._context is not None:
            self._context.new_scan()
        self._apply_hashes()
        new_names = self._poller.new_names()
        passed = None
        if self._signatures is not None and self._entries:  # none known: no read to spare
            if self._signatures_rest:
                self._signatures_rest -= 1
            else:
                passed = self._signature_pass()
        changed, gone, out.denied = self._poller.read_known(passed)
        for name in gone:
            self._end(name, now, out)
            # a newcomer may hold the pid already: /proc was listed before this read, and is
            # listed again only when another pid is allocated after it
            if name not in new_names and os.path.lexists(self._root + b"/" + name):
                new_names.add(name)
        for name, raw in changed:
            self._on_changed(name, raw, now, out)
        if self._busy:
            self._settle_idle({name for name, _ in changed}, now)
        if self._tasks is not None and self._pass_pays(new_names):
            self._snapshot = self._take_snapshot(self._tasks)
        for name in new_names:
            self._add(name, now, out)
        self._snapshot = None
        self._sweep_changes(now, out)
        if self._primed:  # still unmatched after a full scan: ended while we were down
            for key, rec in self._primed.items():
                out.ended.append(key)
                out.events.append(records.exit_event(key, rec, now))
            self._primed.clear()
        self._flush_updates(now, out)
        self._hash_jobs.submit()
        duration = time.perf_counter() - started
        self._last_ts = now
        self.scans_total += 1
        self.denied_total += out.denied
        self.vanished_total += out.vanished
        return out.delta(now, duration, len(self._entries))

    def _signature_pass(self) -> dict[int, int | None] | None:
        assert self._signatures is not None
        try:
            passed = self._signatures.read()
        except OSError as exc:  # the kernel refused a pass: read every stat from now on
            log.warning("stat signatures off, the scan reads every process's stat: %s", exc)
            self._signatures_off = f"off: the kernel refused a pass: {exc}"
            self._signatures.close()
            self._signatures = None
            return None
        if self._signatures.threads_per_process > THREADS_PER_PROCESS_MAX:
            self._signatures_rest = SIGNATURES_REST_TICKS  # dearer than the reads it saves
        return passed

    def _pass_pays(self, new_names: set[bytes]) -> bool:
        """Whether a task pass costs less than reading the new processes' context from /proc
        (see SNAPSHOT_AT and SNAPSHOT_SHARE)."""
        new = len(new_names)
        return new >= SNAPSHOT_AT and new * SNAPSHOT_SHARE >= len(self._entries) + new

    def _take_snapshot(self, tasks: TaskIterator) -> TaskSnapshot | None:
        try:
            return tasks.snapshot()
        except OSError as exc:  # the kernel refused a pass: read /proc from now on
            log.warning("task iterator off, the scan reads /proc for context: %s", exc)
            self._tasks_off = f"off: the kernel refused a pass: {exc}"
            tasks.close()
            self._tasks = None
            return None

    def _on_changed(self, name: bytes, raw: bytes, now: float, out: TickOutput) -> None:
        entry = self._entries[name]
        try:
            stat = parse_stat_fields(raw)
        except ValueError:  # an empty read: the task is being torn down
            out.vanished += 1
            return
        if stat.start_ticks != entry.start_ticks:  # pid reused since the last tick
            self._end(name, now, out)
            self._add(name, now, out)
            return
        self._poller.remember(name, raw)
        if stat.comm != entry.comm and not stat.kernel_thread:
            self._recheck(name, entry, now, out)
        else:
            self._update(name, entry, stat, now)

    def _cpu_percent(self, entry: Entry, cpu_ticks: int, now: float) -> float:
        elapsed = now - self._last_ts if self._last_ts is not None else 0.0
        if elapsed <= 0.0:
            return 0.0
        return round((cpu_ticks - entry.cpu_ticks) / self._ticks_per_s / elapsed * 100.0, 1)

    def _update(self, name: bytes, entry: Entry, stat: StatFields, now: float) -> None:
        cpu = self._cpu_percent(entry, stat.cpu_ticks, now)
        rec = entry.record
        display = rec.name
        if stat.comm != entry.comm:  # a kernel worker's name, or prctl(PR_SET_NAME)
            display = records.display_name(stat.comm, rec.exe, rec.cmdline)
            entry.comm = SHARED.one(stat.comm)
        entry.cpu_ticks = stat.cpu_ticks
        self._mark_busy(name, cpu)
        if (
            stat.rss_bytes != rec.rss
            or cpu != rec.cpu_percent
            or stat.state != rec.state
            or stat.threads != rec.threads
            or stat.ppid != rec.ppid
            or display != rec.name
        ):
            self._store(entry, records.with_dynamic(rec, stat, display, cpu, now))
            self._dirty[name] = entry

    def _mark_busy(self, name: bytes, cpu_percent: float) -> None:
        if cpu_percent:
            self._busy.add(name)
        else:
            self._busy.discard(name)

    def _settle_idle(self, changed: set[bytes], now: float) -> None:
        """A process busy last tick whose stat did not change since used no CPU this tick."""
        for name in self._busy - changed:
            self._busy.discard(name)
            entry = self._entries.get(name)
            if entry is not None and entry.record.cpu_percent:
                self._store(entry, replace(entry.record, cpu_percent=0.0, last_seen=now))
                self._dirty[name] = entry

    # -- new instances, execs, exits ----------------------------------------------------------

    def _read(
        self, name: bytes, out: TickOutput, *, keep_stat: bool = False
    ) -> InstanceRead | None:
        try:
            task = self._snapshot.get(int(name)) if self._snapshot is not None else None
            read = read_instance(
                self._root, name, self._user_of, self._context, keep_stat=keep_stat, task=task
            )
        except PermissionError:
            out.denied += 1
            return None
        except ValueError as exc:
            log.warning("unreadable %s/%s/stat: %s", self.proc_root, name, exc)
            read = None
        if read is None:
            out.vanished += 1
        elif read.denied:
            out.denied += 1
        return read

    def _add(self, name: bytes, now: float, out: TickOutput) -> None:
        if not name.isdigit():
            self._poller.not_a_pid(name)
            return
        read = self._read(name, out, keep_stat=True)  # its stat fd goes to the poller
        if read is not None:
            self._add_read(name, read, now, out)

    def _add_read(self, name: bytes, read: InstanceRead, now: float, out: TickOutput) -> None:
        stat, details = read.stat, read.details
        start_time = self.boot_time + stat.start_ticks / self._ticks_per_s
        key = ProcessKey(stat.pid, start_time)
        primed = self._primed.pop(key, None) if self._primed else None
        kept_sha = primed.exe_sha256 if primed is not None and primed.exe == details.exe else None
        rec = records.new_record(
            stat,
            details,
            start_time=start_time,
            cpu_percent=records.cpu_since_start(stat.cpu_ticks, start_time, now, self._ticks_per_s),
            first_seen=primed.first_seen if primed is not None else now,
            now=now,
            exe_sha256=kept_sha,
        )
        entry = Entry(key, stat, rec, now)
        self._entries[name] = entry
        self._poller.remember(name, read.raw_stat, read.stat_fd)
        self._records[key] = rec
        self._mark_busy(name, rec.cpu_percent)
        if primed is None:
            out.added.append(rec)
            out.events.append(records.start_event(rec, now, kind="start", partial=read.partial))
        elif (primed.exe, primed.cmdline) != (rec.exe, rec.cmdline):
            out.execed.append(rec)
            out.events.append(records.start_event(rec, now, kind="exec", partial=read.partial))
        else:
            out.updated.append(rec)
        if rec.exe is not None:
            self._hash_jobs.add(rec.key, stat.start_ticks)

    def _recheck(self, name: bytes, entry: Entry, now: float, out: TickOutput) -> None:
        """The name changed: an execve, or only prctl(PR_SET_NAME). Read the details again and
        compare exe and command line to tell which."""
        read = self._read(name, out)
        if read is None:
            return  # gone (it ends next tick) or refused
        if read.stat.start_ticks != entry.start_ticks:
            self._end(name, now, out)
            self._add_read(name, read, now, out)
            return
        if read.partial:
            return  # it exited while being read: half its details would look like an exec
        old, details, stat = entry.record, read.details, read.stat
        execed = (details.exe, details.cmdline) != (old.exe, old.cmdline)
        rec = records.new_record(
            stat,
            details,
            start_time=old.start_time,
            cpu_percent=self._cpu_percent(entry, stat.cpu_ticks, now),
            first_seen=old.first_seen,
            now=now,
            exe_sha256=None if execed else old.exe_sha256,
        )
        self._poller.remember(name, read.raw_stat)
        entry.comm, entry.cpu_ticks = SHARED.one(stat.comm), stat.cpu_ticks
        self._mark_busy(name, rec.cpu_percent)
        self._store(entry, rec)
        if not execed:
            changes = change_events(old, rec, now, exe_setid=self.exe_setid(name))
            if not changes:
                self._dirty[name] = entry
                return
            self._dirty.pop(name, None)
            entry.emitted_fields, entry.last_emit = None, now
            out.updated.append(rec)
            out.events.extend(changes)
            return
        self._dirty.pop(name, None)
        entry.emitted_fields, entry.last_emit = None, now
        out.execed.append(rec)
        out.events.append(records.start_event(rec, now, kind="exec", partial=read.partial))
        if rec.exe is not None:
            self._hash_jobs.add(rec.key, stat.start_ticks)

    def exe_setid(self, name: bytes) -> Callable[[int], bool | None]:
        """For `change_events`: whether /proc/<name>/exe carries a set-ID bit (None: cannot
        tell)."""

        def has(bit: int) -> bool | None:
            try:
                return bool(os.stat(self._root + b"/" + name + b"/exe").st_mode & bit)
            except OSError:
                return None

        return has

    def _sweep_changes(self, now: float, out: TickOutput) -> None:
        """This tick's slice of the round over every instance: a new cwd or a deleted exe
        makes the instance worth a full read (`_recheck`), which reports what changed."""
        elapsed = now - self._last_ts if self._last_ts is not None else 0.0
        entries = self._entries
        for name in self.sweep.take(entries, len(entries), elapsed, self.update_interval):
            entry = entries.get(name)
            if entry is not None and links_differ(self._root, name, entry.record):
                self._recheck(name, entry, now, out)

    def _end(self, name: bytes, now: float, out: TickOutput) -> None:
        entry = self._entries.pop(name)
        self._poller.forget(name)
        self._records.pop(entry.key, None)
        self._dirty.pop(name, None)
        self._busy.discard(name)
        self._hash_jobs.forget(entry.key)
        out.ended.append(entry.key)
        out.events.append(records.exit_event(entry.key, entry.record, now))

    def _store(self, entry: Entry, rec: ProcessRecord) -> None:
        if entry.emitted_fields is None:  # the emitted state was the record's: keep its fields
            emitted = records.dynamic_fields(entry.record)
            if records.dynamic_fields(rec) != emitted:
                entry.emitted_fields = emitted
        entry.record = rec
        self._records[entry.key] = rec

    def _flush_updates(self, now: float, out: TickOutput) -> None:
        """Emit changed records at most once per update_interval each, so that the store is not
        written per process per tick; `last_seen` of an emitted record is now."""
        if not self._dirty:
            return
        interval = self.update_interval
        for name, entry in list(self._dirty.items()):
            if now - entry.last_emit < interval:
                continue
            del self._dirty[name]
            emitted = entry.emitted_fields
            if emitted is None or records.dynamic_fields(entry.record) == emitted:
                entry.emitted_fields = None
                continue  # changed and changed back
            rec = replace(entry.record, last_seen=now)
            self._store(entry, rec)
            entry.emitted_fields, entry.last_emit = None, now
            out.updated.append(rec)

    # -- hashes --------------------------------------------------------------------------------

    def _apply_hashes(self) -> None:
        for result in self._hash_jobs.finished():
            entry = self._entries.get(str(result.key.pid).encode())
            if entry is None or entry.key != result.key:
                continue  # ended meanwhile; the daemon still stores it from hasher.drain()
            if entry.record.exe_sha256 != result.sha256:
                self._store(entry, replace(entry.record, exe_sha256=result.sha256))
