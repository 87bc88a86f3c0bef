"""IPC answers about the past (issue 16): the process set at a moment and the timeline, read
from the store on the IPC thread pool, paged and bounded like every other answer."""

from __future__ import annotations

from daemoneye.event_filter import parse_event_filter
from daemoneye.filters import FilterError, ProcessFilter
from daemoneye.ipc import protocol
from daemoneye.ipc.codec import to_wire
from daemoneye.ipc.methods import MethodError
from daemoneye.ipc.protocol import (
    ActivityParams,
    ErrorCode,
    ProcessesAtParams,
    ProcessesPage,
    TimelinePage,
    TimelineParams,
)
from daemoneye.models import HistoryActivity, ProcessRecord
from daemoneye.store.activity import MAX_ACTIVITY_BUCKETS, activity
from daemoneye.store.history import (
    MAX_TIMELINE_PAGE,
    TIMELINE_KINDS,
    history_reach,
    reach_problem,
    timeline_matching,
)
from daemoneye.store.history import processes_at as stored_processes_at
from daemoneye.store.readonly import ReadOnlyStore


def _invalid(method: str, field: str, why: str) -> MethodError:
    return MethodError(
        ErrorCode.INVALID_PARAMS, f"invalid params for {method}: {field}: {why}", {"field": field}
    )


def processes_at(
    store: ReadOnlyStore, params: ProcessesAtParams, process_filter: ProcessFilter, now: float
) -> ProcessesPage:
    """`history.processes_at`: a moment before the retained history or in the future is
    refused with what the history covers."""
    problem = reach_problem(history_reach(store), params.at, now)
    if problem is not None:
        raise _invalid("history.processes_at", "at", problem)
    matching = [r for r in stored_processes_at(store, params.at) if process_filter.matches(r)]
    remaining = (
        matching
        if params.after is None
        else [r for r in matching if (r.pid, r.start_time) > params.after]
    )
    chosen: list[ProcessRecord] = []
    size = 0
    for record in remaining[: params.limit]:
        size += len(protocol.dumps(to_wire(record))) + 1
        if chosen and size > protocol.CHUNK_BYTES:
            break
        chosen.append(record)
    last = chosen[-1] if chosen and len(chosen) < len(remaining) else None
    return ProcessesPage(
        processes=tuple(chosen),
        total=len(matching),
        next=None if last is None else (last.pid, last.start_time),
    )


def timeline_page(store: ReadOnlyStore, params: TimelineParams) -> TimelinePage:
    """`history.timeline`: events newest first, at most `limit`, and where the next page starts."""
    kinds = params.kinds or TIMELINE_KINDS
    unknown = sorted(set(kinds) - set(TIMELINE_KINDS))
    if unknown:
        raise _invalid(
            "history.timeline", "kinds", f"{unknown[0]!r} is not one of {', '.join(TIMELINE_KINDS)}"
        )
    if not 1 <= params.limit <= MAX_TIMELINE_PAGE:
        raise _invalid("history.timeline", "limit", f"must be 1 to {MAX_TIMELINE_PAGE}")
    try:
        event_filter = parse_event_filter(params.filter)
    except FilterError as exc:
        raise _invalid("history.timeline", "filter", str(exc)) from None
    before = None
    if params.before is not None:
        ts, source, row_id = params.before
        before = (ts, (source, row_id))
    events, last = timeline_matching(
        store,
        event_filter.matches,
        since=params.since,
        until=params.until,
        before=before,
        kinds=[kind for kind in kinds if kind in event_filter.kinds],
        limit=params.limit,
    )
    return TimelinePage(
        events=tuple(events),
        next=None if last is None else (last[0], *last[1]),
        reach=history_reach(store),
    )


def activity_answer(store: ReadOnlyStore, params: ActivityParams) -> HistoryActivity:
    """`history.activity`: new instances and alerts per bucket over [since, until)."""
    if not 1 <= params.buckets <= MAX_ACTIVITY_BUCKETS:
        raise _invalid("history.activity", "buckets", f"must be 1 to {MAX_ACTIVITY_BUCKETS}")
    if not params.until > params.since:
        raise _invalid("history.activity", "until", "must be after since")
    bucket_s, started, alerts = activity(store, params.since, params.until, params.buckets)
    return HistoryActivity(params.since, bucket_s, started, alerts, history_reach(store))
