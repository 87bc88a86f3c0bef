"""The fake daemon's past: the sample host's processes plus instances that ended earlier, the
events they made and the sample alerts, over a week of history before FAKE_NOW. Served by
FakeSource's `timeline`, `processes_at`, `activity` and `process_get` like the daemon's
history methods (newest first, paged, refused outside the history)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from daemoneye.event_filter import parse_event_filter
from daemoneye.filters import FilterError
from daemoneye.models import (
    Alert,
    HistoryActivity,
    HistoryReach,
    ProcessKey,
    ProcessRecord,
    TimelineEvent,
)
from daemoneye.tui.source import SourceError, TimelineCursor, TimelineSlice
from tests.fakes.dashboard_source import FAKE_NOW, proc

HISTORY_S = 7 * 86400.0  # the fake store reaches back a week
HOUR = 3600.0


def ended_processes() -> tuple[ProcessRecord, ...]:
    """Instances that ran and ended in the last day: a backup at night, a killed miner, a
    compiler run, a shell of bob's."""

    def ended(record: ProcessRecord, lasted: float, code: int) -> ProcessRecord:
        end = record.start_time + lasted
        return dataclasses.replace(record, last_seen=end, ended_at=end, exit_code=code)

    return (
        ended(
            proc(
                4100,
                640,
                "backup.sh",
                ["/bin/sh", "/usr/local/bin/backup.sh", "--full"],
                started=14 * HOUR,
                exe="/usr/bin/dash",
            ),
            40 * 60,
            0,
        ),
        ended(
            proc(
                4111,
                4100,
                "tar",
                ["tar", "czf", "/srv/backup/etc.tgz", "/etc"],
                started=14 * HOUR - 5,
                exe="/usr/bin/tar",
                cpu=35.0,
            ),
            38 * 60,
            2,
        ),
        ended(
            proc(
                3050,
                1,
                "kdevtmpfsi",
                ["/tmp/kdevtmpfsi"],
                started=6 * HOUR,
                user="www-data",
                uid=33,
                exe="/tmp/kdevtmpfsi",
                cpu=98.0,
            ),
            3 * HOUR,
            -9,
        ),
        ended(
            proc(
                3900,
                2320,
                "cc1",
                ["/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "-quiet", "main.c"],
                started=50 * 60,
                user="alice",
                uid=1000,
                cwd="/home/alice/src",
            ),
            20,
            0,
        ),
        ended(
            proc(3990, 812, "bash", ["-bash"], started=30 * 60, user="bob", uid=1001),
            10 * 60,
            -1,
        ),
    )


class FakeHistory:
    """The history every FakeSource serves; tests may replace `reach`, `events` and
    `instances` (e.g. to move the history's start)."""

    def __init__(
        self, live: Iterable[ProcessRecord], alerts: Iterable[Alert], now: float = FAKE_NOW
    ) -> None:
        self.instances: list[ProcessRecord] = [*live, *ended_processes()]
        self.reach = HistoryReach(oldest=now - HISTORY_S, newest=now, instances=len(self.instances))
        self.events: list[TimelineEvent] = _events(self.instances, tuple(alerts))
        self.asked_at: list[float] = []  # the moments processes_at was asked for
        self.asked_until: list[float | None] = []  # the `until` of each timeline request

    def instance(self, key: ProcessKey) -> ProcessRecord | None:
        for record in self.instances:
            if record.key == key:
                return record
        return None

    def timeline(
        self,
        until: float | None,
        before: TimelineCursor | None,
        filter_text: str,
        limit: int,
    ) -> TimelineSlice:
        self.asked_until.append(until)
        try:
            wanted = parse_event_filter(filter_text)
        except FilterError as exc:
            raise SourceError(f"invalid params for history.timeline: filter: {exc}") from None
        top = float("inf") if until is None else until

        def older(event: TimelineEvent) -> bool:
            if before is None:
                return event.ts <= top
            ts, source, row_id = before
            return (event.ts, event.seq) < (ts, (source, row_id))

        matching = [e for e in self.events if older(e) and wanted.matches(e)]
        page = matching[:limit]
        last = page[-1] if len(matching) > limit else None
        return TimelineSlice(
            tuple(page), None if last is None else (last.ts, *last.seq), self.reach
        )

    def processes_at(self, at: float, now: float) -> tuple[ProcessRecord, ...]:
        self.asked_at.append(at)
        problem = _reach_problem(self.reach, at, now)
        if problem is not None:
            raise SourceError(f"invalid params for history.processes_at: at: {problem}")
        alive = [
            r
            for r in self.instances
            if r.start_time <= at and (r.ended_at is None or r.ended_at > at)
        ]
        return tuple(sorted(alive, key=lambda r: (r.pid, r.start_time)))

    def activity(self, since: float, until: float, buckets: int) -> HistoryActivity:
        width = (until - since) / buckets
        started = [0] * buckets
        alerts = [0] * buckets
        for event in self.events:
            if since <= event.ts < until:
                index = min(buckets - 1, int((event.ts - since) / width))
                if event.kind == "alert":
                    alerts[index] += 1
                elif event.kind in ("exec", "start"):
                    started[index] += 1
        return HistoryActivity(since, width, tuple(started), tuple(alerts), self.reach)


def _reach_problem(reach: HistoryReach, at: float, now: float) -> str | None:
    if at > now:
        return "that moment is in the future"
    if reach.oldest is not None and at < reach.oldest:
        return "that moment is before the store's history (from a week ago)"
    return None


def _events(instances: Sequence[ProcessRecord], alerts: Sequence[Alert]) -> list[TimelineEvent]:
    """exec at each start, exit at each end, the alerts: newest first, seq as the store's."""
    events: list[TimelineEvent] = []
    row_id = 0
    for record in sorted(instances, key=lambda r: r.start_time):
        row_id += 1
        kind = "exec" if record.cmdline else "start"
        events.append(_event(record, record.start_time, kind, " ".join(record.cmdline), row_id))
        if record.ended_at is not None:
            row_id += 1
            status = "exited" if record.exit_code is None else f"exit code {record.exit_code}"
            events.append(_event(record, record.ended_at, "exit", status, row_id))
    by_key = {r.key: r for r in instances}
    for alert in alerts:
        owner = by_key.get(ProcessKey(alert.pid, alert.start_time))
        events.append(
            TimelineEvent(
                ts=alert.first_seen,
                kind="alert",
                pid=alert.pid,
                start_time=alert.start_time,
                name=owner.name if owner else None,
                user=owner.user if owner else None,
                ppid=owner.ppid if owner else None,
                detail=f"{alert.severity} {alert.rule_id}: {alert.title}",
                seq=(1, alert.id),
            )
        )
    events.sort(key=lambda e: (e.ts, e.seq), reverse=True)
    return events


def _event(record: ProcessRecord, ts: float, kind: str, detail: str, row_id: int) -> TimelineEvent:
    return TimelineEvent(
        ts=ts,
        kind=kind,
        pid=record.pid,
        start_time=record.start_time,
        name=record.name,
        user=record.user,
        ppid=record.ppid,
        detail=detail,
        seq=(0, row_id),
    )
