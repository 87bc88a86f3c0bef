"""A task pass's records as the scanner reads them (collector/task_iter.py): each process's
context block found by its pid, with the start time that names its instance; processes started
alike share one decoded block; a record cut short is not read."""

from __future__ import annotations

import struct

from daemoneye.collector import kernel_context
from daemoneye.collector.task_iter import RECORD_BYTES, TaskSnapshot

TICK_NS = 10_000_000  # 100 ticks a second


def record(
    tgid: int, start_ticks: int, pid_ns: int = 4026531836, ids: tuple[int, int] | None = (7, 8)
) -> bytes:
    """One record as the program writes it: tgid, pid, start time, real uid and gid (with
    whether they were read), then a context block whose only value is the pid namespace."""
    block = bytearray(kernel_context.BYTES)
    struct.pack_into("<I", block, 8, pid_ns)
    struct.pack_into("<I", block, 28, kernel_context.HAS_PID_NS)
    uid, gid = ids or (0, 0)
    head = struct.pack("<IIQIII4x", tgid, tgid, start_ticks * TICK_NS, uid, gid, ids is not None)
    out = head + bytes(block)
    assert len(out) == RECORD_BYTES
    return out


def test_each_process_is_found_by_pid_with_its_own_start_and_block() -> None:
    raw = record(10, 500) + record(11, 501, pid_ns=4026532999, ids=(1000, 1000))
    snapshot = TaskSnapshot(raw, TICK_NS)
    assert len(snapshot) == 2
    first, second = snapshot.get(10), snapshot.get(11)
    assert first is not None and (first.start_ticks, first.context.pid_ns) == (500, 4026531836)
    assert second is not None and (second.start_ticks, second.context.pid_ns) == (501, 4026532999)
    assert (first.ids, second.ids) == ((7, 8), (1000, 1000))
    assert snapshot.get(12) is None


def test_ids_the_kernel_could_not_read_are_none_never_root() -> None:
    """A failed read leaves zeros, which must not pass for uid 0: the flag says read."""
    found = TaskSnapshot(record(40, 1, ids=None), TICK_NS).get(40)
    assert found is not None and found.ids is None


def test_processes_started_alike_share_one_decoded_block() -> None:
    snapshot = TaskSnapshot(record(20, 1) + record(21, 2) + record(22, 3, pid_ns=7), TICK_NS)
    a, b, c = snapshot.get(20), snapshot.get(21), snapshot.get(22)
    assert a is not None and b is not None and c is not None
    assert a.context is b.context  # the same bytes: decoded once
    assert c.context is not a.context and c.context.pid_ns == 7
    assert (a.start_ticks, b.start_ticks) == (1, 2)  # the instance's own start, not shared


def test_a_record_cut_short_is_not_read() -> None:
    snapshot = TaskSnapshot(record(30, 1) + record(31, 2)[:-3], TICK_NS)
    assert len(snapshot) == 1 and snapshot.get(31) is None
