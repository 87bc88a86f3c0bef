"""Who descends from whom: ancestry, children and the tree view's order.

A parent must have started no later than its child, so a reused pid is never taken for a
parent; cycles are cut. Everything is keyed by row key (see `keys.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from daemoneye.models import ProcessRecord
from daemoneye.tui.logic.keys import record_key
from daemoneye.tui.logic.sorting import Item, SortSpec, sort_items


def _parents(records: Mapping[str, ProcessRecord]) -> dict[str, str]:
    """child → parent among `records` (see `_parent_key`)."""
    by_pid: dict[int, list[str]] = {}
    for key, record in records.items():
        same_pid = by_pid.get(record.pid)
        if same_pid is None:
            by_pid[record.pid] = [key]
        else:
            same_pid.append(key)
    parent_of: dict[str, str] = {}
    for key, record in records.items():
        candidates = by_pid.get(record.ppid)
        if candidates is not None:
            parent = _parent_key(key, record, candidates, records)
            if parent is not None:
                parent_of[key] = parent
    return parent_of


def _parent_key(
    key: str, record: ProcessRecord, candidates: Iterable[str], records: Mapping[str, ProcessRecord]
) -> str | None:
    """Among the instances with the parent's pid, the one that is the parent: started no
    later than the child (a reused pid is never taken for it), live before ended, then the
    latest."""
    best: str | None = None
    best_rank: tuple[bool, float] = (False, 0.0)
    for candidate in candidates:
        if candidate == key:
            continue
        parent = records[candidate]
        if parent.start_time > record.start_time:
            continue
        rank = (parent.ended_at is None, parent.start_time)
        if best is None or rank > best_rank:
            best, best_rank = candidate, rank
    return best


class Lineage:
    """Who is whose parent in one process set, indexed by pid and by parent pid so that asking
    about one process costs the length of its ancestry and the number of its children.
    `update` keeps the index current as a few records change, appear or go."""

    def __init__(self, records: Mapping[str, ProcessRecord]) -> None:
        self.records: dict[str, ProcessRecord] = {}
        self.by_pid: dict[int, list[str]] = {}  # usually one key; two for a reused pid
        self.by_ppid: dict[int, set[str]] = {}
        self.parents: dict[str, str] = {}  # child → parent, as the tree view nests them
        for key, record in records.items():
            self._add(key, record)
        for key in self.records:
            self._place(key)

    def _place(self, key: str) -> None:
        """Work out the parent of `key` again (None: no longer shown)."""
        record = self.records.get(key)
        candidates = self.by_pid.get(record.ppid) if record is not None else None
        parent = (
            _parent_key(key, record, candidates, self.records)
            if record is not None and candidates is not None
            else None
        )
        if parent is None:
            self.parents.pop(key, None)
        else:
            self.parents[key] = parent

    def _add(self, key: str, record: ProcessRecord) -> None:
        self.records[key] = record
        same_pid = self.by_pid.get(record.pid)
        if same_pid is None:
            self.by_pid[record.pid] = [key]
        else:  # a reused pid: an ended instance and its successor
            same_pid.append(key)
        siblings = self.by_ppid.get(record.ppid)
        if siblings is None:
            self.by_ppid[record.ppid] = {key}
        else:
            siblings.add(key)

    def update(self, changes: Iterable[tuple[str, ProcessRecord | None]]) -> None:
        """Take the new record of each key (None: no longer shown). Parents are worked out
        again only where one can have changed: for the keys that came, went or moved, and
        for the children of their pids."""
        moved: set[str] = set()
        for key, record in changes:
            old = self.records.get(key)
            if (
                old is not None
                and record is not None
                and old.pid == record.pid
                and old.ppid == record.ppid
                and (old.ended_at is None) == (record.ended_at is None)
            ):
                self.records[key] = record  # the usual change: cpu, rss, …
                continue
            moved.add(key)
            for instance in (old, record):
                if instance is not None:
                    moved.update(self.by_ppid.get(instance.pid, ()))
            if old is not None:
                del self.records[key]
                same_pid = self.by_pid[old.pid]
                same_pid.remove(key)
                if not same_pid:
                    del self.by_pid[old.pid]
                siblings = self.by_ppid[old.ppid]
                siblings.discard(key)
                if not siblings:
                    del self.by_ppid[old.ppid]
            if record is not None:
                self._add(key, record)
        for key in moved:
            self._place(key)

    def ancestry(self, key: str) -> list[ProcessRecord]:
        records = self.records
        return _ancestry(key, records, _RecordsByPid(self.by_pid, records))

    def children(self, key: str) -> list[ProcessRecord]:
        record = self.records.get(key)
        if record is None:
            return []
        start, records = record.start_time, self.records
        kids = (records[kid] for kid in self.by_ppid.get(record.pid, ()) if kid != key)
        return sorted((kid for kid in kids if kid.start_time >= start), key=lambda r: r.pid)


class _RecordsByPid(Mapping[int, list[ProcessRecord]]):
    """The records of each pid, read through a pid → keys index."""

    def __init__(
        self, by_pid: Mapping[int, list[str]], records: Mapping[str, ProcessRecord]
    ) -> None:
        self._by_pid, self._records = by_pid, records

    def __getitem__(self, pid: int) -> list[ProcessRecord]:
        return [self._records[key] for key in self._by_pid[pid]]

    def __iter__(self) -> Iterator[int]:
        return iter(self._by_pid)

    def __len__(self) -> int:
        return len(self._by_pid)


def ancestry(key: str, records: Mapping[str, ProcessRecord]) -> list[ProcessRecord]:
    """Parent first, up to the root, among `records` (cycles and reused pids are cut)."""
    by_pid: dict[int, list[ProcessRecord]] = {}
    for record in records.values():
        by_pid.setdefault(record.pid, []).append(record)
    return _ancestry(key, records, by_pid)


def _ancestry(
    key: str, records: Mapping[str, ProcessRecord], by_pid: Mapping[int, list[ProcessRecord]]
) -> list[ProcessRecord]:
    chain: list[ProcessRecord] = []
    seen = {key}
    current = records.get(key)
    while current is not None:
        candidates = [
            r
            for r in by_pid.get(current.ppid, ())
            if r.start_time <= current.start_time and record_key(r) not in seen
        ]
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
    return sorted(
        (
            r
            for k, r in records.items()
            if r.ppid == record.pid and k != key and r.start_time >= record.start_time
        ),
        key=lambda r: r.pid,
    )


def tree_order(
    records: Mapping[str, ProcessRecord], sort: SortSpec, ordered_keys: Iterable[str] | None = None
) -> list[tuple[str, ProcessRecord, str]]:
    """Depth-first by parent, siblings in `sort` order; each row key and record with its
    tree guide ("├─", …). `ordered_keys`, when the caller has them, are the keys of `records`
    already in `sort` order."""
    keys, guides = tree_keys(records, sort, ordered_keys)
    return [(key, records[key], guides.get(key, "")) for key in keys]


def tree_keys(
    records: Mapping[str, ProcessRecord],
    sort: SortSpec,
    ordered_keys: Iterable[str] | None = None,
    parent_of: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """`tree_order` as the keys in order and the guide of every key that has one (roots have
    none): what the table needs, without a tuple per row. `parent_of`, when the caller keeps
    one for exactly `records` (a `Lineage`), saves working the parents out again."""
    if parent_of is None:
        parent_of = _parents(records)
    children_of: dict[str, list[str]] = {}
    roots: list[str] = []
    if ordered_keys is None:
        ordered_keys = [key for key, _ in sort_items(records.items(), sort)]
    # One global sort; bucketing keeps every sibling list in that order.
    parent_get, children_get = parent_of.get, children_of.get
    for key in ordered_keys:
        parent = parent_get(key)
        if parent is None:
            roots.append(key)
        else:
            kids = children_get(parent)
            if kids is None:
                children_of[parent] = [key]
            else:
                kids.append(key)
    order: list[str] = []
    guides: dict[str, str] = {}
    append = order.append
    # (key, its guide, the lead of its children's guides); the four strings of a sibling
    # group are made once per parent, not once per row.
    stack: list[tuple[str, str, str]] = [(key, "", "") for key in reversed(roots)]
    pop, push, extend = stack.pop, stack.append, stack.extend
    placed: set[str] = set()
    place = placed.add
    while stack:
        key, guide, lead = pop()
        if key in placed:
            continue
        place(key)
        append(key)
        if guide:
            guides[key] = guide
        kids = children_get(key)
        if kids:
            push((kids[-1], lead + "└─", lead + "  "))
            if len(kids) > 1:
                branch, below = lead + "├─", lead + "│ "
                extend([(kid, branch, below) for kid in kids[-2::-1]])
    return order, guides


def with_ancestors(
    matches: Iterable[Item], records: Mapping[str, ProcessRecord]
) -> dict[str, ProcessRecord]:
    """The matching records plus every ancestor of one, so a filtered tree keeps its shape."""
    parent_of = _parents(records)
    kept: dict[str, ProcessRecord] = {}
    for match, _ in matches:
        key: str | None = match
        while key is not None and key not in kept:
            kept[key] = records[key]
            key = parent_of.get(key)
    return kept
