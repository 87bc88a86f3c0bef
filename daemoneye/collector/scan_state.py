"""The scanner's mutable state: per instance, per tick, and its executable-hash jobs."""

from __future__ import annotations

from itertools import islice

from daemoneye.collector.hashing import ExeHasher
from daemoneye.collector.procfs import StatFields
from daemoneye.collector.shared_text import SHARED
from daemoneye.models import (
    ExeHash,
    ProcessEvent,
    ProcessKey,
    ProcessRecord,
    ScanDelta,
    ScanStats,
)


class Entry:
    """One live instance as the scanner tracks it: identity, what the next stat is compared
    with, the current record, and what was last emitted to the store: `emitted_fields`, the
    dynamic fields of the record last emitted, kept only while the current record's differ
    (None: they are the current record's). Not a second record per process: a hash, a
    settled CPU % or a change waiting for its update interval would each have kept one."""

    __slots__ = (
        "comm",
        "cpu_ticks",
        "emitted_fields",
        "key",
        "last_emit",
        "record",
        "start_ticks",
    )

    def __init__(self, key: ProcessKey, stat: StatFields, record: ProcessRecord, now: float):
        self.key = key
        self.start_ticks = stat.start_ticks
        self.comm = SHARED.one(stat.comm)  # thousands of processes share a name
        self.cpu_ticks = stat.cpu_ticks
        self.record = record
        self.emitted_fields: tuple[object, ...] | None = None
        self.last_emit = now


class TickOutput:
    """What one scan collects before it is frozen into a ScanDelta."""

    __slots__ = ("added", "denied", "ended", "events", "execed", "updated", "vanished")

    def __init__(self) -> None:
        self.added: list[ProcessRecord] = []
        self.updated: list[ProcessRecord] = []
        self.execed: list[ProcessRecord] = []
        self.ended: list[ProcessKey] = []
        self.events: list[ProcessEvent] = []
        self.vanished = 0
        self.denied = 0

    def delta(self, now: float, duration_s: float, processes: int) -> ScanDelta:
        return ScanDelta(
            ts=now,
            added=tuple(self.added),
            updated=tuple(self.updated),
            execed=tuple(self.execed),
            ended=tuple(self.ended),
            events=tuple(self.events),
            stats=ScanStats(
                duration_s=duration_s,
                processes=processes,
                new=len(self.added),
                ended=len(self.ended),
                execs=len(self.execed),
                vanished=self.vanished,
                denied=self.denied,
            ),
        )


class HashJobs:
    """The scanner's side of the ExeHasher. Jobs collected during a tick are handed over after
    it, only as many as the hasher's queue has room for: the rest wait for a later tick instead
    of being dropped (a first scan of 10,000 processes would overflow any sane queue). Results
    are filtered so that only the latest job's result for an instance is applied."""

    def __init__(self, hasher: ExeHasher | None) -> None:
        self._hasher = hasher
        self._take = hasher.tap() if hasher is not None else None
        self._backlog: dict[ProcessKey, int] = {}  # key -> start ticks, oldest first
        self._pending: dict[ProcessKey, int] = {}  # submitted, result not yet seen

    @property
    def backlog(self) -> int:
        """Jobs waiting for room in the hasher's queue."""
        return len(self._backlog)

    def add(self, key: ProcessKey, start_ticks: int) -> None:
        if self._hasher is not None:
            self._backlog.pop(key, None)  # an exec before the first job left: one job is enough
            self._backlog[key] = start_ticks

    def forget(self, key: ProcessKey) -> None:
        """The instance ended: a job still waiting for it would only report that."""
        self._backlog.pop(key, None)

    def submit(self) -> None:
        """Hand jobs over once the scan is done: a hasher working during the scan contends for
        the GIL at every syscall of it, which doubled the cost of a first scan."""
        if self._hasher is None or not self._backlog:
            return
        for key in list(islice(self._backlog, self._hasher.room())):
            if not self._hasher.submit(key, self._backlog[key]):
                break  # closed, or filled by another submitter: try again next tick
            del self._backlog[key]
            self._pending[key] = self._pending.get(key, 0) + 1

    def finished(self) -> list[ExeHash]:
        """Results to apply. One is skipped while a newer job for the same instance is still
        pending: after an exec, the hash of the old binary may arrive after the exec record
        was built, and must not land on it."""
        if self._take is None:
            return []
        latest = []
        for result in self._take():
            pending = self._pending.get(result.key, 0) - 1
            if pending > 0:
                self._pending[result.key] = pending
                continue
            self._pending.pop(result.key, None)
            latest.append(result)
        return latest
