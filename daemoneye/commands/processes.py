"""`daemoneye processes [FILTER]` and `daemoneye processes show PID`."""

from __future__ import annotations

import sys
import time

from daemoneye.commands.common import (
    Context,
    format_bytes,
    format_time,
    note,
    with_daemon_or_store,
)
from daemoneye.commands.health import staleness_note
from daemoneye.daemon.connection_answers import by_instance, live_from_store
from daemoneye.daemon.store_answers import detail_from_store
from daemoneye.errors import DaemonEyeError
from daemoneye.filters import ProcessFilter, parse_filter
from daemoneye.ipc.client import ProcessDetail
from daemoneye.models import PROCESS_FIELDS, ProcessEvent, ProcessRecord
from daemoneye.output import render
from daemoneye.store.readonly import ReadOnlyStore
from daemoneye.store.records import live_records
from daemoneye.text import visible

# The store's column names (docs/cli.md): a table shows two of them shorter, and the machine
# formats add the exact argument list.
LIST_COLUMNS = ("pid", "user", "cpu_percent", "rss", "start_time", "name", "cmdline")
MACHINE_COLUMNS = (*LIST_COLUMNS, "argv")
HEADINGS = {"cpu_percent": "cpu%", "start_time": "started"}
# `processes show`: every field of the record (models.py), in its order, except that what
# is known about the executable follows the executable.
_WITH_EXE = ("exe_sha256", "exe_deleted")
_IN_ORDER = [f.name for f in PROCESS_FIELDS if f.name not in _WITH_EXE]
SHOW_FIELDS = (
    *_IN_ORDER[: _IN_ORDER.index("exe") + 1],
    *_WITH_EXE,
    *_IN_ORDER[_IN_ORDER.index("exe") + 1 :],
)
_UNITS = {f.name: f.unit for f in PROCESS_FIELDS}
_COLUMNS = {f.name: f.columns for f in PROCESS_FIELDS}


class NoSuchProcess(DaemonEyeError):
    exit_code = 1


def _row(record: ProcessRecord, table: bool, now: float) -> tuple[object, ...]:
    cmdline = " ".join(record.cmdline)
    if table:
        return (
            record.pid,
            record.user or record.uid,
            f"{record.cpu_percent:.1f}",
            format_bytes(record.rss),
            format_time(record.start_time, now),
            record.name,
            cmdline or f"[{record.name}]",
        )
    return (
        record.pid,
        record.user,
        record.cpu_percent,
        record.rss,
        record.start_time,
        record.name,
        cmdline,
        record.cmdline,
    )


def list_processes(ctx: Context, filter_text: str) -> int:
    process_filter = parse_filter(filter_text)  # a bad term fails here, before connecting

    def from_store(store: ReadOnlyStore) -> list[ProcessRecord]:
        return _live_from_store(ctx, store, process_filter)

    matching = with_daemon_or_store(
        ctx, lambda client: client.processes_list(filter_text), from_store
    )
    matching.sort(key=lambda r: (-r.cpu_percent, r.pid))
    now = time.time()
    table = ctx.output == "table"
    render(
        LIST_COLUMNS if table else MACHINE_COLUMNS,
        [_row(r, table, now) for r in matching],
        ctx.output,
        sys.stdout,
        headings=HEADINGS,
    )
    return 0


def _live_from_store(
    ctx: Context, store: ReadOnlyStore, process_filter: ProcessFilter
) -> list[ProcessRecord]:
    records = live_records(store)
    stale = staleness_note(ctx)
    if stale:
        note(stale)
    connections = by_instance(live_from_store(store)) if process_filter.uses_connections else None
    return [r for r in records if process_filter.matches(r, connections=connections)]


def _detail_from_store(store: ReadOnlyStore, pid: int) -> ProcessDetail:
    detail = detail_from_store(store, pid)
    if detail is None:
        raise NoSuchProcess(f"no process with pid {pid} in the store")
    return detail


def _table_value(value: object, unit: str) -> object:
    """A field as `processes show` prints it: times and sizes for people, argv joined."""
    if isinstance(value, tuple):
        return " ".join(str(part) for part in value)
    if unit == "time" and value is None:
        return ""
    if unit == "time" and isinstance(value, int | float):
        return f"{format_time(value)} ({value:.2f})"
    if unit == "bytes" and isinstance(value, int):
        return f"{format_bytes(value)} ({value} bytes)"
    return value


def machine_fields(record: ProcessRecord) -> dict[str, object]:
    """`processes show` for a program: the store's columns, in SHOW_FIELDS order. The argument
    list is two columns, as in the store: `cmdline` joined by spaces and `argv` the list."""
    values: dict[str, object] = {}
    for name in SHOW_FIELDS:
        value = getattr(record, name)
        if isinstance(value, tuple):
            joined, listed = _COLUMNS[name]
            values[joined] = " ".join(value)
            values[listed] = value
        else:
            values[name] = value
    return values


def change_line(event: ProcessEvent) -> str:
    """One change after start as `processes show` prints it: when, what, from what to what
    (process text made visible, never interpreted)."""
    old = visible(event.old_value) if event.old_value is not None else "?"
    new = visible(event.new_value) if event.new_value is not None else "?"
    when = format_time(event.ts)
    if event.kind == "ptrace":
        what = f"ptrace   traced by pid {new}"
    elif event.kind in ("exe_deleted", "exe_replaced"):
        what = f"{event.kind:<8} {old}"
    else:
        what = f"{event.kind:<8} {old} -> {new}"
        if event.exe_setid:
            what += "  (setuid/setgid executable)"
    return f"{when}  {what}  [{event.source}]"


def change_lines(changes: tuple[ProcessEvent, ...]) -> list[str]:
    return [change_line(e) for e in changes]


def show_process(ctx: Context, pid: int) -> int:
    detail = with_daemon_or_store(
        ctx,
        lambda client: client.process_get(pid, history=True),
        lambda store: _detail_from_store(store, pid),
    )
    record, chain, children = detail.process, detail.ancestry, detail.children
    if ctx.output == "table":
        out = sys.stdout
        values = {name: _table_value(getattr(record, name), _UNITS[name]) for name in SHOW_FIELDS}
        render(("field", "value"), list(values.items()), "table", out, max_width=10**6)
        lineage = " ← ".join(f"{visible(p.name)}({p.pid})" for p in chain)
        out.write(f"\nANCESTRY  {lineage or '(none known)'}\n")
        more = detail.children_total - len(children)
        out.write(
            "CHILDREN  "
            + (", ".join(f"{visible(c.name)}({c.pid})" for c in children) or "(none)")
            + (f" and {more} more" if more > 0 else "")
            + "\n"
        )
        out.write("CHANGES   " + ("(none seen)" if not detail.changes else "") + "\n")
        for line in change_lines(detail.changes):
            out.write(f"  {line}\n")
        if detail.instances is not None and detail.instances > 1:
            note(
                f"pid {pid} was used by {detail.instances} process instances in the retention "
                "window; showing the newest (query the processes table for the others)"
            )
        return 0
    row = machine_fields(record)
    row["ancestry"] = [{"pid": p.pid, "start_time": p.start_time, "name": p.name} for p in chain]
    row["children"] = [{"pid": c.pid, "start_time": c.start_time, "name": c.name} for c in children]
    row["children_total"] = detail.children_total
    row["changes"] = [
        {
            "ts": e.ts,
            "kind": e.kind,
            "old_value": e.old_value,
            "new_value": e.new_value,
            "exe_setid": e.exe_setid,
            "source": e.source,
        }
        for e in detail.changes
    ]
    render(tuple(row), [tuple(row.values())], ctx.output, sys.stdout)
    return 0
