"""A task pass's records as the scanner reads them (collector/task_iter.py): each record's
context block and environment found by pid, whatever the environments' lengths, and a pass
whose bytes are not the program's records read no further than its last whole record."""

from __future__ import annotations

import struct

from daemoneye.collector import kernel_context
from daemoneye.collector.exec_capture import ENV_BYTES
from daemoneye.collector.task_iter import RECORD_BYTES, TaskSnapshot

TICK_NS = 10_000_000  # 100 ticks a second


def record(
    tgid: int, start_ticks: int, environ: bytes = b"", *, length: int | None = None
) -> bytes:
    """One record as the program writes it: tgid, pid, start time, a context block whose only
    value is the pid namespace, the environment's length, then the environment."""
    block = bytearray(kernel_context.BYTES)
    struct.pack_into("<II", block, 8, 4026531836 + tgid, 0)  # pid namespace inode
    struct.pack_into("<I", block, 28, kernel_context.HAS_PID_NS)
    head = struct.pack("<IIQ", tgid, tgid, start_ticks * TICK_NS)
    size = len(environ) if length is None else length
    out = head + bytes(block) + struct.pack("<I4x", size) + environ
    assert len(out) == RECORD_BYTES + len(environ)
    return out


def test_each_process_is_found_with_its_own_environment_whatever_the_lengths() -> None:
    raw = (
        record(10, 500, b"A=1\0SUDO_USER=bob\0")
        + record(11, 501)  # no environment copied (a kernel thread, one over ENV_BYTES)
        + record(12, 502, b"B=" + b"x" * (ENV_BYTES - 3) + b"\0")
    )
    snapshot = TaskSnapshot(raw, TICK_NS)
    assert len(snapshot) == 3
    first, second, third = snapshot.get(10), snapshot.get(11), snapshot.get(12)
    assert first is not None and first.environ == b"A=1\0SUDO_USER=bob\0"
    assert first.start_ticks == 500 and first.context.pid_ns == 4026531846
    assert second is not None and second.environ is None and second.start_ticks == 501
    assert third is not None and third.environ is not None and len(third.environ) == ENV_BYTES
    assert snapshot.get(13) is None


def test_a_length_the_program_never_writes_ends_the_read_there() -> None:
    """A record claiming more than ENV_BYTES is no record of this program: the records before
    it are kept, nothing after it is read as a record (it would be read out of frame)."""
    raw = record(20, 1, b"A=1\0") + record(21, 2, length=ENV_BYTES + 1) + record(22, 3)
    snapshot = TaskSnapshot(raw, TICK_NS)
    assert len(snapshot) == 1 and snapshot.get(20) is not None and snapshot.get(22) is None


def test_a_record_cut_short_is_not_read() -> None:
    whole = record(30, 1, b"HISTFILE=/dev/null\0")
    cut = record(31, 2, b"LD_PRELOAD=/tmp/x.so\0")[:-3]
    snapshot = TaskSnapshot(whole + cut, TICK_NS)
    assert len(snapshot) == 1 and snapshot.get(31) is None
