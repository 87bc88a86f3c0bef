"""Every exec as the kernel saw it at the exec itself (eBPF), so that a program that lives a
few hundred microseconds is stored whole even when /proc is gone before the reader gets there,
and a new process costs the reader a few /proc reads instead of twenty.

A program on the ``sched_process_exec`` raw tracepoint runs inside execve(2), after the new
image is in place and before the process returns to user space, and immediately before the
kernel sends the process connector's exec event. It copies, into a ring buffer record: the
pids, real uid and gid, start time, parent, name, the path execve was given, the executable's
real path and the working directory (each walked through the mounts), the new argv straight
from the new process's memory (``mm->arg_start .. arg_end``, at most `ARGV_BYTES`; the record
says how long it really was), and the task's context (collector/kernel_context.py: cgroups,
namespaces, login uid, what fds 0-2 are). Every exec's record, its argv cut at
`SHORT_ARGV_BYTES`, goes to a short ring; an argv longer than that goes whole to a long ring
too, and so does the environment block when it fits `ENV_BYTES`, so an attacker who floods
execs with huge command lines or environments fills only the long ring and cannot crowd out
another program's record. The netlink reader drains the rings before it handles a batch of
connector events, and each exec event takes the record of its thread group
(`ExecCapture.take`). The reader then reads from /proc only stat, the working directory and
what the record could not settle (collector/details.py); the record's working directory is
for a process gone before its read. The captured argv is the one the kernel exec'd, whatever
the process writes over its own argv afterwards.

The program is bytecode assembled here against member offsets from the running kernel's BTF;
nothing is compiled. The ring buffer never wakes the reader (``BPF_RB_NO_WAKEUP``): the
connector's event, sent right after the record, does. Loading needs CAP_BPF and CAP_PERFMON;
without them, or on a kernel without BTF, the capture is off and the reader reads /proc alone
(`ExecCapture.open` raises with the reason).

The in-kernel program is licensed "Dual MIT/GPL", as the kernel requires of programs that call
its GPL-only helpers (bpf_probe_read_*); the rest of DaemonEye is Apache-2.0.
"""

from __future__ import annotations

import collections
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from daemoneye.collector import bpf, kernel_context
from daemoneye.collector import bpf_asm as asm
from daemoneye.collector.bpf_asm import R0, R1, R2, R3, R4, R6, R7, R8, R9, R10
from daemoneye.collector.btf import BtfError, KernelTypes
from daemoneye.collector.kernel_context import KernelContext
from daemoneye.collector.procfs import DELETED_SUFFIX, decode, parse_cmdline
from daemoneye.collector.shared_text import SHARED

log = logging.getLogger(__name__)

TRACEPOINT = "sched_process_exec"
LICENSE = "Dual MIT/GPL"
FILENAME_BYTES = 128
# The executable's real path, walked up from its dentry through the mounts it sits on: each
# name at most COMPONENT_BYTES, leaf first, NUL after each; PATH_BYTES of them at most, over at
# most PATH_STEPS steps (a name or a mount crossed). Past any of these limits it is not used.
PATH_BYTES = 512  # a power of two: the write offset is masked with PATH_BYTES - 1
COMPONENT_BYTES = 128
PATH_STEPS = 24
_PATH_COMPLETE = 1 << 31
_PATH_DELETED = 1 << 30
_HEADER = struct.Struct("<IIIIQQIIiIQ16s")  # the fixed fields before the strings
_PREFIX = struct.Struct("<IIIIQQ")  # tgid … ktime: the start of _HEADER
_CWD_WORD = struct.Struct("<I")
_CONTEXT = _HEADER.size + FILENAME_BYTES + PATH_BYTES + COMPONENT_BYTES  # 840
_CWD_LEN = _CONTEXT + kernel_context.BYTES  # the working directory's walk: its length word
_CWD = _CWD_LEN + 8  # then its names, leaf first, as the executable's
HEADER_BYTES = _CWD + PATH_BYTES + COMPONENT_BYTES
# The environment goes to the long ring as a record of its own, after its exec's record went to
# the short one, when the whole of it fits in ENV_BYTES (else, or when the long ring was full,
# the reader reads /proc/PID/environ as before): a tag no tgid can be, the tgid and time of its
# exec, its length, then the NAME=value block. Like a long argv it is an extra: a flood of
# execs with big environments fills the long ring, never the short one every exec needs.
ENV_TAG = 0xFFFF_FFFF
_ENV_TAG_BYTES = ENV_TAG.to_bytes(4, "little")
_ENV_HEAD = struct.Struct("<IIQI4x")
ENV_BYTES = 4096 - _ENV_HEAD.size
SCRATCH_BYTES = 32_768  # the per-CPU scratch value may be at most 32 KiB
_ENV_AT = SCRATCH_BYTES - _ENV_HEAD.size - ENV_BYTES
ARGV_BYTES = _ENV_AT - HEADER_BYTES
# Two rings, so that a flood of execs with huge command lines (which an attacker can run at
# will) cannot crowd out the record of another program: every exec's record, its argv cut at
# SHORT_ARGV_BYTES, goes to the short ring; a longer argv goes whole to the long ring as well.
SHORT_ARGV_BYTES = 512
SHORT_RING_BYTES = 2 << 20  # 856 to 1,082 execs; drained at every connector wake-up
LONG_RING_BYTES = 1 << 20
_RB_NO_WAKEUP = 1

# field offsets in a record (must match _HEADER)
_TGID, _PID, _UID, _GID, _START, _KTIME, _PPID, _ARGV_LEN, _NAME_LEN = (
    0,
    4,
    8,
    12,
    16,
    24,
    32,
    36,
    40,
)
_PATH_LEN, _ARGS_TOTAL, _COMM, _FILENAME = 44, 48, 56, 72
_PATH = _FILENAME + FILENAME_BYTES
_ARGV = HEADER_BYTES

_NEEDED = {
    "task_struct": ("mm", "start_boottime", "real_parent", "tgid", "fs"),
    "fs_struct": ("pwd",),
    "mm_struct": ("arg_start", "arg_end", "env_start", "env_end"),
    "linux_binprm": ("filename", "file"),
    "file": ("f_path",),
    "path": ("mnt", "dentry"),
    "dentry": ("d_parent", "d_name", "d_hash"),
    "hlist_bl_node": ("pprev",),
    "qstr": ("name",),
    "mount": ("mnt_parent", "mnt_mountpoint", "mnt"),
    "vfsmount": ("mnt_root",),
}


@dataclass(frozen=True, slots=True)
class CapturedExec:
    """One exec as the kernel saw it."""

    tgid: int
    ktime_ns: int  # CLOCK_MONOTONIC, the connector's own clock
    start_ticks: int  # stat field 22
    ppid: int
    uid: int
    gid: int
    comm: str
    filename: str | None  # the path given to execve, as given (may be relative or a /dev/fd)
    path: str | None  # the executable's real path, as /proc/PID/exe would name it; None: unknown
    path_deleted: bool  # the executable was unlinked: /proc/PID/exe would say "(deleted)"
    # the working directory at the exec, as /proc/PID/cwd would read ("… (deleted)" for a
    # removed one); None: not walked whole (too deep or long), read from /proc instead
    cwd: str | None
    argv: tuple[str, ...]
    argv_complete: bool  # False when the arguments ran past ARGV_BYTES (or were unreadable)
    context: KernelContext | None = None  # cgroup, namespaces, login uid, stdio at the exec
    # the whole environment block at the exec (None: not captured); never printed: only the
    # allow-listed variables leave procmond
    environ: bytes | None = field(default=None, repr=False)


def _output(ring_fd: int, argv_len: int) -> list[asm.Item]:
    """The record (r7) with `argv_len` (a register) bytes of argv, into the ring, without
    waking its reader."""
    return [
        asm.store(4, R7, _ARGV_LEN, argv_len),
        asm.load_map_fd(R1, ring_fd),
        asm.mov(R2, R7),
        asm.mov(R3, argv_len),
        asm.alu("add", R3, HEADER_BYTES),
        asm.alu("mov", R4, _RB_NO_WAKEUP),
        asm.call(asm.RINGBUF_OUTPUT),
    ]


def program(
    offsets: dict[str, int],
    scratch_fd: int,
    short_ring_fd: int,
    long_ring_fd: int,
    context: tuple[dict[str, int], dict[str, int]] | None = None,
) -> bytes:
    """The raw tracepoint program (ctx: task_struct *p, pid_t old_pid, linux_binprm *bprm).
    With `context` (kernel_context's offsets and sizes) it also fills the context block."""
    task, mm, binprm = "task_struct.", "mm_struct.", "linux_binprm."
    items: list[asm.Item] = [
        asm.mov(R6, R1),
        asm.alu("mov", R1, 0),
        asm.store(8, R10, -16, R1),  # pointers read below start out NULL
        asm.store(8, R10, -24, R1),
        asm.store(8, R10, -32, R1),
        *asm.scratch_lookup(scratch_fd, R7, "out"),
        asm.call(asm.GET_CURRENT_PID_TGID),
        asm.store(4, R7, _PID, R0),
        asm.alu("rsh", R0, 32),
        asm.store(4, R7, _TGID, R0),
        asm.call(asm.GET_CURRENT_UID_GID),
        asm.store(4, R7, _UID, R0),
        asm.alu("rsh", R0, 32),
        asm.store(4, R7, _GID, R0),
        asm.call(asm.KTIME_GET_NS),
        asm.store(8, R7, _KTIME, R0),
        asm.mov(R1, R7),
        asm.alu("add", R1, _COMM),
        asm.alu("mov", R2, 16),
        asm.call(asm.GET_CURRENT_COMM),
        asm.load(8, R8, R6, 0),  # the task
        asm.store(8, R10, kernel_context.TASK_SLOT, R8),
        *asm.read_kernel(R7, _START, 8, R8, offsets[task + "start_boottime"]),
        *asm.read_kernel(R10, -16, 8, R8, offsets[task + "real_parent"]),
        asm.load(8, R9, R10, -16),
        *asm.read_kernel(R7, _PPID, 4, R9, offsets[task + "tgid"]),
        *asm.read_kernel(R10, -16, 8, R8, offsets[task + "mm"]),
        asm.load(8, R9, R10, -16),
        *asm.read_kernel(R10, -24, 8, R9, offsets[mm + "arg_start"]),
        *asm.read_kernel(R10, -32, 8, R9, offsets[mm + "arg_end"]),
        *asm.read_kernel(R10, -120, 8, R9, offsets[mm + "env_start"]),
        *asm.read_kernel(R10, -128, 8, R9, offsets[mm + "env_end"]),
        asm.load(8, R9, R6, 16),  # the binprm
        *asm.read_kernel(R10, -16, 8, R9, offsets[binprm + "filename"]),
        asm.load(8, R3, R10, -16),
        asm.mov(R1, R7),
        asm.alu("add", R1, _FILENAME),
        asm.alu("mov", R2, FILENAME_BYTES),
        asm.call(asm.PROBE_READ_KERNEL_STR),
        asm.store(4, R7, _NAME_LEN, R0),
        *_exe_path(offsets),
        *_cwd_path(offsets),
        *(() if context is None else kernel_context.program_part(*context, _CONTEXT)),
        asm.load(8, R3, R10, -24),
        asm.load(8, R2, R10, -32),
        asm.alu("sub", R2, R3, reg=True),
        asm.store(8, R7, _ARGS_TOTAL, R2),
        asm.jump("jle", R2, ARGV_BYTES, "fits"),
        asm.alu("mov", R2, ARGV_BYTES),
        asm.label("fits"),
        asm.mov(R8, R2),
        asm.mov(R1, R7),
        asm.alu("add", R1, _ARGV),
        asm.call(asm.PROBE_READ_USER),
        asm.jump("jeq", R0, 0, "read"),
        asm.alu("mov", R8, 0),
        asm.label("read"),
        # every exec: its record with the argv cut at SHORT_ARGV_BYTES, in the short ring
        asm.mov(R9, R8),
        asm.jump("jle", R9, SHORT_ARGV_BYTES, "short"),
        asm.alu("mov", R9, SHORT_ARGV_BYTES),
        asm.label("short"),
        *_output(short_ring_fd, R9),
        *_environment(long_ring_fd),
        # a longer argv: the whole record again, in the long ring
        asm.jump("jle", R8, SHORT_ARGV_BYTES, "out"),
        *_output(long_ring_fd, R8),
        asm.label("out"),
        asm.alu("mov", R0, 0),
        asm.exit_(),
    ]
    return asm.assemble(items)


def _environment(ring_fd: int) -> list[asm.Item]:
    """The environment record (see ENV_TAG), when the whole block fits; r7 is the record."""
    return [
        asm.alu("mov", R1, -1),
        asm.store(4, R7, _ENV_AT, R1),
        asm.load(4, R1, R7, _TGID),
        asm.store(4, R7, _ENV_AT + 4, R1),
        asm.load(8, R1, R7, _KTIME),
        asm.store(8, R7, _ENV_AT + 8, R1),
        asm.load(8, R3, R10, -120),
        asm.load(8, R2, R10, -128),
        asm.alu("sub", R2, R3, reg=True),
        asm.jump("jgt", R2, ENV_BYTES, "env_out"),  # also an end before the start
        asm.mov(R9, R2),
        asm.store(4, R7, _ENV_AT + 16, R2),
        asm.mov(R1, R7),
        asm.alu("add", R1, _ENV_AT + _ENV_HEAD.size),
        asm.call(asm.PROBE_READ_USER),
        asm.jump("jne", R0, 0, "env_out"),
        asm.load_map_fd(R1, ring_fd),
        asm.mov(R2, R7),
        asm.alu("add", R2, _ENV_AT),
        asm.mov(R3, R9),
        asm.alu("add", R3, _ENV_HEAD.size),
        asm.alu("mov", R4, _RB_NO_WAKEUP),
        asm.call(asm.RINGBUF_OUTPUT),
        asm.label("env_out"),
    ]


def _exe_path(offsets: dict[str, int]) -> list[asm.Item]:
    """The executable's path: the walk from bprm->file's path. R9 holds the binprm."""
    return [
        *asm.read_kernel(R10, -16, 8, R9, offsets["linux_binprm.file"]),
        asm.load(8, R8, R10, -16),
        *_path_walk(offsets, R8, offsets["file.f_path"], _PATH, _PATH_LEN, "exe"),
    ]


def _cwd_path(offsets: dict[str, int]) -> list[asm.Item]:
    """The working directory's path: the walk from the task's fs->pwd (the task at
    kernel_context.TASK_SLOT)."""
    return [
        asm.load(8, R8, R10, kernel_context.TASK_SLOT),
        *asm.read_kernel(R10, -16, 8, R8, offsets["task_struct.fs"]),
        asm.load(8, R8, R10, -16),
        *_path_walk(offsets, R8, offsets["fs_struct.pwd"], _CWD, _CWD_LEN, "cwd"),
    ]


def _path_walk(
    offsets: dict[str, int], holder: int, at: int, out: int, length_at: int, name: str
) -> list[asm.Item]:
    """A path as d_path(3) would give it, from the `struct path` at offset `at` of the object
    in register `holder`: from its dentry up through the parents, and at a mount's root on to
    the dentry it is mounted on, until the root of the mount tree. The names go to record
    offset `out` (leaf first), the length word to `length_at`; `name` keeps the labels apart.
    R6 (the context, not needed yet) counts the bytes written; r8 and r9 are used."""
    mount_mnt = offsets["mount.mnt"]
    root, cut, end, linked = (f"{name}_{label}" for label in ("root", "cut", "end", "linked"))
    items: list[asm.Item] = [
        *asm.read_kernel(R10, -40, 8, holder, at + offsets["path.dentry"]),
        *asm.read_kernel(R10, -48, 8, holder, at + offsets["path.mnt"]),
        asm.load(8, R8, R10, -40),  # the dentry
        asm.load(8, R9, R10, -48),  # the vfsmount it is reached through
        # unlinked (d_unhashed): its d_hash.pprev is NULL; the link would say "(deleted)"
        *asm.read_kernel(
            R10, -72, 8, R8, offsets["dentry.d_hash"] + offsets["hlist_bl_node.pprev"]
        ),
        # … unless it is a filesystem's root, which is never hashed (d_unlinked: !IS_ROOT)
        *asm.read_kernel(R10, -56, 8, R8, offsets["dentry.d_parent"]),
        asm.load(8, R1, R10, -56),
        asm.jump("jne", R1, R8, f"{name}_not_root", reg=True),
        asm.alu("mov", R1, 1),
        asm.store(8, R10, -72, R1),
        asm.label(f"{name}_not_root"),
        asm.alu("mov", R6, 0),
    ]
    for step in range(PATH_STEPS):
        items += [
            *asm.read_kernel(R10, -56, 8, R9, offsets["vfsmount.mnt_root"]),
            asm.load(8, R1, R10, -56),
            asm.jump("jne", R1, R8, f"{name}_name{step}", reg=True),
            # the root of its mount: on to where that mount is mounted, unless it is the top
            asm.mov(R4, R9),
            asm.alu("sub", R4, mount_mnt),  # container_of(vfsmount, struct mount, mnt)
            asm.store(8, R10, -64, R4),
            *asm.read_kernel(R10, -56, 8, R4, offsets["mount.mnt_parent"]),
            asm.load(8, R1, R10, -56),
            asm.load(8, R2, R10, -64),
            asm.jump("jeq", R1, R2, root, reg=True),
            asm.load(8, R4, R10, -64),
            *asm.read_kernel(R10, -40, 8, R4, offsets["mount.mnt_mountpoint"]),
            asm.load(8, R8, R10, -40),
            asm.load(8, R9, R10, -56),
            asm.alu("add", R9, mount_mnt),
            asm.jump("ja", 0, 0, f"{name}_next{step}"),
            asm.label(f"{name}_name{step}"),
            *asm.read_kernel(R10, -56, 8, R8, offsets["dentry.d_parent"]),
            asm.load(8, R1, R10, -56),
            asm.jump("jeq", R1, R8, root, reg=True),  # a filesystem's own root
            asm.jump("jgt", R6, PATH_BYTES - 1, cut),
            *asm.read_kernel(R10, -16, 8, R8, offsets["dentry.d_name"] + offsets["qstr.name"]),
            asm.load(8, R3, R10, -16),
            asm.mov(R2, R6),
            asm.alu("and", R2, PATH_BYTES - 1),
            asm.mov(R1, R7),
            asm.alu("add", R1, out),
            asm.alu("add", R1, R2, reg=True),
            asm.alu("mov", R2, COMPONENT_BYTES),
            asm.call(asm.PROBE_READ_KERNEL_STR),
            asm.jump("jsle", R0, 0, cut),
            asm.jump("jeq", R0, COMPONENT_BYTES, cut),  # a name that may have been cut
            asm.alu("add", R6, R0, reg=True),
            asm.load(8, R8, R10, -56),
            asm.label(f"{name}_next{step}"),
        ]
    return [
        *items,
        asm.label(cut),  # too deep, too long, or unreadable: not used
        asm.jump("ja", 0, 0, end),
        asm.label(root),
        asm.alu("or", R6, -_PATH_COMPLETE),  # imm is s32, sign-extended; u32 stored below
        asm.label(end),
        asm.load(8, R1, R10, -72),
        asm.jump("jne", R1, 0, linked),
        asm.alu("or", R6, _PATH_DELETED),
        asm.label(linked),
        asm.store(4, R7, length_at, R6),
    ]


def decode_path(area: bytes, word: int, *, root: bool = False) -> tuple[str | None, bool]:
    """The path from the walk's names (leaf first, each ending in NUL) and whether the file was
    unlinked; the path is None unless the walk reached the top of the mount tree within its
    limits. A walk that started at the top names "/" when `root` allows it (a directory)."""
    length = word & ~(_PATH_COMPLETE | _PATH_DELETED)
    deleted = bool(word & _PATH_DELETED)
    if not word & _PATH_COMPLETE or length > len(area):
        return None, deleted
    if length == 0 and root:
        return "/", deleted
    names = area[:length].split(b"\0")[:-1]
    if not names or b"" in names:
        return None, deleted
    return decode(b"/" + b"/".join(reversed(names))), deleted


def _key(record: bytes) -> tuple[int, int]:
    """(tgid, ktime) of a raw record: what pairs it with its exec event."""
    tgid, _pid, _uid, _gid, _start, ktime = _PREFIX.unpack_from(record)
    return tgid, ktime


def decode_record(
    record: bytes | memoryview, tick_ns: int, environ: bytes | None = None
) -> CapturedExec | None:
    """One ring record (and its environment record's block) as a CapturedExec; None when it
    is too short to be one of ours."""
    if len(record) < HEADER_BYTES:
        return None
    (tgid, _pid, uid, gid, start_ns, ktime, ppid, argv_len, name_len, path_len, total, comm) = (
        _HEADER.unpack_from(record)
    )
    argv_len = min(argv_len, len(record) - HEADER_BYTES)
    filename = None
    if 1 < name_len < FILENAME_BYTES:  # counts the NUL; a full buffer may be a cut name
        filename = decode(bytes(record[_FILENAME : _FILENAME + name_len - 1]))
    raw_argv = bytes(record[_ARGV : _ARGV + argv_len])
    path, deleted = decode_path(bytes(record[_PATH : _PATH + PATH_BYTES]), path_len)
    (cwd_len,) = _CWD_WORD.unpack_from(record, _CWD_LEN)
    cwd, cwd_deleted = decode_path(bytes(record[_CWD : _CWD + PATH_BYTES]), cwd_len, root=True)
    if cwd is not None and cwd_deleted:
        cwd += DELETED_SUFFIX
    return CapturedExec(
        tgid=tgid,
        ktime_ns=ktime,
        start_ticks=start_ns // tick_ns,
        ppid=ppid,
        uid=uid,
        gid=gid,
        comm=decode(comm.split(b"\0", 1)[0]),
        filename=SHARED.one(filename),
        path=SHARED.one(path),
        path_deleted=deleted,
        cwd=SHARED.one(cwd),
        argv=SHARED.argv(len(raw_argv), parse_cmdline(raw_argv)),
        argv_complete=0 < argv_len == total,
        context=kernel_context.decode(record[_CONTEXT:_CWD_LEN]),
        environ=environ,
    )


class _Waiting:
    """A record waiting for its exec event, with its environment block once that came."""

    __slots__ = ("environ", "ktime", "raw")

    def __init__(self, ktime: int, raw: bytes) -> None:
        self.ktime = ktime
        self.raw = raw
        self.environ: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.raw) + (len(self.environ) if self.environ is not None else 0)


class Records(Protocol):
    """Where records come from: `bpf.RingBuffer` (tests substitute a list)."""

    def records(self, limit: int) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class ExecCapture:
    """The loaded program, its rings, and the records waiting for their connector event.

    Waiting records are kept raw and decoded when taken, bounded by count and by bytes:
    a process held at its exec (a tracer's PTRACE_EVENT_EXEC stop comes between the record and
    the event) keeps its record waiting, and an unprivileged user can hold thousands. Past
    the bounds the oldest go, counted in `evicted_total`; their execs fall back to /proc."""

    def __init__(
        self,
        fds: tuple[int, ...],
        rings: tuple[Records, Records],
        tick_ns: int,
        *,
        pending_capacity: int = 65_536,
        pending_bytes: int = 32 << 20,
    ) -> None:
        self._fds = fds  # scratch map, the rings' maps, program, attachment
        self._short, self._long = rings
        self._tick_ns = tick_ns
        # tgid -> its records waiting for their exec events, oldest tgid first
        self._pending: collections.OrderedDict[int, collections.deque[_Waiting]] = (
            collections.OrderedDict()
        )
        self._pending_count = 0
        self._pending_size = 0
        self._pending_capacity = pending_capacity
        self._pending_bytes = pending_bytes
        self.unmatched_total = 0  # records whose exec event never came (or came too late)
        self.evicted_total = 0  # records dropped to keep the table within its bounds

    @classmethod
    def open(cls, *, clk_tck: int | None = None, btf_path: str | None = None) -> ExecCapture:
        """Load and attach; raises bpf.BpfError or btf.BtfError (an OSError or Exception
        with the reason) when this kernel or these privileges do not allow it."""
        types = KernelTypes.load(btf_path) if btf_path else KernelTypes.load()
        offsets = types.offsets(_NEEDED)
        context: tuple[dict[str, int], dict[str, int]] | None = None
        try:
            context = (
                types.offsets(kernel_context.NEEDED),
                {name: types.size(name) for name in kernel_context.SIZES},
            )
        except BtfError as error:  # a kernel without audit has no loginuid, say: /proc then
            log.info("exec capture without the process's context: %s", error)
        opened: list[int] = []
        rings: list[bpf.RingBuffer] = []
        try:
            scratch = bpf.create_map(bpf.MAP_PERCPU_ARRAY, 4, SCRATCH_BYTES, 1, "de_exec_tmp")
            opened.append(scratch)
            for name, size in (
                ("de_exec_short", SHORT_RING_BYTES),
                ("de_exec_long", LONG_RING_BYTES),
            ):
                ring_fd = bpf.create_map(bpf.MAP_RINGBUF, 0, 0, size, name)
                opened.append(ring_fd)
                rings.append(bpf.RingBuffer(ring_fd, size))
            code = program(offsets, scratch, opened[1], opened[2], context)
            prog = bpf.load_program(bpf.PROG_RAW_TRACEPOINT, code, LICENSE, "de_exec")
            opened.append(prog)
            opened.append(bpf.attach_raw_tracepoint(TRACEPOINT, prog))
        except BaseException:
            for ring in rings:
                ring.close()
            for fd in opened:
                os.close(fd)
            raise
        tick_ns = 1_000_000_000 // (clk_tck or os.sysconf("SC_CLK_TCK"))
        return cls(tuple(opened), (rings[0], rings[1]), tick_ns)

    def collect(self, limit: int = 65_536) -> int:
        """Move committed records into the pending table; returns how many execs."""
        count = 0
        for record in self._short.records(limit):
            if len(record) >= HEADER_BYTES:
                count += 1
                self._add(bytes(record))
        for record in self._long.records(limit):
            if len(record) >= _ENV_HEAD.size and record[:4] == _ENV_TAG_BYTES:
                self._attach_environment(record)
            elif len(record) >= HEADER_BYTES:
                self._complete(bytes(record))
        return count

    def _add(self, record: bytes) -> None:
        tgid, ktime = _key(record)
        queue = self._pending.get(tgid)
        if queue is None:
            queue = self._pending[tgid] = collections.deque()
        else:
            self._pending.move_to_end(tgid)
        queue.append(_Waiting(ktime, record))
        self._pending_count += 1
        self._pending_size += len(record)
        while (
            self._pending_count > self._pending_capacity or self._pending_size > self._pending_bytes
        ):
            _tgid, oldest = self._pending.popitem(last=False)
            self._pending_count -= len(oldest)
            self._pending_size -= sum(waiting.size for waiting in oldest)
            self.evicted_total += len(oldest)

    def _complete(self, whole: bytes) -> None:
        """A long ring record: the whole argv of an exec whose short record came first."""
        tgid, ktime = _key(whole)
        queue = self._pending.get(tgid)
        for waiting in queue or ():
            if waiting.ktime == ktime:
                self._pending_size += len(whole) - len(waiting.raw)
                waiting.raw = whole
                return
        self._add(whole)  # its short record was lost: the short ring was full

    def _attach_environment(self, record: memoryview | bytes) -> None:
        """An environment record: its block goes with its exec's waiting record (which came
        first in the same ring; without it the block has no use)."""
        tag, tgid, ktime, length = _ENV_HEAD.unpack_from(record)
        if tag != ENV_TAG or length > len(record) - _ENV_HEAD.size:
            return
        for waiting in self._pending.get(tgid) or ():
            if waiting.ktime == ktime and waiting.environ is None:
                block = bytes(record[_ENV_HEAD.size : _ENV_HEAD.size + length])
                waiting.environ = block
                self._pending_size += len(block)
                return

    def take(self, tgid: int, event_ns: int) -> CapturedExec | None:
        """The record of the exec the connector reported for `tgid` at `event_ns`: the newest
        one taken at or before the event. Older ones belonged to execs whose events were lost;
        newer ones to a later exec of the same process, and stay."""
        queue = self._pending.get(tgid)
        if not queue:
            return None
        found = None
        while queue and queue[0].ktime <= event_ns:
            if found is not None:
                self.unmatched_total += 1
            found = queue.popleft()
            self._pending_count -= 1
            self._pending_size -= found.size
        if not queue:
            del self._pending[tgid]
        if found is None:
            return None
        return decode_record(found.raw, self._tick_ns, found.environ)

    def forget(self) -> int:
        """Drop every waiting record: the connector lost events, so a record can no longer be
        told from one whose exec event is gone (which would then give its argv to the next exec
        of the same process). Their execs fall back to /proc. Returns how many."""
        dropped = self._pending_count
        self.unmatched_total += dropped
        self._pending.clear()
        self._pending_count = self._pending_size = 0
        return dropped

    def close(self) -> None:
        self._short.close()
        self._long.close()
        for fd in reversed(self._fds):
            os.close(fd)
