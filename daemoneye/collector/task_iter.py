"""Every process's context in one read: a BPF task iterator that writes, for each thread group
leader, its pid, start time, real uid and gid, and the same context block the exec capture
takes at an exec (collector/kernel_context.py: cgroup ids, namespaces, login uid, what fds 0-2
are).

The scanner reads it when a scan meets many processes at once (the first scan, a burst the
event reader did not report) and gives each new instance its record, so neither the context
reader reads eleven /proc files and links per process nor the scan reads `status`; the
environment, and what the block leaves open, are still read. The record is the task's state
at the pass, a few milliseconds before the instance's own /proc read; the instance is matched
by pid and start time, so a reused pid never gets another process's record.

A pass is a read of a new iterator fd (BPF_ITER_CREATE on the link loaded at start). Loading
needs CAP_BPF and CAP_PERFMON, like the exec capture, and happens before procmond sheds them;
procmond's seccomp filter then refuses every bpf(2) command but BPF_ITER_CREATE
(procmond/seccomp.py).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from daemoneye.collector import bpf_asm as asm
from daemoneye.collector import bpf_task_pass as task_pass
from daemoneye.collector import kernel_context
from daemoneye.collector.bpf_asm import R0, R1, R7, R8, R9, R10
from daemoneye.collector.btf import KernelTypes
from daemoneye.collector.kernel_context import KernelContext

# tgid, pid, start_boottime (ns), real uid and gid, whether those two were read
_ENTRY = struct.Struct("<IIQIII4x")
_TGID = struct.Struct("<I")
_UID_AT, _GID_AT, _IDS_READ_AT = 16, 20, 24
RECORD_BYTES = _ENTRY.size + kernel_context.BYTES
_CTX_SLOT, _IDS_SLOT, _CRED_SLOT = -152, -160, -176
_NEEDED = {"task_struct": ("start_boottime",), "cred": ("uid", "gid")}


@dataclass(frozen=True, slots=True)
class TaskContext:
    """One process's block from a pass, with the start time that names its instance."""

    start_ticks: int
    context: KernelContext
    ids: tuple[int, int] | None = None  # real uid and gid at the pass; None: not read


class TaskSnapshot:
    """One pass's records, indexed by pid; a block is decoded when it is asked for."""

    def __init__(self, raw: bytes, tick_ns: int) -> None:
        self._raw = raw
        self._tick_ns = tick_ns
        self._at: dict[int, int] = {}
        unpack = _TGID.unpack_from
        for at in range(0, len(raw) - RECORD_BYTES + 1, RECORD_BYTES):
            self._at[unpack(raw, at)[0]] = at
        # a block's bytes → what they say: processes started alike have the same block
        self._decoded: dict[bytes, KernelContext | None] = {}

    def __len__(self) -> int:
        return len(self._at)

    def get(self, pid: int) -> TaskContext | None:
        at = self._at.get(pid)
        if at is None:
            return None
        _tgid, _pid, start_ns, uid, gid, ids_read = _ENTRY.unpack_from(self._raw, at)
        block = self._raw[at + _ENTRY.size : at + RECORD_BYTES]
        if block in self._decoded:
            found = self._decoded[block]
        else:
            found = self._decoded[block] = kernel_context.decode(block)
        if found is None:
            return None
        return TaskContext(start_ns // self._tick_ns, found, (uid, gid) if ids_read else None)


def program(offsets: dict[str, int], sizes: dict[str, int], scratch_fd: int) -> bytes:
    """The iterator program: one record per thread group leader."""
    task = "task_struct."
    items: list[asm.Item] = [
        *task_pass.way_in(_CTX_SLOT, kernel_context.TASK_SLOT, _IDS_SLOT, offsets, scratch_fd),
        asm.load(8, R1, R10, _IDS_SLOT),  # tgid and pid, as the record starts
        asm.store(8, R7, 0, R1),
        *asm.read_kernel(R7, 8, 8, R8, offsets[task + "start_boottime"]),
        *_real_ids(offsets),
        *kernel_context.program_part(offsets, sizes, _ENTRY.size, current=False),
        *task_pass.way_out(_CTX_SLOT, RECORD_BYTES, offsets["bpf_iter_meta.seq"]),
    ]
    return asm.assemble(items)


def _real_ids(offsets: dict[str, int]) -> list[asm.Item]:
    """task->real_cred->uid and ->gid (what /proc/PID/status's Uid and Gid lines begin with),
    and a flag that both were read: a failed read gives 0, which must not pass for root."""
    return [
        asm.alu("mov", R1, 0),
        asm.store(8, R7, _UID_AT, R1),
        asm.store(8, R7, _IDS_READ_AT, R1),
        asm.mov(R9, R8),
        *asm.follow(R9, offsets["task_struct.real_cred"], _CRED_SLOT),
        *asm.read_kernel(R7, _UID_AT, 4, R9, offsets["cred.uid"]),
        asm.jump("jne", R0, 0, "ids_done"),
        *asm.read_kernel(R7, _GID_AT, 4, R9, offsets["cred.gid"]),
        asm.jump("jne", R0, 0, "ids_done"),
        asm.alu("mov", R1, 1),
        asm.store(4, R7, _IDS_READ_AT, R1),
        asm.label("ids_done"),
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
        fds = task_pass.load(
            types, lambda scratch: program(offsets, sizes, scratch), RECORD_BYTES, "de_tasks"
        )
        tick_ns = 1_000_000_000 // (clk_tck or os.sysconf("SC_CLK_TCK"))
        try:
            task_pass.check_namespace(task_pass.run(fds[-1]), RECORD_BYTES, tick_ns)
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
