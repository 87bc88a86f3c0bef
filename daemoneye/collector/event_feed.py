"""Kernel process events turned into store writes that agree with the poller.

The event source (collector/events.py) sees every exec and exit the moment it happens; the
poller (collector/scanner.py) keeps running as the reconciler. Both produce the same rows for
the same instance (pid, start_time): an exec of an instance the poller does not know yet is
inserted at once (and the poller later only fills in rss/cpu/state); an exec of a known
instance updates its exe and command line; an exit ends the row with its exit code. This
module also remembers which instances the events already reported, so the poller's own
`start`/`exec`/`exit` facts about them are not written a second time.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from daemoneye.collector.changes import change_events
from daemoneye.collector.event_records import ObservedEvent
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.hashing import ExeHasher
from daemoneye.collector.records import details_values, display_name, exec_record
from daemoneye.collector.scanner import ProcScanner
from daemoneye.models import (
    CHANGE_KINDS,
    ProcessEvent,
    ProcessKey,
    ProcessRecord,
    ScanDelta,
    ScanStats,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Changes:
    """The change events of one batch, one per (kind, instance) with the old value filled in;
    each changed instance's record with every change applied; the kernel's comm after a
    rename (for the scanner, whose stat comparison must not see the rename again)."""

    events: dict[tuple[str, ProcessKey], ProcessEvent] = field(default_factory=dict)
    states: dict[ProcessKey, ProcessRecord] = field(default_factory=dict)
    comms: dict[ProcessKey, str] = field(default_factory=dict)
    # A change undone within the batch (renamed to [kworker/0:1] and back): folding would
    # leave "A → A", nothing; the first such change is kept as it was, one per (kind, instance).
    undone: dict[tuple[str, ProcessKey], ProcessEvent] = field(default_factory=dict)


def _value_of(kind: str, record: ProcessRecord | None) -> str | None:
    """What a change of `kind` changes, as the event's text, in `record` (None: unknown)."""
    if record is None:
        return None
    if kind == "rename":
        return record.name
    if kind == "uid":
        return None if record.uid is None else str(record.uid)
    if kind == "gid":
        return None if record.gid is None else str(record.gid)
    return None


MAX_BATCH = 4096  # events per worker run; the rest waits for the next run
_REMEMBERED = 32_768  # instances whose lifecycle facts came from events
_FRESH = 4096  # records of new instances kept until the scanner meets them (or they exit)


class EventFeed:
    """Drains the event source on the worker thread into ScanDelta objects for the store."""

    def __init__(
        self,
        source: ProcEventSource,
        scanner: ProcScanner,
        user_of: Callable[[int], str | None],
        hasher: ExeHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self._scanner = scanner
        self._user_of = user_of
        self._hasher = hasher
        self._clock = clock
        # kind ('start' covers exec-born instances) -> instances the events already reported
        self._reported: dict[str, collections.OrderedDict[ProcessKey, None]] = {
            "start": collections.OrderedDict(),
            "exec": collections.OrderedDict(),
            "exit": collections.OrderedDict(),
        }
        # What the events wrote of instances the scanner may not have met yet (new ones,
        # and their changes): the old value of their next change, and what the scanner's
        # first read of them is compared with (`without_duplicates`).
        self._fresh: collections.OrderedDict[ProcessKey, ProcessRecord] = collections.OrderedDict()
        self.batches_total = 0

    def take(self) -> ScanDelta | None:
        """Everything queued since the last call, as one delta; None when nothing is queued."""
        observed = self.source.drain_observed(MAX_BATCH)
        if not observed:
            return None
        started = time.perf_counter()
        now = self._clock()
        added: dict[ProcessKey, ProcessRecord] = {}
        execed: dict[ProcessKey, ProcessRecord] = {}
        ended: list[ProcessKey] = []
        events: list[ProcessEvent] = []
        hash_jobs: list[tuple[ProcessKey, int]] = []
        changes = _Changes()
        for item in observed:
            event = item.event
            if event.kind == "fork":
                continue  # forks only teach the source start times
            if event.start_time == 0.0:
                known = self._scanner.ended_under(event.pid) if event.kind == "exit" else None
                if known is None:
                    # Gone before its start time could be read: the fact stays, marked
                    # partial, but without an identity there is no process row to write.
                    events.append(event)
                    continue
                # an instance the scan knows, whose stat went with it: its exit, with the code
                event = replace(event, start_time=known.start_time, partial=False)
            key = ProcessKey(event.pid, event.start_time)
            if event.kind == "exec":
                record = self._exec_record(item, key, now)
                if record is None:
                    continue
                changes.states.pop(key, None)  # read at the exec: newer than earlier changes
                changes.comms.pop(key, None)
                if key in added or self._scanner.record(key) is None:
                    added[key] = record
                    self._remember("start", key)
                else:
                    execed[key] = record
                    self._scanner.adopt_exec(record)
                    self._remember("exec", key)
                if self._hasher is not None and record.exe and item.start_ticks is not None:
                    hash_jobs.append((key, item.start_ticks))
            elif event.kind == "exit":
                ended.append(key)
                self._remember("exit", key)
                self._fresh.pop(key, None)
            elif event.kind in CHANGE_KINDS:
                self._change(item, key, added, changes, now)
                continue
            events.append(event)
        events += changes.undone.values()
        events += [e for e in changes.events.values() if e.old_value != e.new_value]
        updated: dict[ProcessKey, ProcessRecord] = {}
        for key, record in changes.states.items():
            if key in added:
                added[key] = record
            elif key in execed:  # exec'd, then changed: the exec's record with the change
                execed[key] = record
                self._scanner.adopt_change(record, changes.comms.get(key))
            else:
                updated[key] = record
                self._scanner.adopt_change(record, changes.comms.get(key))
                if key in self._fresh:
                    self._keep_fresh(key, record)
        gone = set(ended)
        for key, record in added.items():
            if key not in gone:
                self._keep_fresh(key, record)
        # An instance whose exit is in this batch has no executable left to open (a zombie
        # has no memory map): its job could only fail, and most execs of a storm are such.
        hash_jobs = [job for job in hash_jobs if job[0] not in gone]
        if hash_jobs and self._hasher is not None:
            # All at once, not one by one: each submit wakes the hasher thread, which would
            # then trade the GIL with this loop for every exec of a storm.
            self._hasher.submit_many(hash_jobs)
        self.batches_total += 1
        stats = ScanStats(
            duration_s=time.perf_counter() - started,
            processes=0,
            new=len(added),
            ended=len(ended),
            execs=len(execed) + len(added),
            vanished=0,
            denied=0,
        )
        return ScanDelta(
            ts=now,
            added=tuple(added.values()),
            updated=tuple(updated.values()),
            execed=tuple(execed.values()),
            ended=tuple(ended),
            events=tuple(events),
            stats=stats,
        )

    def _exec_record(
        self, item: ObservedEvent, key: ProcessKey, now: float
    ) -> ProcessRecord | None:
        details = item.details
        if details is None:
            return None
        known = self._scanner.record(key)
        exe_base = os.path.basename(details.exe or (details.cmdline[0] if details.cmdline else ""))
        # The event source leaves `user` to us.
        user = self._user_of(details.uid) if details.uid is not None else None
        name = display_name(exe_base[:15], details.exe, details.cmdline)
        if known is not None:
            # Every field the details reader fills
            values = details_values(details)
            values["user"] = user
            values["name"] = name
            return replace(known, **values, exe_sha256=None, last_seen=now)
        return exec_record(
            key, item.event.ppid or 0, details, name=name, user=user, seen=item.event.ts
        )

    def _change(
        self,
        item: ObservedEvent,
        key: ProcessKey,
        added: dict[ProcessKey, ProcessRecord],
        batch: _Changes,
        now: float,
    ) -> None:
        """Fold one change event into this batch: the old value from what is known of the
        instance, its record with every change so far applied. Several changes of one kind to
        one instance in a batch become one (the first old value, the last new one), so a
        process renaming itself in a loop costs one row per batch, not one per rename."""
        event = item.event
        known = (
            batch.states.get(key)
            or added.get(key)
            or self._scanner.record(key)
            or self._fresh.get(key)
        )
        if known is None:  # changed before its first scan (a fork child renaming itself)
            read = self._scanner.read_record(key, now)
            if read is not None:  # its state after the change; what it was is unknown
                added[key] = read
                self._remember("start", key)
                batch.events[(event.kind, key)] = replace(event, exe=read.exe)
                return
        if event.kind == "rename" and event.new_value is not None and known is not None:
            # the name as the record shows it (a name the kernel cut, lengthened)
            event = replace(
                event, new_value=display_name(event.new_value, known.exe, known.cmdline)
            )
        earlier = batch.events.get((event.kind, key))
        if earlier is not None:
            old_value = earlier.old_value
            if event.new_value == old_value and earlier.new_value != old_value:
                batch.undone.setdefault((event.kind, key), earlier)
        else:
            old_value = _value_of(event.kind, known)
            if known is not None and old_value == event.new_value:
                return  # already known: the scan reported it, or only the euid changed
        batch.events[(event.kind, key)] = replace(
            event, old_value=old_value, exe=known.exe if known else None
        )
        record = self._with_change(known, event, now)
        if record is not None:
            batch.states[key] = record
            if event.kind == "rename" and item.event.new_value is not None:
                batch.comms[key] = item.event.new_value

    def _with_change(
        self, known: ProcessRecord | None, event: ProcessEvent, now: float
    ) -> ProcessRecord | None:
        """The instance's record with the change applied; None when nothing is known of it or
        the change is not state (a ptrace attach)."""
        if known is None or event.new_value is None:
            return None
        if event.kind == "rename":
            return replace(known, name=event.new_value, last_seen=now)
        if event.kind in ("uid", "gid") and event.new_value.isdigit():
            value = int(event.new_value)
            if event.kind == "gid":
                return replace(known, gid=value, last_seen=now)
            return replace(known, uid=value, user=self._user_of(value), last_seen=now)
        return None

    def _keep_fresh(self, key: ProcessKey, record: ProcessRecord) -> None:
        self._fresh[key] = record
        self._fresh.move_to_end(key)
        if len(self._fresh) > _FRESH:
            self._fresh.popitem(last=False)

    def _remember(self, kind: str, key: ProcessKey) -> None:
        seen = self._reported[kind]
        seen[key] = None
        seen.move_to_end(key)
        if len(seen) > _REMEMBERED:
            seen.popitem(last=False)

    def not_yet_evaluated(self, delta: ScanDelta) -> ScanDelta:
        """The part of a poll delta the rules have not seen through the events already."""
        started, execed = self._reported["start"], self._reported["exec"]
        added = tuple(r for r in delta.added if r.key not in started)
        execs = tuple(r for r in delta.execed if r.key not in execed and r.key not in started)
        if len(added) == len(delta.added) and len(execs) == len(delta.execed):
            return delta
        return replace(delta, added=added, execed=execs)

    def without_duplicates(self, delta: ScanDelta) -> ScanDelta:
        """The poller's delta minus the lifecycle facts the events already wrote, plus what
        changed between the events' read of a new instance (at its exec) and the scanner's
        first read of it: a cwd, an id, a binary deleted meanwhile are changes too."""
        kept = tuple(
            e
            for e in delta.events
            if ProcessKey(e.pid, e.start_time) not in self._reported.get(e.kind, {})
        )
        since_exec: list[ProcessEvent] = []
        for record in delta.added:
            earlier = self._fresh.pop(record.key, None)
            if earlier is not None:  # the name is left out: the events guess it from the exe
                since_exec += change_events(
                    replace(earlier, name=record.name),
                    record,
                    delta.ts,
                    exe_setid=self._scanner.exe_setid(str(record.pid).encode()),
                )
        if len(kept) == len(delta.events) and not since_exec:
            return delta
        return replace(delta, events=kept + tuple(since_exec))
