"""How the process table is ordered: by any column, ties always by ascending pid."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from daemoneye.models import ProcessRecord
from daemoneye.tui.logic.format import CMD_CELL_CHARS, cmdline_of
from daemoneye.tui.logic.keys import record_key

SORTABLE = ("pid", "user", "cpu", "rss", "started", "name", "cmd")
SORT_LABELS = {
    "pid": "PID",
    "user": "user",
    "cpu": "CPU %",
    "rss": "RSS",
    "started": "start time",
    "name": "name",
    "cmd": "command line",
}
SORT_KEYS: dict[str, Callable[[ProcessRecord], Any]] = {
    "pid": lambda r: r.pid,
    "user": lambda r: (r.user or "").lower(),
    "cpu": lambda r: r.cpu_percent,
    "rss": lambda r: r.rss,
    "started": lambda r: r.start_time,
    "name": lambda r: r.name.lower(),
    "cmd": lambda r: cmdline_of(r)[:CMD_CELL_CHARS].lower(),
}


@dataclass(frozen=True, slots=True)
class SortSpec:
    column: str = "cpu"
    descending: bool = True

    def toggled(self, column: str) -> SortSpec:
        """Sort by `column`; choosing the current column again reverses the order."""
        if column == self.column:
            return SortSpec(column, not self.descending)
        return SortSpec(column, column in ("cpu", "rss", "started"))

    def describe(self) -> str:
        return f"{SORT_LABELS[self.column]} {'↓' if self.descending else '↑'}"


NUMERIC_KEYS = {
    "pid": lambda r: r.pid,
    "cpu": lambda r: r.cpu_percent,
    "rss": lambda r: r.rss,
    "started": lambda r: r.start_time,
}


Item = tuple[str, ProcessRecord]  # row key, record


def sort_items(items: Iterable[Item], sort: SortSpec) -> list[Item]:
    """Sorted by the chosen column; ascending pid breaks ties so the order never flickers."""
    numeric = NUMERIC_KEYS.get(sort.column)
    if numeric is not None:
        sign = -1 if sort.descending else 1
        return sorted(items, key=lambda item: (sign * numeric(item[1]), item[1].pid))
    value = SORT_KEYS[sort.column]
    by_pid = sorted(items, key=lambda item: item[1].pid)
    # A stable sort keeps equal values in pid order, in either direction.
    return sorted(by_pid, key=lambda item: value(item[1]), reverse=sort.descending)


def sort_records(records: Iterable[ProcessRecord], sort: SortSpec) -> list[ProcessRecord]:
    return [record for _, record in sort_items(((record_key(r), r) for r in records), sort)]
