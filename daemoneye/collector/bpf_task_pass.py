"""What the scanner's two BPF task iterators share (collector/task_iter.py: every process's
context; collector/stat_signatures.py: which processes' stat moved): the program's way in and
way out, loading it as an ``iter/task`` tracing program with its per-CPU scratch record, and
running one pass.

A program gets ``struct bpf_iter__task { meta; task }``; it keeps the context on its stack,
takes the task pointer as a plain number (NULL: the end of the pass) and writes one fixed-size
record (r7) per task it keeps with bpf_seq_write. A pass is BPF_ITER_CREATE on the link loaded
at start, read to its end: one read of every task.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable, Mapping

from daemoneye.collector import bpf
from daemoneye.collector import bpf_asm as asm
from daemoneye.collector.bpf_asm import R0, R1, R2, R3, R6, R7, R8, R10
from daemoneye.collector.btf import KernelTypes

ITERATOR = "bpf_iter_task"
LICENSE = "Dual MIT/GPL"
SEQ_WRITE = 127  # bpf_seq_write
NEEDED = {"bpf_iter_meta": ("seq",), "task_struct": ("tgid", "pid")}  # what way_in/out read
_READ_BYTES = 1 << 20
_TGID, _START = struct.Struct("<I"), struct.Struct("<Q")


def merged(*needs: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Several {struct: members} wants as one (for KernelTypes.offsets)."""
    found: dict[str, tuple[str, ...]] = {}
    for need in needs:
        for struct_name, members in need.items():
            have = found.get(struct_name, ())
            found[struct_name] = have + tuple(m for m in members if m not in have)
    return found


def way_in(
    ctx_slot: int, task_slot: int, ids_slot: int, offsets: dict[str, int], scratch_fd: int
) -> list[asm.Item]:
    """The context kept at `ctx_slot`, the task at `task_slot` and in r8, its tgid and pid at
    `ids_slot` (u32 each), the scratch record in r7; to "out" at the pass's end, for a thread
    that is not its group's leader (before any other work: a pass visits every thread), or
    when the record cannot be had."""
    return [
        asm.mov(R6, R1),
        asm.store(8, R10, ctx_slot, R6),
        *asm.read_kernel(R10, task_slot, 8, R6, 8),
        asm.load(8, R8, R10, task_slot),
        asm.jump("jeq", R8, 0, "out"),
        *asm.read_kernel(R10, ids_slot, 4, R8, offsets["task_struct.tgid"]),
        *asm.read_kernel(R10, ids_slot + 4, 4, R8, offsets["task_struct.pid"]),
        asm.load(4, R1, R10, ids_slot),
        asm.load(4, R2, R10, ids_slot + 4),
        asm.jump("jne", R1, R2, "out", reg=True),  # a thread: its leader stands for it
        *asm.scratch_lookup(scratch_fd, R7, "out"),
    ]


def way_out(ctx_slot: int, record_bytes: int, seq_offset: int) -> list[asm.Item]:
    """Write the record (r7) to the pass; the "out" label; return 0."""
    return [
        asm.load(8, R1, R10, ctx_slot),
        asm.load(8, R1, R1, 0),  # ctx->meta
        asm.load(8, R1, R1, seq_offset),  # meta->seq
        asm.mov(R2, R7),
        asm.alu("mov", R3, record_bytes),
        asm.call(SEQ_WRITE),
        asm.label("out"),
        asm.alu("mov", R0, 0),
        asm.exit_(),
    ]


def load(
    types: KernelTypes, code: Callable[[int], bytes], record_bytes: int, name: str
) -> tuple[int, ...]:
    """(scratch map, program, link) of a task iterator whose bytecode `code(scratch_fd)` gives;
    raises bpf.BpfError or btf.BtfError with the reason, leaving nothing open."""
    target = types.function_id(ITERATOR)
    opened: list[int] = []
    try:
        opened.append(bpf.create_map(bpf.MAP_PERCPU_ARRAY, 4, record_bytes, 1, f"{name}_tmp"))
        opened.append(
            bpf.load_program(
                bpf.PROG_TRACING,
                code(opened[0]),
                LICENSE,
                name,
                attach_type=bpf.TRACE_ITER,
                attach_btf_id=target,
            )
        )
        opened.append(bpf.create_iterator_link(opened[-1]))
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    return tuple(opened)


def check_namespace(raw: bytes, record_bytes: int, tick_ns: int) -> None:
    """Raise unless a pass's records (each starting with the tgid as u32 and, at 8, the start
    time in ns as u64) list this process under its own pid with its own start time. The
    kernel writes pids as the initial pid namespace numbers them; a procmond in a namespace of
    its own (a container, `unshare --pid`) reads another numbering in its /proc, and would file
    one process's record under another's pid."""
    own = os.getpid()
    with open("/proc/self/stat", "rb") as file:
        line = file.read()
    start_ticks = int(line[line.rfind(b")") + 2 :].split()[19])
    for at in range(0, len(raw) - record_bytes + 1, record_bytes):
        tgid, start_ns = _TGID.unpack_from(raw, at)[0], _START.unpack_from(raw, at + 8)[0]
        if tgid == own:
            if start_ns // tick_ns == start_ticks:
                return
            break
    raise OSError(
        errno.EOPNOTSUPP,
        "the kernel's task pids are not this /proc's (procmond runs in a pid namespace of its "
        "own): the scan reads /proc",
    )


def run(link_fd: int) -> bytes:
    """One pass's records; raises OSError when the kernel refuses one."""
    fd = bpf.create_iterator(link_fd)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_BYTES):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def close(fds: tuple[int, ...]) -> None:
    for fd in reversed(fds):
        os.close(fd)
