"""Who descends from whom: ancestry, children and the tree view's order.

A parent must have started no later than its child, so a reused pid is never taken for a
parent; cycles are cut. Everything is keyed by row key (see `keys.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from daemoneye.models import ProcessRecord
from daemoneye.tui.logic.keys import record_key
from daemoneye.tui.logic.sorting import Item, SortSpec, sort_items


def _parents(records: Mapping[str, ProcessRecord]) -> dict[str, str]:
    """child → parent among `records`. A parent must have started no later than its child,
    so a reused pid is never taken for the parent."""
    by_pid: dict[int, tuple[str, ProcessRecord]] = {}
    for key, record in records.items():
        known = by_pid.get(record.pid)
        if known is None or (known[1].ended_at is not None and record.ended_at is None):
            by_pid[record.pid] = (key, record)
    parent_of: dict[str, str] = {}
    for key, record in records.items():
        parent = by_pid.get(record.ppid)
        if parent is not None and parent[0] != key and parent[1].start_time <= record.start_time:
            parent_of[key] = parent[0]
    return parent_of


class Lineage:
    """Who is whose parent in one process set, indexed once so that asking about one process
    costs the length of its ancestry and the number of its children."""

    def __init__(self, records: Mapping[str, ProcessRecord]) -> None:
        self.records = records
        self.by_pid: dict[int, list[ProcessRecord]] = {}
        for record in records.values():
            same_pid = self.by_pid.get(record.pid)
            if same_pid is None:
                self.by_pid[record.pid] = [record]
            else:  # a reused pid: an ended instance and its successor
                same_pid.append(record)

    def ancestry(self, key: str) -> list[ProcessRecord]:
        return _ancestry(key, self.records, self.by_pid)

    def children(self, key: str) -> list[ProcessRecord]:
        record = self.records.get(key)
        if record is None:
            return []
        pid, start = record.pid, record.start_time
        return sorted((r for r in self.records.values()
                       if r.ppid == pid and r is not record and r.start_time >= start),
                      key=lambda r: r.pid)


def ancestry(key: str, records: Mapping[str, ProcessRecord]) -> list[ProcessRecord]:
    """Parent first, up to the root, among `records` (cycles and reused pids are cut)."""
    by_pid: dict[int, list[ProcessRecord]] = {}
    for record in records.values():
        by_pid.setdefault(record.pid, []).append(record)
    return _ancestry(key, records, by_pid)


def _ancestry(key: str, records: Mapping[str, ProcessRecord],
              by_pid: Mapping[int, list[ProcessRecord]]) -> list[ProcessRecord]:
    chain: list[ProcessRecord] = []
    seen = {key}
    current = records.get(key)
    while current is not None:
        candidates = [r for r in by_pid.get(current.ppid, ())
                      if r.start_time <= current.start_time and record_key(r) not in seen]
        if not candidates or current.ppid == current.pid:
            break
        parent = max(candidates, key=lambda r: (r.ended_at is None, r.start_time))
        seen.add(record_key(parent))
        chain.append(parent)
        current = parent
    return chain


def children(key: str, records: Mapping[str, ProcessRecord]) -> list[ProcessRecord]:
    """The direct children of `key` among `records`, by pid."""
    record = records.get(key)
    if record is None:
        return []
    return sorted((r for k, r in records.items() if r.ppid == record.pid and k != key
                   and r.start_time >= record.start_time), key=lambda r: r.pid)


def tree_order(records: Mapping[str, ProcessRecord],
               sort: SortSpec) -> list[tuple[str, ProcessRecord, str]]:
    """Depth-first by parent, siblings in `sort` order; each row key and record with its
    tree guide ("├─", …)."""
    parent_of = _parents(records)
    children_of: dict[str, list[Item]] = {}
    roots: list[Item] = []
    # One global sort; bucketing keeps every sibling list in that order.
    for item in sort_items(records.items(), sort):
        parent = parent_of.get(item[0])
        if parent is None:
            roots.append(item)
        else:
            children_of.setdefault(parent, []).append(item)
    ordered: list[tuple[str, ProcessRecord, str]] = []
    # (item, guide of its ancestors, is last sibling, depth)
    stack: list[tuple[Item, str, bool, int]] = [(item, "", True, 0) for item in reversed(roots)]
    placed: set[str] = set()
    while stack:
        (key, record), lead, last, depth = stack.pop()
        if key in placed:
            continue
        placed.add(key)
        ordered.append((key, record, "" if depth == 0 else lead + ("└─" if last else "├─")))
        kids = children_of.get(key, ())
        below = "" if depth == 0 else lead + ("  " if last else "│ ")
        for index in range(len(kids) - 1, -1, -1):
            stack.append((kids[index], below, index == len(kids) - 1, depth + 1))
    return ordered


def with_ancestors(matches: Iterable[Item],
                   records: Mapping[str, ProcessRecord]) -> dict[str, ProcessRecord]:
    """The matching records plus every ancestor of one, so a filtered tree keeps its shape."""
    parent_of = _parents(records)
    kept: dict[str, ProcessRecord] = {}
    for match, _ in matches:
        key: str | None = match
        while key is not None and key not in kept:
            kept[key] = records[key]
            key = parent_of.get(key)
    return kept
