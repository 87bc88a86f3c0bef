"""The live process set as the feed worker keeps it: a reset, then deltas applied in order.

The worker posts a `ProcessSet` — an immutable view of the whole set — after every change. A
newer `ProcessSet` makes an older one redundant, which is what lets `ProcessesChanged` replace
pending messages (`can_replace`) without losing a delta. Records are replaced, never mutated, so
the table can tell an unchanged process from a changed one by identity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from daemoneye.models import ProcessChange, ProcessesDelta, ProcessRecord
from daemoneye.tui.logic.keys import record_key, row_key, row_key_of

_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessRecord))
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


EMPTY_SET = ProcessSet(MappingProxyType({}), 0, 0)


class LiveProcesses:
    """The worker's copy of the daemon's live process table."""

    def __init__(self) -> None:
        self._records: dict[str, ProcessRecord] = {}
        self._generation = 0
        self._seq = 0

    def __len__(self) -> int:
        return len(self._records)

    def reset(self, records: Iterable[ProcessRecord]) -> None:
        """Replace everything (a snapshot after connecting, or after a resync)."""
        self._records = {record_key(r): r for r in records if r.ended_at is None}
        self._generation += 1
        self._seq = 0

    def apply(self, delta: ProcessesDelta) -> None:
        """Apply one delta. Changes to unknown instances are ignored: a resync fixes them."""
        records = self._records
        for instance in delta.removed:
            records.pop(row_key(instance), None)
        for record in delta.added:
            if record.ended_at is None:
                records[record_key(record)] = record
            else:
                records.pop(record_key(record), None)
        for change in delta.changed:
            key = row_key_of(change.pid, change.start_time)
            current = records.get(key)
            if current is not None:
                records[key] = changed_record(current, change)
        self._seq = delta.seq

    def snapshot(self) -> ProcessSet:
        return ProcessSet(MappingProxyType(dict(self._records)), self._generation, self._seq)


def changed_record(record: ProcessRecord, change: ProcessChange) -> ProcessRecord:
    """`record` with the changed fields of `change` (unknown field names are skipped).
    Built positionally: `dataclasses.replace` costs four times as much per call."""
    values: list[Any] | None = None
    for name, value in change.fields:
        if name in _CHANGEABLE:
            if values is None:
                values = [getattr(record, field) for field in _FIELDS]
            values[_POSITION[name]] = tuple(value) if name == "cmdline" and isinstance(
                value, list) else value
    return record if values is None else ProcessRecord(*values)
