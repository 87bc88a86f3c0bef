"""What the exec capture's program also reads at the exec, from the task itself: the cgroup id,
the ids of every cgroup it is in (one per hierarchy, v1 included), the pid, mount, network and
user namespaces, the login uid, and what fds 0, 1 and 2 are (the inode's type, number, device
and filesystem, and the mount the file was opened through). The context reader
(collector/context.py) takes these instead of reading eleven /proc files and links per new
process, and what they do not settle (a cgroup id never seen, a regular file's path) it still
reads from /proc.

They are the values at the exec itself, inside execve: a process cannot move itself to another
cgroup or namespace, or point its stdio elsewhere, between its exec and our read of /proc and
have that read count. The block sits in the record after the path walk's area
(exec_capture.py); every item carries a flag or a state saying whether the kernel read it, and
an item the kernel could not read is read from /proc as before.
"""

from __future__ import annotations

import stat
import struct
from dataclasses import dataclass, field

from daemoneye.collector import bpf_asm as asm
from daemoneye.collector.bpf_asm import R0, R1, R6, R7, R8, R9, R10

NEEDED = {
    "task_struct": ("thread_pid", "nsproxy", "real_cred", "loginuid", "files", "cgroups"),
    "pid": ("level", "numbers"),
    "upid": ("ns",),
    "pid_namespace": ("ns",),
    "ns_common": ("inum",),
    "nsproxy": ("mnt_ns", "net_ns"),
    "mnt_namespace": ("ns",),
    "net": ("ns",),
    "cred": ("user_ns",),
    "user_namespace": ("ns",),
    "files_struct": ("fdt",),
    "fdtable": ("max_fds", "fd"),
    "file": ("f_inode", "f_path"),
    "path": ("mnt", "dentry"),
    "mount": ("mnt", "mnt_id"),
    "inode": ("i_mode", "i_ino", "i_rdev", "i_sb", "i_generation"),
    "super_block": ("s_dev",),
    "css_set": ("cgrp_links", "dfl_cgrp"),
    "cgrp_cset_link": ("cgrp", "cgrp_link"),
    "cgroup": ("kn", "root"),
    "cgroup_root": ("hierarchy_id",),
    "kernfs_node": ("id",),
    "list_head": ("next",),
}
SIZES = ("upid",)  # struct sizes the program needs (pid.numbers is an array of upid)
MAX_PID_LEVEL = 32  # MAX_PID_NS_LEVEL: pid namespaces nest at most this deep

# The block: cgroup id, four namespace inodes, login uid, flags, then three fds, then the ids
# of the cgroups the task is in, one per hierarchy (its css_set's links, walked in the kernel's
# order), with their count and whether the walk reached the list's end.
_HEAD = struct.Struct("<QIIIIII")
# inode number, rdev, the filesystem's dev, mode, state, the mount's id, whether it was read,
# the dentry (which of the file's links was opened), the inode's generation
_FD = struct.Struct("<QIIIIIIQI4x")
CGROUP_LINKS = 16  # hierarchies walked at most (a hybrid host has about a dozen)
_CGROUPS = _HEAD.size + 3 * _FD.size
_CGROUP_IDS = _CGROUPS + 8
LINK = struct.Struct("<QQ")  # hierarchy id, cgroup id
BYTES = _CGROUP_IDS + LINK.size * CGROUP_LINKS  # 440
_LINKS_WHOLE = 1 << 31
_CGROUP, _PID_NS, _MNT_NS, _NET_NS, _USER_NS, _LOGINUID, _FLAGS = 0, 8, 12, 16, 20, 24, 28
_FD_INO, _FD_RDEV, _FD_SDEV, _FD_MODE, _FD_STATE = 0, 8, 12, 16, 20
_FD_MNT, _FD_MNT_READ, _FD_DENTRY, _FD_GENERATION = 24, 28, 32, 40
# flags: which of the head's values the kernel read
HAS_CGROUP, HAS_PID_NS, HAS_MNT_NS, HAS_NET_NS, HAS_USER_NS, HAS_LOGINUID = (
    1 << i for i in range(6)
)
# a fd's state
FD_UNKNOWN, FD_OPEN, FD_CLOSED = 0, 1, 2
# scratch slots on the program's stack (exec_capture.py uses -4 .. -72 and -120 .. -128)
TASK_SLOT = -80
_TMP, _NSPROXY, _MAX_FDS, _FDS, _LINKS_HEAD, _CGRP = -88, -96, -104, -112, -136, -144
_FILE = -168  # below task_iter.py's slots


@dataclass(frozen=True, slots=True)
class KernelFd:
    """One of fds 0-2 at the exec: `state` FD_OPEN (with its inode), FD_CLOSED or FD_UNKNOWN.
    `mount_id` is the id of the mount the file was opened through (fdinfo's `mnt_id`), None
    when it could not be read; `dentry` the kernel's address of the link opened (0: not read),
    a key only, never shown; `generation` the inode's (filesystems draw it anew when they
    reuse an inode number)."""

    state: int
    mode: int = 0
    inode: int = 0
    rdev: int = 0
    fs_dev: int = 0
    mount_id: int | None = None
    dentry: int = field(default=0, repr=False)
    generation: int = 0

    @property
    def is_socket(self) -> bool:
        return stat.S_ISSOCK(self.mode)

    @property
    def is_pipe(self) -> bool:
        return stat.S_ISFIFO(self.mode)

    @property
    def is_char_device(self) -> bool:
        return stat.S_ISCHR(self.mode)


@dataclass(frozen=True, slots=True)
class KernelContext:
    """The block decoded; None where the kernel could not read a value."""

    cgroup_id: int | None
    pid_ns: int | None
    mnt_ns: int | None
    net_ns: int | None
    user_ns: int | None
    loginuid: int | None  # the raw value: 4294967295 is "no login"
    stdio: tuple[KernelFd, KernelFd, KernelFd]
    # (hierarchy id, cgroup id) of every cgroup it is in, packed in the kernel's order (see
    # `cgroups`); None: not walked to the end. A cgroup id is never reused in its hierarchy
    # while the machine runs: equal keys, the same cgroups.
    cgroup_key: bytes | None = None

    @property
    def cgroups(self) -> dict[int, int]:
        """hierarchy id → the id of the task's cgroup in it ({} when not walked)."""
        if self.cgroup_key is None:
            return {}
        return dict(LINK.iter_unpack(self.cgroup_key))

    @property
    def namespaces(self) -> tuple[int | None, int | None, int | None, int | None]:
        return self.pid_ns, self.mnt_ns, self.net_ns, self.user_ns


_UNKNOWN_FD = KernelFd(FD_UNKNOWN)
_CLOSED_FD = KernelFd(FD_CLOSED)


def decode(block: bytes | memoryview) -> KernelContext | None:
    """The block at the end of a record's header; None when the program did not write one."""
    if len(block) < BYTES:
        return None
    cgroup_id, pid_ns, mnt_ns, net_ns, user_ns, loginuid, flags = _HEAD.unpack_from(block)
    if not flags:
        return None
    fds = []
    for index in range(3):
        inode, rdev, fs_dev, mode, state, mount_id, mount_read, dentry, generation = (
            _FD.unpack_from(block, _HEAD.size + index * _FD.size)
        )
        if state == FD_OPEN:
            mount = mount_id if mount_read else None
            fds.append(KernelFd(FD_OPEN, mode, inode, rdev, fs_dev, mount, dentry, generation))
        else:
            fds.append(_CLOSED_FD if state == FD_CLOSED else _UNKNOWN_FD)
    (links,) = struct.unpack_from("<I", block, _CGROUPS)
    count = links & ~_LINKS_WHOLE
    cgroup_key = None
    if links & _LINKS_WHOLE and 0 < count <= CGROUP_LINKS:
        cgroup_key = bytes(block[_CGROUP_IDS : _CGROUP_IDS + LINK.size * count])
    return KernelContext(
        cgroup_id if flags & HAS_CGROUP and cgroup_id else None,
        pid_ns if flags & HAS_PID_NS and pid_ns else None,
        mnt_ns if flags & HAS_MNT_NS and mnt_ns else None,
        net_ns if flags & HAS_NET_NS and net_ns else None,
        user_ns if flags & HAS_USER_NS and user_ns else None,
        loginuid if flags & HAS_LOGINUID else None,
        (fds[0], fds[1], fds[2]),
        cgroup_key,
    )


# -- the program's part -------------------------------------------------------------------------


def _flag_if_read(bit: int, label: str) -> list[asm.Item]:
    """Set `bit` in the flags (r6) when the probe read just made succeeded."""
    return [asm.jump("jne", R0, 0, label), asm.alu("or", R6, bit), asm.label(label)]


def program_part(
    offsets: dict[str, int], sizes: dict[str, int], at: int, *, current: bool = True
) -> list[asm.Item]:
    """The instructions that fill the block at record offset `at`. Expects the record in r7
    and the task at TASK_SLOT on the stack; uses r6, r8 and r9 and the slots above. `current`:
    the task is the one running (the exec tracepoint), whose cgroup id a helper gives; else
    (an iterator over every task) it is read from the task's css_set."""
    inum = offsets["ns_common.inum"]
    items: list[asm.Item] = [asm.alu("mov", R1, 0)]
    items += [asm.store(8, R7, at + i, R1) for i in range(0, BYTES, 8)]  # the map is reused
    items += [asm.alu("mov", R6, 0)]
    if current:
        items += [asm.call(asm.GET_CURRENT_CGROUP_ID), asm.store(8, R7, at + _CGROUP, R0)]
    else:  # task->cgroups->dfl_cgrp->kn->id
        items += [
            asm.load(8, R9, R10, TASK_SLOT),
            *asm.follow(R9, offsets["task_struct.cgroups"], _TMP),
            *asm.follow(R9, offsets["css_set.dfl_cgrp"], _TMP),
            *asm.follow(R9, offsets["cgroup.kn"], _TMP),
            *asm.read_kernel(R7, at + _CGROUP, 8, R9, offsets["kernfs_node.id"]),
            asm.load(8, R0, R7, at + _CGROUP),
        ]
    items += [
        asm.jump("jeq", R0, 0, "ctx_no_cgroup"),
        asm.alu("or", R6, HAS_CGROUP),
        asm.label("ctx_no_cgroup"),
        # the pid namespace it sees: task->thread_pid->numbers[level].ns (task_active_pid_ns)
        asm.load(8, R8, R10, TASK_SLOT),
        asm.mov(R9, R8),
        *asm.follow(R9, offsets["task_struct.thread_pid"], _TMP),
        asm.alu("mov", R1, 0),
        asm.store(8, R10, _TMP, R1),
        *asm.read_kernel(R10, _TMP, 4, R9, offsets["pid.level"]),
        asm.jump("jne", R0, 0, "ctx_pid_done"),
        asm.load(8, R1, R10, _TMP),
        asm.jump("jgt", R1, MAX_PID_LEVEL, "ctx_pid_done"),
        asm.alu("mul", R1, sizes["upid"]),
        asm.alu("add", R9, R1, reg=True),
        *asm.follow(R9, offsets["pid.numbers"] + offsets["upid.ns"], _TMP),
        *asm.read_kernel(R7, at + _PID_NS, 4, R9, offsets["pid_namespace.ns"] + inum),
        *_flag_if_read(HAS_PID_NS, "ctx_pid_read"),
        asm.label("ctx_pid_done"),
        # mount and network: task->nsproxy->{mnt_ns,net_ns}->ns.inum
        asm.mov(R9, R8),
        *asm.follow(R9, offsets["task_struct.nsproxy"], _TMP),
        asm.store(8, R10, _NSPROXY, R9),
        *asm.follow(R9, offsets["nsproxy.mnt_ns"], _TMP),
        *asm.read_kernel(R7, at + _MNT_NS, 4, R9, offsets["mnt_namespace.ns"] + inum),
        *_flag_if_read(HAS_MNT_NS, "ctx_mnt_read"),
        asm.load(8, R9, R10, _NSPROXY),
        *asm.follow(R9, offsets["nsproxy.net_ns"], _TMP),
        *asm.read_kernel(R7, at + _NET_NS, 4, R9, offsets["net.ns"] + inum),
        *_flag_if_read(HAS_NET_NS, "ctx_net_read"),
        # user: task->real_cred->user_ns->ns.inum (what /proc/PID/ns/user names)
        asm.mov(R9, R8),
        *asm.follow(R9, offsets["task_struct.real_cred"], _TMP),
        *asm.follow(R9, offsets["cred.user_ns"], _TMP),
        *asm.read_kernel(R7, at + _USER_NS, 4, R9, offsets["user_namespace.ns"] + inum),
        *_flag_if_read(HAS_USER_NS, "ctx_user_read"),
        *asm.read_kernel(R7, at + _LOGINUID, 4, R8, offsets["task_struct.loginuid"]),
        *_flag_if_read(HAS_LOGINUID, "ctx_loginuid_read"),
        asm.store(4, R7, at + _FLAGS, R6),
        # stdio: task->files->fdt; fd[i] for i < max_fds
        asm.mov(R9, R8),
        *asm.follow(R9, offsets["task_struct.files"], _TMP),
        *asm.follow(R9, offsets["files_struct.fdt"], _TMP),
        asm.alu("mov", R1, 0),
        asm.store(8, R10, _MAX_FDS, R1),
        *asm.read_kernel(R10, _MAX_FDS, 4, R9, offsets["fdtable.max_fds"]),
        asm.jump("jne", R0, 0, "ctx_stdio_done"),
        *asm.follow(R9, offsets["fdtable.fd"], _TMP),
        asm.store(8, R10, _FDS, R9),
    ]
    for index in range(3):
        fd_at = at + _HEAD.size + index * _FD.size
        done = f"ctx_fd{index}_done"
        items += [
            asm.load(8, R1, R10, _MAX_FDS),
            asm.jump("jgt", R1, index, f"ctx_fd{index}_in"),
            asm.alu("mov", R1, FD_CLOSED),
            asm.store(4, R7, fd_at + _FD_STATE, R1),
            asm.jump("ja", 0, 0, done),
            asm.label(f"ctx_fd{index}_in"),
            asm.load(8, R9, R10, _FDS),
            *asm.read_kernel(R10, _TMP, 8, R9, 8 * index),
            asm.jump("jne", R0, 0, done),
            asm.load(8, R9, R10, _TMP),
            asm.jump("jne", R9, 0, f"ctx_fd{index}_file"),
            asm.alu("mov", R1, FD_CLOSED),
            asm.store(4, R7, fd_at + _FD_STATE, R1),
            asm.jump("ja", 0, 0, done),
            asm.label(f"ctx_fd{index}_file"),
            asm.store(8, R10, _FILE, R9),
            *asm.follow(R9, offsets["file.f_inode"], _TMP),
            *asm.read_kernel(R7, fd_at + _FD_INO, 8, R9, offsets["inode.i_ino"]),
            *asm.read_kernel(R7, fd_at + _FD_RDEV, 4, R9, offsets["inode.i_rdev"]),
            *asm.read_kernel(R7, fd_at + _FD_GENERATION, 4, R9, offsets["inode.i_generation"]),
            *asm.read_kernel(R7, fd_at + _FD_MODE, 2, R9, offsets["inode.i_mode"]),
            asm.jump("jne", R0, 0, done),
            *asm.follow(R9, offsets["inode.i_sb"], _TMP),
            *asm.read_kernel(R7, fd_at + _FD_SDEV, 4, R9, offsets["super_block.s_dev"]),
            asm.jump("jne", R0, 0, done),
            # the link opened, then the mount: file->f_path.dentry, file->f_path.mnt (the
            # vfsmount inside a struct mount)
            asm.load(8, R9, R10, _FILE),
            *asm.read_kernel(
                R7, fd_at + _FD_DENTRY, 8, R9, offsets["file.f_path"] + offsets["path.dentry"]
            ),
            asm.load(8, R9, R10, _FILE),
            *asm.follow(R9, offsets["file.f_path"] + offsets["path.mnt"], _TMP),
            asm.alu("sub", R9, offsets["mount.mnt"]),
            *asm.read_kernel(R7, fd_at + _FD_MNT, 4, R9, offsets["mount.mnt_id"]),
            asm.jump("jne", R0, 0, f"ctx_fd{index}_open"),
            asm.alu("mov", R1, 1),
            asm.store(4, R7, fd_at + _FD_MNT_READ, R1),
            asm.label(f"ctx_fd{index}_open"),
            asm.alu("mov", R1, FD_OPEN),
            asm.store(4, R7, fd_at + _FD_STATE, R1),
            asm.label(done),
        ]
    return [*items, asm.label("ctx_stdio_done"), *_cgroup_links(offsets, at)]


def _cgroup_links(offsets: dict[str, int], at: int) -> list[asm.Item]:
    """The ids of the task's cgroups: task->cgroups (its css_set), whose cgrp_links list has
    one cgrp_cset_link per hierarchy; each ->cgrp->kn->id. r9 walks the list, r6 counts."""
    link_node = offsets["cgrp_cset_link.cgrp_link"]
    items: list[asm.Item] = [
        asm.load(8, R9, R10, TASK_SLOT),
        *asm.follow(R9, offsets["task_struct.cgroups"], _TMP),
        asm.alu("add", R9, offsets["css_set.cgrp_links"]),
        asm.store(8, R10, _LINKS_HEAD, R9),
        *asm.follow(R9, offsets["list_head.next"], _TMP),
        asm.alu("mov", R6, 0),
    ]
    for index in range(CGROUP_LINKS):
        pair = at + _CGROUP_IDS + LINK.size * index
        items += [
            *asm.list_entry(R9, _LINKS_HEAD, R8, link_node, "ctx_links_whole", "ctx_links_cut"),
            *asm.follow(R8, offsets["cgrp_cset_link.cgrp"], _TMP),
            asm.store(8, R10, _CGRP, R8),
            *asm.follow(R8, offsets["cgroup.kn"], _TMP),
            *asm.read_kernel(R7, pair + 8, 8, R8, offsets["kernfs_node.id"]),
            asm.jump("jne", R0, 0, "ctx_links_cut"),
            asm.load(8, R8, R10, _CGRP),
            *asm.follow(R8, offsets["cgroup.root"], _TMP),
            *asm.read_kernel(R7, pair, 4, R8, offsets["cgroup_root.hierarchy_id"]),
            asm.jump("jne", R0, 0, "ctx_links_cut"),
            asm.alu("add", R6, 1),
            *asm.follow(R9, offsets["list_head.next"], _TMP),
        ]
    return [
        *items,
        asm.load(8, R1, R10, _LINKS_HEAD),
        asm.jump("jeq", R9, R1, "ctx_links_whole", reg=True),
        asm.jump("ja", 0, 0, "ctx_links_cut"),  # more hierarchies than CGROUP_LINKS
        asm.label("ctx_links_whole"),
        asm.alu("or", R6, -_LINKS_WHOLE),  # imm is s32, sign-extended; u32 stored below
        asm.label("ctx_links_cut"),
        asm.store(4, R7, at + _CGROUPS, R6),
    ]
