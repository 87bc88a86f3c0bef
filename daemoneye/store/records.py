"""Process lookups over a read-only store: live processes, the instances behind a pid, ancestry
and children. Plain functions, so every client (CLI now, IPC later) shares one definition of
"parent" and "child" under pid reuse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from daemoneye.models import ProcessKey, ProcessRecord

# Deep enough for any real process tree; stops a loop should the data ever contain one.
MAX_ANCESTRY_DEPTH = 256


class ProcessSource(Protocol):
    """What these lookups need from a store connection (ReadOnlyStore provides it)."""

    def fetch_processes(
        self,
        where: str,
        params: Sequence[int | float | str | bytes | None] = (),
        *,
        order_by: str = "id",
    ) -> list[ProcessRecord]: ...


def live_records(store: ProcessSource) -> list[ProcessRecord]:
    """Every process the store holds as running, by pid."""
    return store.fetch_processes("ended_at IS NULL", order_by="pid, start_time")


def records_for_pid(store: ProcessSource, pid: int) -> list[ProcessRecord]:
    """Every instance that used `pid` in the retention window: the live one first, then the
    others newest first."""
    return store.fetch_processes(
        "pid = ?", (pid,), order_by="ended_at IS NULL DESC, start_time DESC"
    )


def parent_of(store: ProcessSource, record: ProcessRecord) -> ProcessRecord | None:
    """The instance that was `record.ppid` when `record` started: the newest one with that pid
    that started no later than the child. A reused pid that started after the child is not its
    parent."""
    if record.ppid <= 0 or record.ppid == record.pid:
        return None
    candidates = store.fetch_processes(
        "pid = ? AND start_time <= ?",
        (record.ppid, record.start_time),
        order_by="start_time DESC LIMIT 1",
    )
    return candidates[0] if candidates else None


def ancestry(store: ProcessSource, record: ProcessRecord) -> list[ProcessRecord]:
    """Parent, grandparent, … as far as the store knows them."""
    chain: list[ProcessRecord] = []
    seen: set[ProcessKey] = {record.key}
    current = record
    while len(chain) < MAX_ANCESTRY_DEPTH:
        parent = parent_of(store, current)
        if parent is None or parent.key in seen:
            break
        chain.append(parent)
        seen.add(parent.key)
        current = parent
    return chain


def children_of(
    store: ProcessSource, record: ProcessRecord, *, include_ended: bool = False
) -> list[ProcessRecord]:
    """Processes started by `record` (same ppid, started during its lifetime), oldest first;
    only the running ones unless `include_ended`."""
    where = "ppid = ? AND start_time >= ?"
    params: list[int | float | str | bytes | None] = [record.pid, record.start_time]
    if record.ended_at is not None:
        where += " AND start_time <= ?"
        params.append(record.ended_at)
    if not include_ended:
        where += " AND ended_at IS NULL"
    return store.fetch_processes(where, params, order_by="start_time, pid")
