"""The live process table as IPC clients see it: the collector's snapshot after each tick, the
delta from the previous one (computed once per tick, shared by every subscriber), and each
record's JSON encoding, cached so that snapshots and lists are joins of ready-made bytes.
Records are encoded when a client first needs them (a delta for subscribers, a snapshot, a
page): a daemon nobody watches keeps no second copy of its table as JSON (8 MiB at 10,000
processes) and spends nothing on it per exec. The first subscriber's snapshot is encoded off
the event loop (`encode_missing`, then `adopt`), so other clients are not held up by it.

`compute_update` is pure and runs on the collector's worker thread (where `snapshot()` must be
called); `LiveTable.apply` folds its result in on the event loop, which owns the table.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from daemoneye.filters import ProcessFilter
from daemoneye.ipc import protocol
from daemoneye.ipc.codec import to_wire
from daemoneye.models import (
    Connection,
    ProcessChange,
    ProcessesDelta,
    ProcessKey,
    ProcessRecord,
)
from daemoneye.store.records import MAX_ANCESTRY_DEPTH

RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessRecord))
# A change to one of these is sent as the whole record in `added` (it is not a scalar; it
# changes with an execve, together with exe).
_WHOLE_RECORD_FIELDS = frozenset({"cmdline"})


def encode_record(record: ProcessRecord) -> bytes:
    return protocol.dumps(to_wire(record))


@dataclass(frozen=True, slots=True)
class TableUpdate:
    """One tick's worth of change, ready to be applied on the event loop."""

    records: dict[ProcessKey, ProcessRecord]  # the new live table (never mutated afterwards)
    delta: ProcessesDelta
    # fresh encodings of every added or changed record; empty when computed without lines
    encoded: dict[ProcessKey, bytes]
    # `processes.delta` notifications: empty when nothing changed, or nobody subscribed
    delta_lines: tuple[bytes, ...]
    lines_wanted: bool = True

    @property
    def changed(self) -> bool:
        delta = self.delta
        return bool(delta.added or delta.changed or delta.removed)

    def with_lines(self) -> TableUpdate:
        """This update with its notifications, for a subscriber who came after it was
        computed without them."""
        if self.lines_wanted or not self.changed:
            return self
        encoded = {r.key: encode_record(r) for r in self.delta.added}
        for change in self.delta.changed:
            key = ProcessKey(change.pid, change.start_time)
            encoded[key] = encode_record(self.records[key])
        return dataclasses.replace(
            self, encoded=encoded, delta_lines=delta_lines(self.delta, encoded), lines_wanted=True
        )


def compute_update(
    previous: Mapping[ProcessKey, ProcessRecord],
    current: dict[ProcessKey, ProcessRecord],
    seq: int,
    *,
    lines: bool = True,
) -> TableUpdate:
    """The difference between two snapshots. The scanner rebuilds a record only when one of
    its fields changed, so an unchanged process costs one identity check. With `lines`
    (someone subscribed to processes) the changed records are encoded and the delta's
    notifications built; without, nothing is encoded."""
    added: list[ProcessRecord] = []
    changed: list[ProcessChange] = []
    encoded: dict[ProcessKey, bytes] = {}
    for key, record in current.items():
        old = previous.get(key)
        if old is record:
            continue
        if old is None:
            added.append(record)
            if lines:
                encoded[key] = encode_record(record)
            continue
        fields = tuple(
            (name, getattr(record, name))
            for name in RECORD_FIELDS
            if getattr(record, name) != getattr(old, name)
        )
        if not fields:
            continue
        if lines:
            encoded[key] = encode_record(record)
        if any(name in _WHOLE_RECORD_FIELDS for name, _ in fields):
            added.append(record)
        else:
            changed.append(ProcessChange(key.pid, key.start_time, fields))
    removed = tuple(key for key in previous if key not in current)
    delta = ProcessesDelta(seq=seq, added=tuple(added), changed=tuple(changed), removed=removed)
    notifications = delta_lines(delta, encoded) if lines and (added or changed or removed) else ()
    return TableUpdate(current, delta, encoded, notifications, lines)


def encode_missing(
    missing: Sequence[tuple[ProcessKey, ProcessRecord]],
) -> list[tuple[ProcessKey, ProcessRecord, bytes]]:
    """The encodings of `missing` (from `LiveTable.missing`): pure, for a worker thread."""
    return [(key, record, encode_record(record)) for key, record in missing]


def delta_lines(delta: ProcessesDelta, encoded: Mapping[ProcessKey, bytes]) -> tuple[bytes, ...]:
    """`processes.delta` notifications for `delta`, split so each stays under the message
    limit; every part carries the same seq and is a valid delta on its own."""
    items: list[tuple[str, bytes]] = [("added", encoded[r.key]) for r in delta.added]
    items += [("changed", protocol.dumps(to_wire(c))) for c in delta.changed]
    items += [("removed", protocol.dumps(to_wire(k))) for k in delta.removed]
    lines: list[bytes] = []
    # Split by running size over the tagged items (kept in order: added, changed, removed).
    parts: list[dict[str, list[bytes]]] = [{"added": [], "changed": [], "removed": []}]
    size = 0
    for kind, item in items:
        if size and size + len(item) + 1 > protocol.CHUNK_BYTES:
            parts.append({"added": [], "changed": [], "removed": []})
            size = 0
        parts[-1][kind].append(item)
        size += len(item) + 1
    seq = str(delta.seq).encode()
    for part in parts:
        params = (
            b'{"seq":'
            + seq
            + b',"added":'
            + protocol.json_list(part["added"])
            + b',"changed":'
            + protocol.json_list(part["changed"])
            + b',"removed":'
            + protocol.json_list(part["removed"])
            + b"}"
        )
        lines.append(protocol.raw_notification(protocol.NOTIFY_PROCESSES_DELTA, params))
    return tuple(lines)


class LiveTable:
    """The event loop's copy of the live processes, with the indexes lookups need."""

    def __init__(self) -> None:
        self.records: dict[ProcessKey, ProcessRecord] = {}
        self._encoded: dict[ProcessKey, bytes] = {}  # filled on demand: see `encoded`
        self.by_pid: dict[int, ProcessKey] = {}
        self.children: dict[int, set[ProcessKey]] = {}
        self.seq = 0
        self._sorted: list[ProcessKey] | None = None
        self._snapshot: list[bytes] | None = None

    def apply(self, update: TableUpdate) -> None:
        previous = self.records
        delta = update.delta
        cached = self._encoded
        for key in delta.removed:
            self._unindex(previous[key])
            cached.pop(key, None)
        for record in delta.added:
            old = previous.get(record.key)
            if old is not None:
                self._unindex(old)
            self._index(record)
            cached.pop(record.key, None)
        for change in delta.changed:
            key = ProcessKey(change.pid, change.start_time)
            cached.pop(key, None)
            if any(name == "ppid" for name, _ in change.fields):
                self._unindex(previous[key])
                self._index(update.records[key])
        cached.update(update.encoded)
        self.records = update.records
        if update.changed:
            self.seq = delta.seq
        if delta.added or delta.removed:
            self._sorted = None
        self._snapshot = None

    def _index(self, record: ProcessRecord) -> None:
        key = record.key  # one object in both indexes (a key is made anew at each `.key`)
        self.by_pid[record.pid] = key
        self.children.setdefault(record.ppid, set()).add(key)

    def _unindex(self, record: ProcessRecord) -> None:
        if self.by_pid.get(record.pid) == record.key:
            del self.by_pid[record.pid]
        siblings = self.children.get(record.ppid)
        if siblings is not None:
            siblings.discard(record.key)
            if not siblings:
                del self.children[record.ppid]

    # -- what clients ask for -------------------------------------------------------------
    def encoded(self, key: ProcessKey) -> bytes:
        """The live record's JSON, encoded now if no client needed it since it changed."""
        found = self._encoded.get(key)
        if found is None:
            found = self._encoded[key] = encode_record(self.records[key])
        return found

    def missing(self) -> list[tuple[ProcessKey, ProcessRecord]]:
        """The live records no client needed since they last changed (none encoded)."""
        cached = self._encoded
        return [(key, record) for key, record in self.records.items() if key not in cached]

    def adopt(self, encodings: Sequence[tuple[ProcessKey, ProcessRecord, bytes]]) -> None:
        """Take encodings made off the loop, each only if its record is still the live one
        (the table may have moved on while they were made)."""
        records, cached = self.records, self._encoded
        for key, record, encoded in encodings:
            if records.get(key) is record:
                cached.setdefault(key, encoded)

    def snapshot_lines(self) -> list[bytes]:
        """`processes.snapshot` notifications of the whole table at `seq` (cached per seq)."""
        if self._snapshot is None:
            runs = protocol.chunks([self.encoded(key) for key in self.records])
            seq = str(self.seq).encode()
            total = str(len(runs)).encode()
            self._snapshot = [
                protocol.raw_notification(
                    protocol.NOTIFY_PROCESSES_SNAPSHOT,
                    b'{"seq":'
                    + seq
                    + b',"part":'
                    + str(number).encode()
                    + b',"parts":'
                    + total
                    + b',"processes":'
                    + protocol.json_list(run)
                    + b"}",
                )
                for number, run in enumerate(runs, start=1)
            ]
        return self._snapshot

    def sorted_keys(self) -> list[ProcessKey]:
        if self._sorted is None:
            self._sorted = sorted(self.records, key=lambda k: (k.pid, k.start_time))
        return self._sorted

    def page(
        self,
        process_filter: ProcessFilter,
        after: tuple[int, float] | None,
        limit: int,
        alerted: Collection[ProcessKey] = frozenset(),
        connections: Mapping[ProcessKey, tuple[Connection, ...]] | None = None,
    ) -> bytes:
        """One page of `processes.list` as encoded JSON (a ProcessesPage); `connections`
        (open, by instance) answer `port:` and `remote:` terms."""
        keys = self.sorted_keys()
        records = self.records
        matching = (
            keys
            if process_filter.empty
            else [
                key
                for key in keys
                if process_filter.matches(records[key], alerted, connections=connections)
            ]
        )
        total = len(matching)
        start = (
            0
            if after is None
            else bisect.bisect_right(matching, after, key=lambda k: (k.pid, k.start_time))
        )
        chosen: list[bytes] = []
        size = 0
        next_key: ProcessKey | None = None
        for index in range(start, len(matching)):
            if len(chosen) >= limit:
                next_key = matching[index - 1]
                break
            item = self.encoded(matching[index])
            if chosen and size + len(item) + 1 > protocol.CHUNK_BYTES:
                next_key = matching[index - 1]
                break
            chosen.append(item)
            size += len(item) + 1
        next_json = (
            b"null" if next_key is None else protocol.dumps([next_key.pid, next_key.start_time])
        )
        return (
            b'{"processes":'
            + protocol.json_list(chosen)
            + b',"total":'
            + str(total).encode()
            + b',"next":'
            + next_json
            + b"}"
        )

    def live_detail(
        self, pid: int, start_time: float | None
    ) -> tuple[ProcessRecord, list[ProcessRecord], list[ProcessRecord]] | None:
        """(record, ancestry parent first, live children) of a live instance, or None."""
        key = self.by_pid.get(pid)
        if key is None or (start_time is not None and key.start_time != start_time):
            return None
        record = self.records[key]
        chain: list[ProcessRecord] = []
        seen = {key}
        current = record
        while len(chain) < MAX_ANCESTRY_DEPTH:
            if current.ppid <= 0 or current.ppid == current.pid:
                break
            parent_key = self.by_pid.get(current.ppid)
            # A pid reused after the child started is not its parent.
            if (
                parent_key is None
                or parent_key.start_time > current.start_time
                or parent_key in seen
            ):
                break
            current = self.records[parent_key]
            chain.append(current)
            seen.add(parent_key)
        children = sorted(
            (self.records[k] for k in self.children.get(pid, ()) if k.start_time >= key.start_time),
            key=lambda r: (r.start_time, r.pid),
        )
        return record, chain, children

    def chain_is_complete(self, chain: Sequence[ProcessRecord], record: ProcessRecord) -> bool:
        """Whether the live ancestry reached the root (else the store may know more)."""
        last = chain[-1] if chain else record
        return last.ppid <= 0 or last.ppid == last.pid
