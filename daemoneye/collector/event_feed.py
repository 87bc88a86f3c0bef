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
from dataclasses import replace

from daemoneye.collector.event_records import ObservedEvent
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.hashing import ExeHasher
from daemoneye.collector.records import details_values, display_name
from daemoneye.collector.scanner import ProcScanner
from daemoneye.models import ProcessEvent, ProcessKey, ProcessRecord, ScanDelta, ScanStats

log = logging.getLogger(__name__)

MAX_BATCH = 4096  # events per worker run; the rest waits for the next run
_REMEMBERED = 32_768  # instances whose lifecycle facts came from events


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
        self.batches_total = 0

    def take(self) -> ScanDelta | None:
        """Everything queued since the last call, as one delta; None when nothing is queued."""
        observed = self.source.drain_observed(MAX_BATCH)
        if not observed:
            return None
        started = time.perf_counter()
        now = self._clock()
        added: dict[ProcessKey, ProcessRecord] = {}
        execed: list[ProcessRecord] = []
        ended: list[ProcessKey] = []
        events: list[ProcessEvent] = []
        hash_jobs: list[tuple[ProcessKey, int]] = []
        for item in observed:
            event = item.event
            if event.kind == "fork":
                continue  # forks only teach the source start times
            if event.start_time == 0.0:
                # Gone before its start time could be read: the fact stays, marked partial,
                # but without an identity there is no process row to write.
                events.append(event)
                continue
            key = ProcessKey(event.pid, event.start_time)
            if event.kind == "exec":
                record = self._exec_record(item, key, now)
                if record is None:
                    continue
                if key in added or self._scanner.record(key) is None:
                    added[key] = record
                    self._remember("start", key)
                else:
                    execed.append(record)
                    self._scanner.adopt_exec(record)
                    self._remember("exec", key)
                if self._hasher is not None and record.exe and item.start_ticks is not None:
                    hash_jobs.append((key, item.start_ticks))
            elif event.kind == "exit" and event.start_time != 0.0:
                ended.append(key)
                self._remember("exit", key)
            events.append(event)
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
            updated=(),
            execed=tuple(execed),
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
        # Every field the details reader fills; the event source leaves `user` to us.
        values = details_values(details)
        values["user"] = self._user_of(details.uid) if details.uid is not None else None
        values["name"] = display_name(exe_base[:15], details.exe, details.cmdline)
        if known is not None:
            return replace(known, **values, exe_sha256=None, last_seen=now)
        return ProcessRecord(
            pid=key.pid,
            ppid=item.event.ppid or 0,
            start_time=key.start_time,
            state="R",
            threads=1,
            rss=0,
            cpu_percent=0.0,
            exe_sha256=None,
            first_seen=item.event.ts,
            last_seen=item.event.ts,
            **values,
        )

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
        """The poller's delta minus the lifecycle facts the events already wrote."""
        if not delta.events:
            return delta
        kept = tuple(
            e
            for e in delta.events
            if ProcessKey(e.pid, e.start_time) not in self._reported.get(e.kind, {})
        )
        if len(kept) == len(delta.events):
            return delta
        return replace(delta, events=kept)
