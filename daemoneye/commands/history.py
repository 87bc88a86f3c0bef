"""`daemoneye timeline`, `daemoneye processes --at TIME` and `daemoneye processes tree`: the
store's history from the command line, over IPC or (no daemon, or --db) from the store read
read-only. Times are read by daemoneye/timeparse.py, the same parser the dashboard uses."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from daemoneye.commands.common import Context, format_time, note, with_daemon_or_store
from daemoneye.errors import DaemonEyeError
from daemoneye.event_filter import parse_event_filter
from daemoneye.filters import parse_filter
from daemoneye.ipc.client import DaemonClient
from daemoneye.models import HistoryReach, ProcessRecord, TimelineEvent
from daemoneye.output import render
from daemoneye.store.history import (
    MAX_TIMELINE_PAGE,
    history_reach,
    reach_problem,
    timeline_matching,
)
from daemoneye.store.history import processes_at as stored_processes_at
from daemoneye.store.readonly import ReadOnlyStore
from daemoneye.store.records import live_records
from daemoneye.timeparse import TimeParseError, parse_time

TIMELINE_COLUMNS = ("time", "event", "pid", "ppid", "user", "name", "detail")
TREE_COLUMNS = ("pid", "ppid", "user", "started", "tree", "cmdline")


class HistoryUsageError(DaemonEyeError):
    """A time the store cannot answer or text that is not a time: bad input (exit 2)."""

    exit_code = 2


def read_time(flag: str, text: str, now: float) -> float:
    """`text` as epoch seconds, or a usage error naming the flag."""
    try:
        return parse_time(text, now)
    except TimeParseError as exc:
        raise HistoryUsageError(f"{flag}: {exc}") from None


@dataclass(frozen=True, slots=True)
class TimelineOptions:
    filter_text: str = ""
    since: str | None = None
    until: str | None = None
    limit: int = 100


def show_timeline(ctx: Context, options: TimelineOptions) -> int:
    """Events newest first: exec, exit, start, fork and alerts, filtered, `limit` at most."""
    now = time.time()
    event_filter = parse_event_filter(options.filter_text)  # a bad term fails before connecting
    since = 0.0 if options.since is None else read_time("--since", options.since, now)
    until = None if options.until is None else read_time("--until", options.until, now)

    def from_store(store: ReadOnlyStore) -> tuple[list[TimelineEvent], HistoryReach]:
        events: list[TimelineEvent] = []
        cursor = None
        while len(events) < options.limit:
            page, cursor = timeline_matching(
                store,
                event_filter.matches,
                since=since,
                until=until,
                before=cursor,
                kinds=event_filter.kinds,
                limit=min(MAX_TIMELINE_PAGE, options.limit - len(events)),
            )
            events.extend(page)
            if cursor is None:
                break
        return events, history_reach(store)

    async def over_ipc(client: DaemonClient) -> tuple[list[TimelineEvent], HistoryReach]:
        page = await client.timeline(
            since, until, limit=options.limit, filter_text=options.filter_text
        )
        return list(page.events), page.reach

    events, reach = with_daemon_or_store(ctx, over_ipc, from_store)
    if reach.oldest is None:
        note("the store holds no history yet")
    elif options.since is not None and since < reach.oldest:
        note(f"history reaches back to {format_time(reach.oldest, now)}; nothing older is kept")
    table = ctx.output == "table"
    rows = [_event_row(event, table, now) for event in events[: options.limit]]
    render(TIMELINE_COLUMNS, rows, ctx.output, sys.stdout)
    if table and len(events) >= options.limit:
        note(f"showing the newest {options.limit} events; --limit N or --since T for more")
    return 0


def _event_row(event: TimelineEvent, table: bool, now: float) -> tuple[object, ...]:
    return (
        format_time(event.ts, now) if table else event.ts,
        event.kind,
        event.pid,
        event.ppid,
        event.user,
        event.name,
        event.detail,
    )


def moment_or_now(at_text: str | None) -> tuple[float | None, float]:
    now = time.time()
    return (None if at_text is None else read_time("--at", at_text, now)), now


def records_at(ctx: Context, at: float | None, filter_text: str, now: float) -> list[ProcessRecord]:
    """The process set at `at` (None: now) that matches the filter, by pid."""
    process_filter = parse_filter(filter_text)

    def from_store(store: ReadOnlyStore) -> list[ProcessRecord]:
        if at is None:
            records = live_records(store)
        else:
            problem = reach_problem(history_reach(store), at, now)
            if problem is not None:
                raise HistoryUsageError(f"--at: {problem}")
            records = stored_processes_at(store, at)
        return [r for r in records if process_filter.matches(r)]

    async def over_ipc(client: DaemonClient) -> list[ProcessRecord]:
        if at is None:
            return await client.processes_list(filter_text)
        return await client.processes_at(at, filter_text)

    return with_daemon_or_store(ctx, over_ipc, from_store)


def tree_lines(
    records: Sequence[ProcessRecord], root_pid: int | None = None
) -> Iterator[tuple[ProcessRecord, str]]:
    """Each record with its tree prefix (`├─ `, `│  └─ `), parents before children, by pid.
    A parent is the record with the child's ppid that started no later than the child; a
    record without one in the set is a root. `root_pid` keeps that process's subtree only."""
    by_pid = {record.pid: record for record in records}
    children: dict[int, list[ProcessRecord]] = {}
    roots: list[ProcessRecord] = []
    for record in sorted(records, key=lambda r: (r.pid, r.start_time)):
        parent = by_pid.get(record.ppid)
        if parent is None or parent is record or parent.start_time > record.start_time:
            roots.append(record)
        else:
            children.setdefault(parent.pid, []).append(record)
    if root_pid is not None:
        roots = [by_pid[root_pid]] if root_pid in by_pid else []
    seen: set[int] = set()
    stack: list[tuple[ProcessRecord, str, str]] = [(r, "", "") for r in reversed(roots)]
    while stack:
        record, prefix, branch = stack.pop()
        if record.pid in seen:
            continue  # a cycle in ppids never loops
        seen.add(record.pid)
        yield record, prefix + branch
        kids = children.get(record.pid, [])
        deeper = prefix + ("" if not branch else ("   " if branch == "└─ " else "│  "))
        for index, child in reversed(list(enumerate(kids))):
            stack.append((child, deeper, "└─ " if index == len(kids) - 1 else "├─ "))


def list_processes_at(ctx: Context, at_text: str, filter_text: str) -> int:
    """`processes --at TIME [FILTER]`: the set as it was, by pid."""
    at, now = moment_or_now(at_text)
    records = records_at(ctx, at, filter_text, now)
    note(f"as at {format_time(at, now)}: {len(records)} processes")
    table = ctx.output == "table"
    rows = [
        (
            r.pid,
            r.user or r.uid,
            format_time(r.start_time, now) if table else r.start_time,
            format_time(r.ended_at, now) if table else r.ended_at,
            r.exit_code,
            r.name,
            " ".join(r.cmdline) or (f"[{r.name}]" if table else ""),
        )
        for r in records
    ]
    columns = ("pid", "user", "started", "ended", "exit_code", "name", "cmdline")
    render(columns, rows, ctx.output, sys.stdout)
    return 0


def show_tree(ctx: Context, at_text: str | None, root_pid: int | None) -> int:
    """`processes tree [PID] [--at TIME]`: the process tree now or at a past moment."""
    at, now = moment_or_now(at_text)
    records = records_at(ctx, at, "", now)
    if root_pid is not None and all(r.pid != root_pid for r in records):
        when = "now" if at is None else f"at {format_time(at, now)}"
        raise HistoryUsageError(f"no process with pid {root_pid} {when}")
    if at is not None:
        note(f"as at {format_time(at, now)}")
    table = ctx.output == "table"
    rows = [
        (
            record.pid,
            record.ppid,
            record.user or record.uid,
            format_time(record.start_time, now) if table else record.start_time,
            (prefix + record.name) if table else len(prefix) // 3,
            " ".join(record.cmdline),
        )
        for record, prefix in tree_lines(records, root_pid)
    ]
    columns = TREE_COLUMNS if table else (*TREE_COLUMNS[:4], "depth", "cmdline")
    render(columns, rows, ctx.output, sys.stdout)
    return 0
