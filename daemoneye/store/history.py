"""The store's history as a place to walk around in: the process set at a past moment, the
timeline of what happened (newest first, paged), and how far back history reaches. Plain
functions over a read-only store, shared by every client."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from daemoneye.models import TIMELINE_KINDS, HistoryReach, ProcessRecord, TimelineEvent
from daemoneye.units import format_time

SQLValue = int | float | str | bytes | None

__all__ = ["TIMELINE_KINDS"]  # re-exported: the kinds every reader of the timeline offers
MAX_TIMELINE_PAGE = 1_000


class HistorySource(Protocol):
    """What these reads need from a store connection (ReadOnlyStore provides it)."""

    def fetch_processes(
        self, where: str, params: Sequence[SQLValue] = (), *, order_by: str = "id"
    ) -> list[ProcessRecord]: ...

    def fetch_rows(
        self, sql: str, params: Sequence[SQLValue] = ()
    ) -> list[tuple[SQLValue, ...]]: ...


# Every instance that lived longer than this (or still lives) is in a small partial index
# (schema v7, process_rows_long_lived); any other that was alive at T ended within
# SHORT_LIVED_S after T. The two overlap on purpose, so rounding never loses a row.
LONG_LIVED_S = 3000.0
SHORT_LIVED_S = 3600.0
_ALIVE_AT = f"""id IN (
    SELECT id FROM process_rows
    WHERE ended_at > ?1 AND ended_at <= ?1 + {SHORT_LIVED_S} AND start_time <= ?1
    UNION
    SELECT id FROM process_rows INDEXED BY process_rows_long_lived
    WHERE start_time <= ?1 AND (ended_at IS NULL OR ended_at > ?1)
      AND (ended_at IS NULL OR ended_at - start_time > {LONG_LIVED_S})
)"""


def processes_at(store: HistorySource, moment: float) -> list[ProcessRecord]:
    """Every instance alive at `moment`: started at or before it and not ended by then
    (start_time <= moment < ended_at), by pid. Instances retention has deleted are gone.
    Read through two small index ranges, not every instance started before `moment`."""
    return store.fetch_processes(_ALIVE_AT, (moment,), order_by="pid, start_time")


def history_reach(store: HistorySource) -> HistoryReach:
    """The earliest and latest moments the retained history covers. The scanner writes a
    `start` event for every instance it first sees and retention deletes events and ended
    instances up to one horizon, so the oldest event is where history begins; both ends are
    read from the `ts` index, not by scanning every instance."""
    ((oldest, newest),) = store.fetch_rows(
        "SELECT (SELECT min(ts) FROM process_events), (SELECT max(ts) FROM process_events)"
    )
    if oldest is None:  # a store written without events: scan the instances instead
        ((oldest, newest),) = store.fetch_rows(
            "SELECT min(first_seen), max(last_seen) FROM processes"
        )
    ((count,),) = store.fetch_rows("SELECT count(*) FROM processes")
    return HistoryReach(
        oldest=None if oldest is None else float(oldest),
        newest=None if newest is None else float(newest),
        instances=int(count or 0),
    )


# A change after start: what it was and what it became; a uid/gid change by a set-id program
# says so (its own setuid(0) is expected; anything else becoming root is not).
_CHANGE_DETAIL = (
    "coalesce(e.old_value, '?') || ' \u2192 ' || coalesce(e.new_value, '?') || "
    "CASE WHEN e.exe_setid = 1 THEN ' (set-id program)' ELSE '' END"
)

# Process events and alerts, each read newest first along its own time index and merged here:
# a UNION ordered as a whole would sort every event of the week for one page. `src` (0 for
# process events, 1 for alerts) and `id` order events with the same time.
_EVENTS_BEFORE = """
SELECT e.ts, e.kind, e.pid, e.start_time, p.name, p.user, e.ppid,
       CASE e.kind
           WHEN 'exit' THEN coalesce('exit code ' || e.exit_code, 'exited')
           WHEN 'ptrace' THEN 'traced by pid ' || coalesce(e.new_value, '?')
           WHEN 'exe_deleted' THEN coalesce(e.old_value, e.exe, '?') || ' deleted'
           WHEN 'exe_replaced' THEN coalesce(e.old_value, e.exe, '?') || ' replaced'
           WHEN 'rename' THEN {change}
           WHEN 'uid' THEN {change}
           WHEN 'gid' THEN {change}
           WHEN 'cwd' THEN {change}
           ELSE coalesce(e.cmdline, '') END,
       0, e.id
FROM process_events e
LEFT JOIN processes p ON p.pid = e.pid AND p.start_time = e.start_time
WHERE e.ts >= ? AND e.ts <= ? AND (e.ts < ? OR ? > 0 OR e.id < ?) AND e.kind IN ({kinds})
ORDER BY e.ts DESC, e.id DESC
LIMIT ?
"""
# The page of alerts is chosen first and only its rows are joined to their processes: the
# join through the `processes` view costs string lookups per row, and joined before the sort
# it ran for every alert in the window (148,000 alerts: 1.9 s a page, against 0.1 s).
_ALERTS_BEFORE = """
SELECT a.first_seen, 'alert', a.pid, a.start_time, p.name, p.user, p.ppid,
       a.severity || ' ' || a.rule_id || ': ' || a.title, 1, a.id
FROM (
    SELECT id, first_seen, pid, start_time, severity, rule_id, title FROM alerts
    WHERE first_seen >= ?1 AND first_seen <= ?2
      AND (first_seen < ?2 OR ?3 > 1 OR (?3 = 1 AND id < ?4))
    ORDER BY first_seen DESC, id DESC
    LIMIT ?5
) a
LEFT JOIN processes p ON p.pid = a.pid AND p.start_time = a.start_time
ORDER BY a.first_seen DESC, a.id DESC
"""


def timeline(
    store: HistorySource,
    *,
    since: float,
    before: tuple[float, tuple[int, int]] | None = None,
    until: float | None = None,
    kinds: Collection[str] = TIMELINE_KINDS,
    limit: int = 200,
) -> list[TimelineEvent]:
    """Events from `since` on, newest first: those at or before `until` (default: all), or,
    to page on, those strictly before `before` = (ts, seq) of the last event already shown."""
    unknown = set(kinds) - set(TIMELINE_KINDS)
    if unknown:
        expected = ", ".join(TIMELINE_KINDS)
        raise ValueError(f"unknown event kind {sorted(unknown)[0]!r}; expected one of {expected}")
    if not kinds:
        return []
    if before is None:
        top = float("inf") if until is None else until
        ts, (src, row_id) = top, (2, 0)  # everything at `top` counts
    else:
        ts, (src, row_id) = before
    limit = max(1, min(limit, MAX_TIMELINE_PAGE))
    rows: list[tuple[SQLValue, ...]] = []
    process_kinds = sorted(set(kinds) - {"alert"})
    if process_kinds:
        # At `ts` itself: every process event when the cursor is an alert's or the top (src
        # 1 or 2 sort after 0), else only those with a smaller id.
        sql = _EVENTS_BEFORE.format(
            kinds=", ".join("?" * len(process_kinds)), change=_CHANGE_DETAIL
        )
        rows += store.fetch_rows(sql, (since, ts, ts, src, row_id, *process_kinds, limit))
    if "alert" in kinds:
        rows += store.fetch_rows(_ALERTS_BEFORE, (since, ts, src, row_id, limit))
    rows.sort(key=lambda row: (row[0], row[8], row[9]), reverse=True)
    return [_event(row) for row in rows[:limit]]


def _event(row: tuple[SQLValue, ...]) -> TimelineEvent:
    ts, kind, pid, start_time, name, user, ppid, detail, src, row_id = row
    return TimelineEvent(
        ts=float(ts),  # type: ignore[arg-type]
        kind=str(kind),
        pid=int(pid),  # type: ignore[arg-type]
        start_time=float(start_time),  # type: ignore[arg-type]
        name=None if name is None else str(name),
        user=None if user is None else str(user),
        ppid=None if ppid is None else int(ppid),
        detail=str(detail or ""),
        seq=(int(src), int(row_id)),  # type: ignore[arg-type]
    )


TimelineCursor = tuple[float, tuple[int, int]]  # (ts, seq) of the last event looked at
SCAN_BUDGET = 20_000  # events one filtered page may look at before it answers


def timeline_matching(
    store: HistorySource,
    keep: Callable[[TimelineEvent], bool],
    *,
    since: float,
    before: TimelineCursor | None = None,
    until: float | None = None,
    kinds: Collection[str] = TIMELINE_KINDS,
    limit: int = 200,
    budget: int = SCAN_BUDGET,
) -> tuple[list[TimelineEvent], TimelineCursor | None]:
    """Up to `limit` events that `keep` accepts, newest first, and the cursor to page on from
    (None: history is exhausted). A rare filter must not make one answer read the whole store:
    after `budget` events it answers with what it found and the cursor of the last one read."""
    limit = max(1, min(limit, MAX_TIMELINE_PAGE))
    kept: list[TimelineEvent] = []
    scanned = 0
    cursor = before
    while True:
        batch = min(MAX_TIMELINE_PAGE, max(limit, 100))
        events = timeline(store, since=since, before=cursor, until=until, kinds=kinds, limit=batch)
        for event in events:
            scanned += 1
            cursor = (event.ts, event.seq)
            if keep(event):
                kept.append(event)
                if len(kept) == limit:
                    return kept, cursor
        if len(events) < batch:
            return kept, None
        if scanned >= budget:
            return kept, cursor


def reach_problem(reach: HistoryReach, moment: float, now: float) -> str | None:
    """Why the store cannot answer what ran at `moment` (in the future, before its oldest
    history), naming how far history reaches; None when it can."""
    if moment > now:
        return f"{format_time(moment, now)} is in the future"
    if reach.oldest is None or moment < reach.oldest:
        since = "nothing yet" if reach.oldest is None else f"from {format_time(reach.oldest, now)}"
        return (
            f"{format_time(moment, now)} is before the store's history ({since}; "
            "store.retention and store.max_bytes decide how far back it reaches)"
        )
    return None
