"""The live process set as the feed worker keeps it: a reset, then deltas applied in order.

The worker posts a `ProcessSet` — an immutable view of the whole set — after every change. A
newer `ProcessSet` makes an older one redundant, which is what lets `ProcessesChanged` replace
pending messages (`can_replace`) without losing a delta. Records are replaced, never mutated, so
the table can tell an unchanged process from a changed one by identity. Each set also carries the
keys the last few deltas touched, so a consumer that saw an older set of the same generation can
ask what changed since (`changed_since`) instead of comparing 10,000 records.
"""

from __future__ import annotations

import dataclasses
import operator
from collections import deque
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from daemoneye.models import ProcessChange, ProcessesDelta, ProcessRecord
from daemoneye.tui.logic.keys import record_key, row_key, row_key_of

_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessRecord))
_VALUES = operator.attrgetter(*_FIELDS)  # every field, in order, in one call
_POSITION = {name: index for index, name in enumerate(_FIELDS)}
# Fields a ProcessChange may carry; identity fields are never changed in place.
_CHANGEABLE = frozenset(_FIELDS) - {"pid", "start_time"}


@dataclass(frozen=True, slots=True)
class ProcessSet:
    """The whole live set at one moment, keyed by row key. `generation` grows on every reset
    (connect, resync)."""

    records: Mapping[str, ProcessRecord]
    generation: int
    seq: int
    version: int = 0  # grows by one per applied delta within a generation
    # The row keys each of the last few deltas added, changed or removed, oldest first; the
    # last entry is the delta that made this set.
    recent: tuple[frozenset[str], ...] = ()

    def changed_since(self, older: ProcessSet) -> Set[str] | None:
        """Every row key added, changed or removed between `older` and this set; None when
        that is not known (another generation, or further back than the log reaches)."""
        if older is self:
            return frozenset()
        gap = self.version - older.version
        if older.generation != self.generation or not 0 < gap <= len(self.recent):
            return None
        if gap == 1:
            return self.recent[-1]
        keys: set[str] = set()
        for part in self.recent[-gap:]:
            keys |= part
        return keys


EMPTY_SET = ProcessSet(MappingProxyType({}), 0, 0)
CHANGE_LOG = 16  # deltas a set remembers: how many replaced messages a consumer may skip


class LiveProcesses:
    """The worker's copy of the daemon's live process table."""

    def __init__(self) -> None:
        self._records: dict[str, ProcessRecord] = {}
        self._generation = 0
        self._seq = 0
        self._version = 0
        self._recent: deque[frozenset[str]] = deque(maxlen=CHANGE_LOG)

    def __len__(self) -> int:
        return len(self._records)

    def reset(self, records: Iterable[ProcessRecord]) -> None:
        """Replace everything (a snapshot after connecting, or after a resync)."""
        self._records = {record_key(r): r for r in records if r.ended_at is None}
        self._generation += 1
        self._seq = 0
        self._version = 0
        self._recent.clear()

    def apply(self, delta: ProcessesDelta) -> None:
        """Apply one delta. Changes to unknown instances are ignored: a resync fixes them."""
        records = self._records
        touched: set[str] = set()
        for instance in delta.removed:
            key = row_key(instance)
            if records.pop(key, None) is not None:
                touched.add(key)
        for record in delta.added:
            key = record_key(record)
            if record.ended_at is None:
                records[key] = record
                touched.add(key)
            elif records.pop(key, None) is not None:
                touched.add(key)
        for change in delta.changed:
            key = row_key_of(change.pid, change.start_time)
            current = records.get(key)
            if current is not None:
                updated = changed_record(current, change)
                if updated is not current:
                    records[key] = updated
                    touched.add(key)
        self._seq = delta.seq
        self._version += 1
        self._recent.append(frozenset(touched))

    def snapshot(self) -> ProcessSet:
        return ProcessSet(
            MappingProxyType(dict(self._records)),
            self._generation,
            self._seq,
            self._version,
            tuple(self._recent),
        )


def changed_record(record: ProcessRecord, change: ProcessChange) -> ProcessRecord:
    """`record` with the changed fields of `change` (unknown field names are skipped).
    Built positionally: `dataclasses.replace` costs four times as much per call."""
    values: list[Any] | None = None
    for name, value in change.fields:
        if name in _CHANGEABLE:
            if values is None:
                values = list(_VALUES(record))
            values[_POSITION[name]] = (
                tuple(value) if name == "cmdline" and isinstance(value, list) else value
            )
    return record if values is None else ProcessRecord(*values)
