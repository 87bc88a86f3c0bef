"""The process table as data: which processes are shown, in what order, in which state.

`ProcessView` turns the live `ProcessSet` into the ordered row keys the table shows and the
cells of any row it draws (built by `process_row.py`). It remembers which instances are new
(highlighted for a few seconds) and which ended (shown a few seconds more, then gone), and
keeps rows, sort keys and filter text per key so a refresh costs what changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from daemoneye.filters import (
    NO_TEXT,
    Predicate,
    ProcessFilter,
    RecordText,
    narrows,
    parse_filter,
    record_text,
    same_text,
)
from daemoneye.models import Connection, ProcessKey, ProcessRecord
from daemoneye.tui.logic.cells import Cell, RowView
from daemoneye.tui.logic.keys import parse_row_key
from daemoneye.tui.logic.lineage import Lineage, tree_keys, with_ancestors
from daemoneye.tui.logic.live import EMPTY_SET, ProcessSet
from daemoneye.tui.logic.process_row import plain_cells, process_cells, with_container
from daemoneye.tui.logic.sorting import NUMERIC_KEYS, SORT_KEYS, Item, SortSpec

NEW_FOR_S = 3.0  # how long a new process stays highlighted
ENDED_FOR_S = 3.0  # how long an ended process stays in the table
KTHREADD_PID = 2  # the kernel's thread spawner: every kernel thread is it or its child


def is_kernel_thread(record: ProcessRecord) -> bool:
    """kthreadd and its children, which have no command line (as htop tells them apart)."""
    return (record.pid == KTHREADD_PID or record.ppid == KTHREADD_PID) and not record.cmdline


def _not_kernel_thread(
    record: ProcessRecord, _text: RecordText, _alerted: Collection[ProcessKey]
) -> bool:
    return not is_kernel_thread(record)


def with_kernel_threads_hidden(process_filter: ProcessFilter) -> ProcessFilter:
    """`process_filter`, also refusing kernel threads (same text: it is not the user's)."""
    hide: Predicate = _not_kernel_thread
    return dataclasses.replace(process_filter, predicates=(*process_filter.predicates, hide))


class ProcessView:
    """The rows of the process table for the current set, filter, sort and mode.

    A refresh costs what changed: rows, filter matches and sort keys are kept per row key and
    recomputed only for the instances a new set changed, added or removed (found by identity,
    since records are never mutated); the order is then re-sorted on cached keys. Changing the
    sort, the filter or the mode, a reset, and the tree view recompute everything.
    """

    def __init__(self, *, new_for: float = NEW_FOR_S, ended_for: float = ENDED_FOR_S) -> None:
        self.new_for = new_for
        self.ended_for = ended_for
        self._sort = SortSpec()
        self._tree = False
        # What the user typed, and what rows must pass: theirs, plus hiding kernel threads.
        self._user_filter: ProcessFilter = parse_filter("")
        self._filter: ProcessFilter = self._user_filter
        self._hide_kernel_threads = False
        self._show_container = False
        self._set: ProcessSet = EMPTY_SET  # the live set last taken
        self._alerted: Mapping[str, str] = {}
        self._alerted_keys: frozenset[ProcessKey] = frozenset()
        # Open connections by instance, for `port:`/`remote:` terms (fetched while one is used).
        self._connections: Mapping[ProcessKey, tuple[Connection, ...]] = {}
        self._new_until: dict[str, float] = {}
        self._ended: dict[str, tuple[ProcessRecord, float]] = {}
        # Row caches by key: one for plain rows (the list, tree roots), one for rows under a
        # tree guide, so switching between list and tree finds both ready.
        self._rows: dict[str, tuple[ProcessRecord, str, str, str, tuple[Cell, ...]]] = {}
        self._guided: dict[str, tuple[ProcessRecord, str, str, str, tuple[Cell, ...]]] = {}
        self._plain: dict[str, tuple[ProcessRecord, tuple[Cell, ...]]] = {}
        self._lineage: Lineage | None = None
        # The lowered text of each record for text filter terms, kept across keystrokes.
        self._texts: dict[str, tuple[ProcessRecord, RecordText]] = {}
        # The incremental state: shown keys in order, and per key its sort key.
        self._everything = True  # the next refresh recomputes everything
        self._touched: set[str] = set()
        self._order: list[str] = []
        self._sort_key: dict[str, tuple[Any, int]] = {}
        # After order(): the keys whose cells may differ from the last order() (added, changed,
        # gone), or None when everything was recomputed.
        self.changed: set[str] | None = None
        self._tree_guides: dict[str, str] = {}
        self._now = 0.0  # the time of the last order(): rows are drawn as of then
        self._keys_sort: SortSpec | None = None  # the sort `_sort_key` was computed for
        self._narrowed = False  # the filter narrowed since the last order() (see filter)

    @property
    def records(self) -> Mapping[str, ProcessRecord]:
        """The live records, by row key."""
        return self._set.records

    # -- what is shown, and how -------------------------------------------------------------
    @property
    def sort(self) -> SortSpec:
        return self._sort

    @sort.setter
    def sort(self, sort: SortSpec) -> None:
        self._sort = sort
        self._everything = True

    @property
    def tree(self) -> bool:
        return self._tree

    @tree.setter
    def tree(self, tree: bool) -> None:
        self._tree = tree
        self._everything = True

    @property
    def filter(self) -> ProcessFilter:
        """The user's filter (hiding kernel threads is not part of it)."""
        return self._user_filter

    @filter.setter
    def filter(self, process_filter: ProcessFilter) -> None:
        """A filter that narrows the last one (a keystroke at the end of the line, mostly)
        is looked for among the rows shown now, which are already sorted: no re-sort. That
        holds only while the shown rows are current (nothing touched since) in the list."""
        self._narrowed = (
            not self._tree
            and not self._everything
            and not self._touched
            and narrows(self._user_filter.text, process_filter.text)
        )
        self._user_filter = process_filter
        self._filter = self._effective_filter()
        self._everything = self._everything or not self._narrowed

    @property
    def hide_kernel_threads(self) -> bool:
        return self._hide_kernel_threads

    @hide_kernel_threads.setter
    def hide_kernel_threads(self, hide: bool) -> None:
        self._hide_kernel_threads = hide
        self._filter = self._effective_filter()
        self._everything = True

    @property
    def show_container(self) -> bool:
        """Whether rows carry the CONTAINER cell (process_row.process_columns says where)."""
        return self._show_container

    @show_container.setter
    def show_container(self, show: bool) -> None:
        if show != self._show_container:
            self._show_container = show
            self._rows.clear()
            self._guided.clear()
            self._everything = True

    def _effective_filter(self) -> ProcessFilter:
        user = self._user_filter
        return with_kernel_threads_hidden(user) if self._hide_kernel_threads else user

    @property
    def alerted(self) -> Mapping[str, str]:
        """The worst open alert severity per row key."""
        return self._alerted

    @alerted.setter
    def alerted(self, worst: Mapping[str, str]) -> None:
        before = self._alerted
        self._touched.update(
            key for key in before.keys() | worst.keys() if before.get(key) != worst.get(key)
        )
        self._alerted = worst
        self._alerted_keys = frozenset(parse_row_key(key) for key in worst)

    @property
    def connections(self) -> Mapping[ProcessKey, tuple[Connection, ...]]:
        return self._connections

    @connections.setter
    def connections(self, by_key: Mapping[ProcessKey, tuple[Connection, ...]]) -> None:
        """The open connections by instance; a filter that reads them is applied again."""
        self._connections = by_key
        if self._filter.connection_terms:
            self._everything = True

    # -- the live set -------------------------------------------------------------------------
    def update(self, process_set: ProcessSet, now: float) -> None:
        """Take a new live set; note what appeared (new) and what disappeared (ended).
        Costs the number of changed keys when the set can say which changed since the last."""
        old, new = self.records, process_set.records
        baseline = process_set.generation != self._set.generation
        hint = None if baseline else process_set.changed_since(self._set)
        if hint is None:
            added: Iterable[str] = new.keys() - old.keys()
            gone: Iterable[str] = old.keys() - new.keys()
            get = old.get
            changed = [key for key, record in new.items() if get(key) is not record]
        else:
            added = [key for key in hint if key in new and key not in old]
            gone = [key for key in hint if key in old and key not in new]
            changed = [key for key in hint if key in new and old.get(key) is not new[key]]
        if not baseline:
            until = now + self.new_for
            for key in added:
                self._new_until[key] = until
        until = now + self.ended_for
        for key in gone:
            self._ended[key] = (old[key], until)
            self._new_until.pop(key, None)
        if self._ended:
            for key in new.keys() & self._ended.keys() if hint is None else changed:
                self._ended.pop(key, None)
        self._set = process_set
        if baseline:
            self._everything = True
            self._keys_sort = None
            self._lineage = None
        else:
            # `changed` holds the added keys too: a key not in `old` is never `new[key]`.
            self._touched.update(changed)
            self._touched.update(gone)
            self._update_lineage(changed)
            self._update_lineage(gone)
            self._forget_rows(changed)

    def _forget_rows(self, keys: Iterable[str], *, text: bool = False) -> None:
        """Drop the cached rows of `keys` (their records changed, or they are gone): a table
        keeps the cells it drew itself, so these caches only need the rows that could be
        drawn again unchanged, and would otherwise fill with a row per process ever shown."""
        rows, guided, plain, texts = self._rows, self._guided, self._plain, self._texts
        for key in keys:
            rows.pop(key, None)
            guided.pop(key, None)
            plain.pop(key, None)
            if text:
                texts.pop(key, None)

    def _update_lineage(self, keys: Iterable[str]) -> None:
        if self._lineage is not None:
            self._lineage.update((key, self.record(key)) for key in keys)

    @property
    def lineage(self) -> Lineage:
        """Ancestry and children among the shown processes (built on first use per set)."""
        if self._lineage is None:
            self._lineage = Lineage(self.shown_records())
        return self._lineage

    def expire(self, now: float) -> bool:
        """Forget highlights and ended rows whose time is up; True when a row changes."""
        stale_new = [key for key, until in self._new_until.items() if until <= now]
        for key in stale_new:
            del self._new_until[key]
        stale_ended = [key for key, (_, until) in self._ended.items() if until <= now]
        for key in stale_ended:
            del self._ended[key]
        self._update_lineage(stale_ended)
        self._forget_rows(stale_ended, text=True)
        self._touched.update(stale_new)
        self._touched.update(stale_ended)
        return bool(stale_new or stale_ended)

    def status(self, key: str) -> str:
        """ "ended", "new" or ""."""
        if key in self._ended:
            return "ended"
        return "new" if key in self._new_until else ""

    def record(self, key: str) -> ProcessRecord | None:
        """The live record, or the last record of a recently ended instance."""
        record = self.records.get(key)
        if record is None and key in self._ended:
            record = self._ended[key][0]
        return record

    @property
    def ended_count(self) -> int:
        """Instances that ended and are still shown."""
        return len(self._ended)

    def summary(self, shown: int) -> str:
        """ "342 processes · 2 just ended", or "12 shown of 342 · 1 just ended" when filtered
        (`shown` rows, the just-ended ones among them counted apart: they are not live)."""
        live = len(self.records)
        if self._filter.empty:
            ended = self.ended_count
        else:
            ended = sum(1 for key, (record, _) in self._ended.items() if self._matches(key, record))
        just_ended = f" · {ended} just ended" if ended else ""
        if self._filter.empty:
            return f"{live} processes{just_ended}"
        return f"{max(0, shown - ended)} shown of {live}{just_ended}"

    def shown_records(self) -> Mapping[str, ProcessRecord]:
        """Live records plus the recently ended ones."""
        if not self._ended:
            return self.records
        shown = dict(self.records)
        for key, (record, _) in self._ended.items():
            shown.setdefault(key, record)
        return shown

    # -- rows ---------------------------------------------------------------------------------
    def order(self, now: float) -> list[str]:
        """The shown row keys in display order, after expiring what is due at `now`; sets
        `changed`. The list returned is never changed afterwards."""
        self.expire(now)
        self._now = now
        if self._tree:
            everything, guides = self._everything, self._tree_guides
            order = self._tree_order()
            self.changed = None if everything else self._tree_changed(guides)
        elif self._everything or (self._narrowed and self._touched):
            # (rows that changed since the filter narrowed may belong anywhere in the order)
            order = self._all_order()
            self.changed = None
        elif self._narrowed:
            order = self._narrowed_order()
            self.changed = None
        else:
            order = self._changed_order()
            self.changed = set(self._touched)
        self._touched.clear()
        self._everything = self._narrowed = False
        if max(len(self._rows), len(self._texts)) > 2 * len(self.records) + 64:
            shown = self.shown_records()
            self._rows = {k: v for k, v in self._rows.items() if k in shown}
            self._guided = {k: v for k, v in self._guided.items() if k in shown}
            self._plain = {k: v for k, v in self._plain.items() if k in shown}
            self._texts = {k: v for k, v in self._texts.items() if k in shown}
        return order

    def cells(self, key: str) -> tuple[Cell, ...]:
        """The cells of one shown row as of the last `order()`; () for a key no longer
        known (a table may ask for a row of an order it has not been given anew yet)."""
        record = self.record(key)
        if record is None:
            return ()
        return self._row(key, record, self._tree_guides.get(key, ""), self._now)

    def rows(self, now: float) -> list[RowView]:
        """Every shown row with its cells, in display order: `order()` and `cells()` at
        once, for callers that want the whole table (tests, exports)."""
        return [RowView(key, self.cells(key)) for key in self.order(now)]

    def _sort_key_of(self) -> Callable[[ProcessRecord], tuple[Any, int]]:
        """A key that orders ascending; `_reverse` says whether to reverse it. Ties always go
        by ascending pid."""
        numeric = NUMERIC_KEYS.get(self._sort.column)
        if numeric is not None:
            sign = -1 if self._sort.descending else 1
            return lambda r: (sign * numeric(r), r.pid)
        value = SORT_KEYS[self._sort.column]
        if self._sort.descending:  # reversed below; -pid keeps ties in ascending pid order
            return lambda r: (value(r), -r.pid)
        return lambda r: (value(r), r.pid)

    @property
    def _reverse(self) -> bool:
        return self._sort.descending and self._sort.column not in NUMERIC_KEYS

    def _matches(self, key: str, record: ProcessRecord) -> bool:
        process_filter = self._filter
        if process_filter.empty:
            return True
        text = self._text(key, record) if process_filter.uses_text else None
        return process_filter.matches(record, self._alerted_keys, text, self._connections)

    def prepare_filtering(self) -> None:
        """Lower the text of every shown process now (the user opened the filter line), so
        the first keystroke costs no more than the next."""
        text = self._text
        for key, record in self.shown_records().items():
            text(key, record)

    def _text(self, key: str, record: ProcessRecord) -> RecordText:
        cached = self._texts.get(key)
        if cached is not None and (cached[0] is record or same_text(cached[0], record)):
            return cached[1]
        text = record_text(record)
        self._texts[key] = (record, text)
        return text

    def _tree_order(self) -> list[str]:
        """The tree, laid out afresh on every refresh (a change of CPU can reorder siblings
        anywhere), from the sorted order of its processes, which is kept incrementally when
        nothing is filtered."""
        shown = self.shown_records()
        if self._filter.empty:
            ordered = self._all_order() if self._everything else self._changed_order()
            keys, self._tree_guides = tree_keys(shown, self._sort, ordered, self.lineage.parents)
            return keys
        matches = self._matches
        subset = with_ancestors([item for item in shown.items() if matches(*item)], shown)
        self._order = []  # not the list's order (clearing the filter recomputes it)
        keys, self._tree_guides = tree_keys(subset, self._sort, self._sorted_keys(subset))
        return keys

    def _tree_changed(self, before: Mapping[str, str]) -> set[str]:
        """The keys whose rows may differ after a tree refresh: the touched ones, and those
        whose guide changed (a row's guide is part of its cells; moving it is not)."""
        after = self._tree_guides
        changed = set(self._touched)
        changed.update(key for key, guide in after.items() if before.get(key) != guide)
        changed.update(before.keys() - after.keys())
        return changed

    def _all_order(self) -> list[str]:
        shown = self.shown_records()
        self._tree_guides = {}
        if self._filter.empty:
            self._order = self._sorted_keys(shown)
        else:
            self._order = self._sorted_keys(
                {key: shown[key] for key in self._matching(shown.items())}
            )
        return self._order

    def _narrowed_order(self) -> list[str]:
        """The shown rows that still match, in the order they are shown in."""
        shown = self.shown_records()
        self._order = self._matching((key, shown[key]) for key in self._order if key in shown)
        return self._order

    def _matching(self, items: Iterable[Item]) -> list[str]:
        """The keys of `items` that the filter matches, in their order: `_matches` for each,
        written out, as it runs for every process at each keystroke in the filter line."""
        predicates, alerted = self._filter.predicates, self._alerted_keys
        texts, text_of = self._texts, self._text
        uses_text = self._filter.uses_text
        holds = self._filter.holds if self._filter.connection_terms else None
        connections = self._connections
        text = NO_TEXT
        keys: list[str] = []
        for key, record in items:
            if uses_text:
                cached = texts.get(key)
                text = (
                    cached[1]
                    if cached is not None and cached[0] is record
                    else text_of(key, record)
                )
            for predicate in predicates:
                if not predicate(record, text, alerted):
                    break
            else:
                if holds is None or holds(record.key, connections):
                    keys.append(key)
        return keys

    def _sorted_keys(self, records: Mapping[str, ProcessRecord]) -> list[str]:
        """The keys of `records` in sort order, on the cached sort keys where still valid."""
        keys, touched = self._sort_key, self._touched
        sort_key = self._sort_key_of()
        if self._keys_sort != self._sort or len(keys) > 2 * len(records) + 64:
            keys = dict(zip(records, map(sort_key, records.values()), strict=True))
        else:
            for key in touched:  # a changed key not sorted now must not keep its old one
                if key not in records:
                    keys.pop(key, None)
            for key, record in records.items():
                if key in touched or key not in keys:
                    keys[key] = sort_key(record)
        self._sort_key, self._keys_sort = keys, self._sort
        return sorted(records, key=keys.__getitem__, reverse=self._reverse)

    def _changed_order(self) -> list[str]:
        touched = self._touched
        if not touched:
            return self._order
        sort_key, keys = self._sort_key_of(), self._sort_key
        order = [key for key in self._order if key not in touched]
        for key in touched:
            keys.pop(key, None)
            record = self.record(key)
            if record is not None and self._matches(key, record):
                keys[key] = sort_key(record)
                order.append(key)
        order.sort(key=keys.__getitem__, reverse=self._reverse)
        self._order = order
        return order

    def _row(self, key: str, record: ProcessRecord, guide: str, now: float) -> tuple[Cell, ...]:
        status = "ended" if key in self._ended else "new" if key in self._new_until else ""
        severity = self._alerted.get(key, "")
        cache = self._guided if guide else self._rows
        cached = cache.get(key)
        if (
            cached is not None
            and cached[0] is record
            and cached[1] == status
            and cached[2] == guide
            and cached[3] == severity
        ):
            return cached[4]
        plain = self._plain.get(key)
        if plain is None or plain[0] is not record:
            plain = (record, plain_cells(record, now))
            self._plain[key] = plain
        row = process_cells(record, status, guide, severity, plain[1])
        if self._show_container:
            row = with_container(row, record, status)
        cache[key] = (record, status, guide, severity, row)
        return row
