"""Every process's context in one read: a BPF task iterator that writes, for each thread group
leader, its pid, start time and the same context block the exec capture takes at an exec
(collector/kernel_context.py: cgroup ids, namespaces, login uid, what fds 0-2 are).

The scanner reads it when a scan meets many processes at once (the first scan, a burst the
event reader did not report) and gives each new instance its block, so the context reader does
not read eleven /proc files and links per process; it still reads the environment, and what the
block leaves open. The block is the task's state at the pass, a few milliseconds before the
instance's own /proc read; the instance is matched by pid and start time, so a reused pid
never gets another process's block.

A pass is a read of a new iterator fd (BPF_ITER_CREATE on the link loaded at start). Loading
needs CAP_BPF and CAP_PERFMON, like the exec capture, and happens before procmond sheds them;
procmond's seccomp filter then refuses every bpf(2) command but BPF_ITER_CREATE
(procmond/seccomp.py).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from daemoneye.collector import bpf, kernel_context
from daemoneye.collector import bpf_asm as asm
from daemoneye.collector.bpf_asm import R0, R1, R2, R3, R6, R7, R8, R10
from daemoneye.collector.btf import KernelTypes
from daemoneye.collector.kernel_context import KernelContext

ITERATOR = "bpf_iter_task"
LICENSE = "Dual MIT/GPL"
SEQ_WRITE = 127  # bpf_seq_write
_ENTRY = struct.Struct("<IIQ")  # tgid, pid, start_boottime (ns)
RECORD_BYTES = _ENTRY.size + kernel_context.BYTES
_CTX_SLOT = -152
_READ_BYTES = 1 << 20
_NEEDED = {"task_struct": ("tgid", "pid", "start_boottime"), "bpf_iter_meta": ("seq",)}


@dataclass(frozen=True, slots=True)
class TaskContext:
    """One process's block from a pass, with the start time that names its instance."""

    start_ticks: int
    context: KernelContext


class TaskSnapshot:
    """One pass's records, indexed by pid; a block is decoded when it is asked for."""

    def __init__(self, raw: bytes, tick_ns: int) -> None:
        self._raw = raw
        self._tick_ns = tick_ns
        self._at: dict[int, int] = {}
        unpack = _ENTRY.unpack_from
        for at in range(0, len(raw) - RECORD_BYTES + 1, RECORD_BYTES):
            tgid, _pid, _start = unpack(raw, at)
            self._at[tgid] = at

    def __len__(self) -> int:
        return len(self._at)

    def get(self, pid: int) -> TaskContext | None:
        at = self._at.get(pid)
        if at is None:
            return None
        _tgid, _pid, start_ns = _ENTRY.unpack_from(self._raw, at)
        found = kernel_context.decode(memoryview(self._raw)[at + _ENTRY.size : at + RECORD_BYTES])
        return None if found is None else TaskContext(start_ns // self._tick_ns, found)


def program(offsets: dict[str, int], sizes: dict[str, int], scratch_fd: int) -> bytes:
    """The iterator program (ctx: struct bpf_iter__task { meta; task }); writes one record per
    thread group leader with bpf_seq_write."""
    task = "task_struct."
    items: list[asm.Item] = [
        asm.mov(R6, R1),
        asm.store(8, R10, _CTX_SLOT, R6),
        # the task pointer as a plain number, as the exec program has it (NULL: the end)
        *asm.read_kernel(R10, kernel_context.TASK_SLOT, 8, R6, 8),
        asm.load(8, R8, R10, kernel_context.TASK_SLOT),
        asm.jump("jeq", R8, 0, "out"),
        *asm.scratch_lookup(scratch_fd, R7, "out"),
        *asm.read_kernel(R7, 0, 4, R8, offsets[task + "tgid"]),
        *asm.read_kernel(R7, 4, 4, R8, offsets[task + "pid"]),
        *asm.read_kernel(R7, 8, 8, R8, offsets[task + "start_boottime"]),
        asm.load(4, R1, R7, 0),
        asm.load(4, R2, R7, 4),
        asm.jump("jne", R1, R2, "out", reg=True),  # a thread: its leader stands for it
        *kernel_context.program_part(offsets, sizes, _ENTRY.size, current=False),
        asm.load(8, R1, R10, _CTX_SLOT),
        asm.load(8, R1, R1, 0),  # ctx->meta
        asm.load(8, R1, R1, offsets["bpf_iter_meta.seq"]),
        asm.mov(R2, R7),
        asm.alu("mov", R3, RECORD_BYTES),
        asm.call(SEQ_WRITE),
        asm.label("out"),
        asm.alu("mov", R0, 0),
        asm.exit_(),
    ]
    return asm.assemble(items)


class TaskIterator:
    """The loaded iterator: `snapshot()` runs one pass over every task."""

    def __init__(self, fds: tuple[int, ...], link_fd: int, tick_ns: int) -> None:
        self._fds = fds  # scratch map, program, link
        self._link = link_fd
        self._tick_ns = tick_ns
        self.passes_total = 0

    @classmethod
    def open(cls, *, clk_tck: int | None = None, btf_path: str | None = None) -> TaskIterator:
        """Load and link; raises bpf.BpfError or btf.BtfError with the reason."""
        types = KernelTypes.load(btf_path) if btf_path else KernelTypes.load()
        needed = dict(kernel_context.NEEDED)
        for struct_name, members in _NEEDED.items():
            needed[struct_name] = needed.get(struct_name, ()) + members
        offsets = types.offsets(needed)
        sizes = {name: types.size(name) for name in kernel_context.SIZES}
        target = types.function_id(ITERATOR)
        opened: list[int] = []
        try:
            scratch = bpf.create_map(bpf.MAP_PERCPU_ARRAY, 4, RECORD_BYTES, 1, "de_task_tmp")
            opened.append(scratch)
            code = program(offsets, sizes, scratch)
            opened.append(
                bpf.load_program(
                    bpf.PROG_TRACING,
                    code,
                    LICENSE,
                    "de_tasks",
                    attach_type=bpf.TRACE_ITER,
                    attach_btf_id=target,
                )
            )
            link = bpf.create_iterator_link(opened[-1])
            opened.append(link)
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        tick_ns = 1_000_000_000 // (clk_tck or os.sysconf("SC_CLK_TCK"))
        return cls(tuple(opened), link, tick_ns)

    def snapshot(self) -> TaskSnapshot:
        """One pass; raises OSError when the kernel refuses one (procmond then reads /proc)."""
        fd = bpf.create_iterator(self._link)
        try:
            chunks = []
            while chunk := os.read(fd, _READ_BYTES):
                chunks.append(chunk)
        finally:
            os.close(fd)
        self.passes_total += 1
        return TaskSnapshot(b"".join(chunks), self._tick_ns)

    def close(self) -> None:
        for fd in reversed(self._fds):
            os.close(fd)
