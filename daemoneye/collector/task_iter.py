"""Every process's context in one read: a BPF task iterator that writes, for each thread group
leader, its pid, start time and the same context block the exec capture takes at an exec
(collector/kernel_context.py: cgroup ids, namespaces, login uid, what fds 0-2 are).

The scanner reads it when a scan meets many processes at once (the first scan, a burst the
event reader did not report) and gives each new instance its block, so the context reader does
not read eleven /proc files and links per process; it still reads what the block leaves open.

The pass also copies each process's environment block when it fits the exec capture's
ENV_BYTES (the context reader keeps only the allow-listed variables, as from /proc). Reading
another process's memory may fault, so the program is sleepable and copies with
bpf_copy_from_user_task, which, as a read of /proc/PID/environ, takes that process's memory map
lock and faults its pages in; the walk through RCU-protected pointers (cgroups, namespaces,
files) runs inside bpf_rcu_read_lock, as a program that cannot sleep runs whole.

The block is the task's state at the pass, a few milliseconds before the instance's own /proc
read; the instance is matched by pid and start time, so a reused pid never gets another
process's block.

A pass is a read of a new iterator fd (BPF_ITER_CREATE on the link loaded at start). Loading
needs CAP_BPF and CAP_PERFMON, like the exec capture, and happens before procmond sheds them;
procmond's seccomp filter then refuses every bpf(2) command but BPF_ITER_CREATE
(procmond/seccomp.py).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from daemoneye.collector import bpf_asm as asm
from daemoneye.collector import bpf_task_pass as task_pass
from daemoneye.collector import kernel_context
from daemoneye.collector.bpf_asm import R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10
from daemoneye.collector.btf import KernelTypes
from daemoneye.collector.exec_capture import ENV_BYTES
from daemoneye.collector.kernel_context import KernelContext

_ENTRY = struct.Struct("<IIQ")  # tgid, pid, start_boottime (ns)
_ENV_LEN = struct.Struct("<I4x")  # the environment's length; 0: not copied
_ENV_LEN_AT = _ENTRY.size + kernel_context.BYTES
# A record: the entry, the context block, the environment's length, then that many bytes.
RECORD_BYTES = _ENV_LEN_AT + _ENV_LEN.size
_CTX_SLOT, _IDS_SLOT, _ENV_START, _ENV_END = -152, -160, -168, -176
_NEEDED = {"task_struct": ("start_boottime", "mm"), "mm_struct": ("env_start", "env_end")}


@dataclass(frozen=True, slots=True)
class TaskContext:
    """One process's block from a pass, with the start time that names its instance."""

    start_ticks: int
    context: KernelContext
    # the NAME=value block as the pass found it; None: not copied (no memory, over ENV_BYTES,
    # a fault), and then read from /proc
    environ: bytes | None = field(default=None, repr=False)


def _records(raw: bytes) -> Iterator[tuple[int, int, int]]:
    """(offset, tgid, start time in ns) of each whole record of a pass."""
    entry, env_len = _ENTRY.unpack_from, _ENV_LEN.unpack_from
    at, end = 0, len(raw) - RECORD_BYTES
    while at <= end:
        tgid, _pid, start_ns = entry(raw, at)
        length = env_len(raw, at + _ENV_LEN_AT)[0]
        if length > ENV_BYTES or at + RECORD_BYTES + length > len(raw):
            return  # not a record this program writes: stop rather than misread the rest
        yield at, tgid, start_ns
        at += RECORD_BYTES + length


class TaskSnapshot:
    """One pass's records, indexed by pid; a block is decoded when it is asked for."""

    def __init__(self, raw: bytes, tick_ns: int) -> None:
        self._raw = raw
        self._tick_ns = tick_ns
        self._at = {tgid: at for at, tgid, _start in _records(raw)}
        # a block's bytes → what they say: processes started alike have the same block
        self._decoded: dict[bytes, KernelContext | None] = {}

    def __len__(self) -> int:
        return len(self._at)

    def get(self, pid: int) -> TaskContext | None:
        at = self._at.get(pid)
        if at is None:
            return None
        raw = self._raw
        _tgid, _pid, start_ns = _ENTRY.unpack_from(raw, at)
        block = raw[at + _ENTRY.size : at + _ENV_LEN_AT]
        if block in self._decoded:
            found = self._decoded[block]
        else:
            found = self._decoded[block] = kernel_context.decode(block)
        if found is None:
            return None
        length = _ENV_LEN.unpack_from(raw, at + _ENV_LEN_AT)[0]
        environ = raw[at + RECORD_BYTES : at + RECORD_BYTES + length] if length else None
        return TaskContext(start_ns // self._tick_ns, found, environ)


def program(
    offsets: dict[str, int], sizes: dict[str, int], rcu: tuple[int, int], scratch_fd: int
) -> bytes:
    """The iterator program: one record per thread group leader. `rcu` holds the BTF ids of
    the bpf_rcu_read_lock and bpf_rcu_read_unlock kfuncs."""
    task = "task_struct."
    items: list[asm.Item] = [
        *task_pass.way_in(_CTX_SLOT, kernel_context.TASK_SLOT, _IDS_SLOT, offsets, scratch_fd),
        asm.load(8, R1, R10, _IDS_SLOT),  # tgid and pid, as the record starts
        asm.store(8, R7, 0, R1),
        *asm.read_kernel(R7, 8, 8, R8, offsets[task + "start_boottime"]),
        asm.call_kfunc(rcu[0]),
        *kernel_context.program_part(offsets, sizes, _ENTRY.size, current=False),
        asm.call_kfunc(rcu[1]),
        *_environment(offsets),
        *task_pass.way_out(_CTX_SLOT, RECORD_BYTES, offsets["bpf_iter_meta.seq"], extra=R9),
    ]
    return asm.assemble(items)


def _environment(offsets: dict[str, int]) -> list[asm.Item]:
    """Copy task->mm's env_start .. env_end after the record when 1 .. ENV_BYTES long; its
    length in the record and in r9 (0: not copied)."""
    mm = "mm_struct."
    return [
        asm.alu("mov", R9, 0),
        asm.store(8, R7, _ENV_LEN_AT, R9),
        asm.load(8, R8, R10, kernel_context.TASK_SLOT),
        *asm.follow(R8, offsets["task_struct.mm"], _ENV_START),
        asm.jump("jeq", R8, 0, "env_out"),  # a kernel thread, or one exiting
        *asm.read_kernel(R10, _ENV_START, 8, R8, offsets[mm + "env_start"]),
        asm.jump("jne", R0, 0, "env_out"),
        *asm.read_kernel(R10, _ENV_END, 8, R8, offsets[mm + "env_end"]),
        asm.jump("jne", R0, 0, "env_out"),
        asm.load(8, R6, R10, _ENV_END),
        asm.load(8, R1, R10, _ENV_START),
        asm.alu("sub", R6, R1, reg=True),
        asm.jump("jeq", R6, 0, "env_out"),
        asm.jump("jgt", R6, ENV_BYTES, "env_out"),  # also an end before the start
        asm.load(8, R1, R10, _CTX_SLOT),
        asm.load(8, R4, R1, 8),  # ctx->task, as the typed pointer the helper wants
        asm.jump("jeq", R4, 0, "env_out"),
        asm.mov(R1, R7),
        asm.alu("add", R1, RECORD_BYTES),
        asm.mov(R2, R6),
        asm.load(8, R3, R10, _ENV_START),
        asm.alu("mov", R5, 0),
        asm.call(asm.COPY_FROM_USER_TASK),
        asm.jump("jne", R0, 0, "env_out"),
        asm.mov(R9, R6),
        asm.store(4, R7, _ENV_LEN_AT, R9),
        asm.label("env_out"),
    ]


class TaskIterator:
    """The loaded iterator: `snapshot()` runs one pass over every task."""

    def __init__(self, fds: tuple[int, ...], tick_ns: int) -> None:
        self._fds = fds  # scratch map, program, link
        self._tick_ns = tick_ns
        self.passes_total = 0

    @classmethod
    def open(cls, *, clk_tck: int | None = None, btf_path: str | None = None) -> TaskIterator:
        """Load and link; raises bpf.BpfError or btf.BtfError with the reason."""
        types = KernelTypes.load(btf_path) if btf_path else KernelTypes.load()
        offsets = types.offsets(task_pass.merged(kernel_context.NEEDED, _NEEDED, task_pass.NEEDED))
        sizes = {name: types.size(name) for name in kernel_context.SIZES}
        rcu = (types.function_id("bpf_rcu_read_lock"), types.function_id("bpf_rcu_read_unlock"))
        fds = task_pass.load(
            types,
            lambda scratch: program(offsets, sizes, rcu, scratch),
            RECORD_BYTES + ENV_BYTES,
            "de_tasks",
            sleepable=True,
        )
        tick_ns = 1_000_000_000 // (clk_tck or os.sysconf("SC_CLK_TCK"))
        try:
            found = ((tgid, start) for _at, tgid, start in _records(task_pass.run(fds[-1])))
            task_pass.check_namespace(found, tick_ns)
        except BaseException:
            task_pass.close(fds)
            raise
        return cls(fds, tick_ns)

    def snapshot(self) -> TaskSnapshot:
        """One pass; raises OSError when the kernel refuses one (procmond then reads /proc)."""
        raw = task_pass.run(self._fds[-1])
        self.passes_total += 1
        return TaskSnapshot(raw, self._tick_ns)

    def close(self) -> None:
        fds, self._fds = self._fds, ()
        task_pass.close(fds)
