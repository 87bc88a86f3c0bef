"""Which processes' stat may have changed since the last tick, from one pass of a BPF task
iterator, so that the steady scan reads /proc/<pid>/stat only for those.

For each thread group leader the pass writes what the scanner takes from stat: its start time,
the CPU time of all its threads (each live thread's runtime, walked in the kernel, and that of
the threads gone), its memory counters, state, thread count, parent and name. A process whose
record equals the last tick's has the same stat fields the scanner uses; every other one (and
one the pass does not list, or whose threads were too many to walk) is read from /proc as
before, so what is stored is always /proc's word. With 10,000 idle processes a tick is one
read of the pass instead of 10,000 preads.

Loaded with the exec capture while procmond holds CAP_BPF and CAP_PERFMON; a pass is a
BPF_ITER_CREATE, which procmond's seccomp filter keeps (procmond/seccomp.py).
"""

from __future__ import annotations

import os
import struct

from daemoneye.collector import bpf_asm as asm
from daemoneye.collector import bpf_task_pass as task_pass
from daemoneye.collector.bpf_asm import R0, R1, R6, R7, R8, R9, R10
from daemoneye.collector.btf import BtfError, KernelTypes

THREADS_WALKED = 32  # a process with more threads is read from /proc every tick
RSS_COUNTERS = 4  # NR_MM_COUNTERS: file, anon, swap entries, shmem
# tgid, flags, start, thread count; the bytes after the tgid and flags are what is compared
_RECORD = struct.Struct("<IIQ56xI20x")
RECORD_BYTES = _RECORD.size  # 96
_START, _RUNTIME, _DEAD, _RSS, _STATE, _EXIT, _THREADS, _PPID, _COMM = (
    8,
    16,
    24,
    32,
    64,
    68,
    72,
    76,
    80,
)
_WHOLE = 1  # flags: every thread's runtime was summed
_TASK, _TMP, _HEAD, _CTX, _IDS = -8, -16, -24, -32, -40
_NEEDED = {
    "task_struct": (
        "tgid",
        "pid",
        "start_boottime",
        "se",
        "__state",
        "exit_state",
        "signal",
        "comm",
        "thread_node",
        "mm",
        "real_parent",
    ),
    "sched_entity": ("sum_exec_runtime",),
    "signal_struct": ("sum_sched_runtime", "nr_threads", "thread_head"),
    "mm_struct": ("rss_stat",),
}


def _rss_layout(types: KernelTypes) -> tuple[int, int]:
    """(offset of the first counter's value in mm->rss_stat, distance between counters): an
    array of percpu_counter since Linux 6.2, an array of atomic_long_t before."""
    try:
        old = types.offsets({"mm_rss_stat": ("count",)})
    except BtfError:
        count = types.offsets({"percpu_counter": ("count",)})["percpu_counter.count"]
        return count, types.size("percpu_counter")
    return old["mm_rss_stat.count"], 8


def program(offsets: dict[str, int], rss: tuple[int, int], scratch_fd: int) -> bytes:
    task = "task_struct."
    se_runtime = offsets[task + "se"] + offsets["sched_entity.sum_exec_runtime"]
    node_off = offsets[task + "thread_node"]
    items: list[asm.Item] = [
        *task_pass.way_in(_CTX, _TASK, _IDS, offsets, scratch_fd),
        asm.alu("mov", R1, 0),
        *[asm.store(8, R7, at, R1) for at in range(8, RECORD_BYTES, 8)],  # the map is reused
        asm.load(4, R1, R10, _IDS),
        asm.store(8, R7, 0, R1),  # the tgid; the flags word after it starts at 0
        *asm.read_kernel(R7, _START, 8, R8, offsets[task + "start_boottime"]),
        *asm.read_kernel(R7, _STATE, 4, R8, offsets[task + "__state"]),
        *asm.read_kernel(R7, _EXIT, 4, R8, offsets[task + "exit_state"]),
        *asm.read_kernel(R7, _COMM, 16, R8, offsets[task + "comm"]),
        asm.mov(R9, R8),
        *asm.follow(R9, offsets[task + "real_parent"], _TMP),
        *asm.read_kernel(R7, _PPID, 4, R9, offsets[task + "tgid"]),
        asm.mov(R9, R8),
        *asm.follow(R9, offsets[task + "mm"], _TMP),
        *[
            asm_item
            for index in range(RSS_COUNTERS)
            for asm_item in asm.read_kernel(
                R7, _RSS + 8 * index, 8, R9, offsets["mm_struct.rss_stat"] + rss[0] + rss[1] * index
            )
        ],
        asm.mov(R9, R8),
        *asm.follow(R9, offsets[task + "signal"], _TMP),
        *asm.read_kernel(R7, _DEAD, 8, R9, offsets["signal_struct.sum_sched_runtime"]),
        *asm.read_kernel(R7, _THREADS, 4, R9, offsets["signal_struct.nr_threads"]),
        # the live threads: signal->thread_head, each task linked by its thread_node
        asm.alu("add", R9, offsets["signal_struct.thread_head"]),
        asm.store(8, R10, _HEAD, R9),
        *asm.follow(R9, 0, _TMP),  # head->next
        asm.alu("mov", R6, 0),  # the runtime summed
    ]
    for _step in range(THREADS_WALKED):
        items += [
            *asm.list_entry(R9, _HEAD, R8, node_off, "threads_whole", "threads_cut"),
            *asm.read_kernel(R10, _TMP, 8, R8, se_runtime),
            asm.jump("jne", R0, 0, "threads_cut"),
            asm.load(8, R1, R10, _TMP),
            asm.alu("add", R6, R1, reg=True),
            *asm.follow(R9, 0, _TMP),
        ]
    items += [
        asm.load(8, R1, R10, _HEAD),
        asm.jump("jeq", R9, R1, "threads_whole", reg=True),
        asm.jump("ja", 0, 0, "threads_cut"),
        asm.label("threads_whole"),
        asm.alu("mov", R1, _WHOLE),
        asm.store(4, R7, 4, R1),
        asm.label("threads_cut"),
        asm.store(8, R7, _RUNTIME, R6),
        *task_pass.way_out(_CTX, RECORD_BYTES, offsets["bpf_iter_meta.seq"]),
    ]
    return asm.assemble(items)


class StatSignatures:
    """The loaded iterator; `read()` gives pid → a hash of what its stat fields come from
    (None for a process whose threads were too many to walk)."""

    def __init__(self, fds: tuple[int, ...]) -> None:
        self._fds = fds  # scratch map, program, link
        # tasks the last pass visited per process listed: a pass costs per task (each thread
        # is visited), the reads it saves are one per process
        self.threads_per_process = 1.0

    @classmethod
    def open(cls, *, btf_path: str | None = None) -> StatSignatures:
        types = KernelTypes.load(btf_path) if btf_path else KernelTypes.load()
        offsets = types.offsets(task_pass.merged(_NEEDED, task_pass.NEEDED))
        rss = _rss_layout(types)
        fds = task_pass.load(
            types, lambda scratch: program(offsets, rss, scratch), RECORD_BYTES, "de_sigs"
        )
        try:
            tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
            task_pass.check_namespace(task_pass.run(fds[-1]), RECORD_BYTES, tick_ns)
        except BaseException:
            task_pass.close(fds)
            raise
        return cls(fds)

    def read(self) -> dict[int, int | None]:
        """One pass; raises OSError when the kernel refuses it (the poller reads every stat)."""
        raw = task_pass.run(self._fds[-1])
        found: dict[int, int | None] = {}
        unpack = _RECORD.unpack_from
        threads = 0
        for at in range(0, len(raw) - RECORD_BYTES + 1, RECORD_BYTES):
            tgid, flags, _start, count = unpack(raw, at)
            threads += count
            found[tgid] = hash(raw[at + 8 : at + RECORD_BYTES]) if flags & _WHOLE else None
        self.threads_per_process = threads / max(1, len(found))
        return found

    def close(self) -> None:
        fds, self._fds = self._fds, ()
        task_pass.close(fds)
