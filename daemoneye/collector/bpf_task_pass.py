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

import os
from collections.abc import Callable

from daemoneye.collector import bpf
from daemoneye.collector import bpf_asm as asm
from daemoneye.collector.bpf_asm import R0, R1, R2, R3, R6, R7, R8, R10
from daemoneye.collector.btf import KernelTypes

ITERATOR = "bpf_iter_task"
LICENSE = "Dual MIT/GPL"
SEQ_WRITE = 127  # bpf_seq_write
META_SEQ = {"bpf_iter_meta": ("seq",)}  # the offset `way_out` needs
_READ_BYTES = 1 << 20


def way_in(ctx_slot: int, task_slot: int, scratch_fd: int) -> list[asm.Item]:
    """The context kept at `ctx_slot`, the task at `task_slot` and in r8, the scratch record
    in r7; to "out" at the pass's end or when the record cannot be had."""
    return [
        asm.mov(R6, R1),
        asm.store(8, R10, ctx_slot, R6),
        *asm.read_kernel(R10, task_slot, 8, R6, 8),
        asm.load(8, R8, R10, task_slot),
        asm.jump("jeq", R8, 0, "out"),
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
