"""The context the exec capture reads in the kernel (collector/kernel_context.py) and what the
context reader makes of it: values the kernel gave are not read from /proc again, what it left
unread is, and what is kept between processes (a cgroup id's path, a device's name) is kept
only after /proc showed it belongs to them."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import struct
from pathlib import Path

import pytest

from daemoneye.collector import context as context_module
from daemoneye.collector import kernel_context
from daemoneye.collector.cgroup_ids import LIFETIME, CgroupIds, hierarchy_mounts
from daemoneye.collector.context import Context, ContextReader
from daemoneye.collector.kernel_context import (
    FD_CLOSED,
    FD_OPEN,
    FD_UNKNOWN,
    HAS_CGROUP,
    HAS_LOGINUID,
    HAS_MNT_NS,
    HAS_NET_NS,
    HAS_PID_NS,
    HAS_USER_NS,
    LINK,
    KernelContext,
    KernelFd,
)
from tests.unit.test_context import DOCKER_ID, STAT, fake_process

ALL = HAS_CGROUP | HAS_PID_NS | HAS_MNT_NS | HAS_NET_NS | HAS_USER_NS | HAS_LOGINUID
PIPE = KernelFd(FD_OPEN, stat.S_IFIFO | 0o600, 5)
SOCKET = KernelFd(FD_OPEN, stat.S_IFSOCK | 0o777, 222)
CLOSED = KernelFd(FD_CLOSED)
UNKNOWN = KernelFd(FD_UNKNOWN)


def block(
    flags: int = ALL,
    *,
    cgroup: int = 77,
    namespaces: tuple[int, int, int, int] = (110, 11, 12, 13),
    loginuid: int = 1000,
    fds: tuple[tuple[int, ...], ...] = ((5, 0, 15, 0o10600, FD_OPEN, 0, 0, 0, 0),) * 3,
    links: tuple[tuple[int, int], ...] = (),
    whole: bool = True,
) -> bytes:
    head = struct.pack("<QIIIIII", cgroup, *namespaces, loginuid, flags)
    head += b"".join(struct.pack("<QIIIIIIQI4x", *fd) for fd in fds)
    head += struct.pack("<I4x", len(links) | (1 << 31 if whole else 0))
    head += b"".join(LINK.pack(*pair) for pair in links)
    return head.ljust(kernel_context.BYTES, b"\0")


def device(path: str) -> KernelFd:
    """What the kernel would say of an fd open on the device at `path`."""
    found = os.stat(path)
    return KernelFd(
        FD_OPEN, found.st_mode, found.st_ino, _kernel_dev(found.st_rdev), _kernel_dev(found.st_dev)
    )


def _kernel_dev(dev: int) -> int:
    return os.major(dev) << 20 | os.minor(dev)


def kernel(
    *,
    cgroup: int | None = None,
    links: dict[int, int] | None = None,
    namespaces: tuple[int | None, ...] = (110, 11, 12, 13),
    loginuid: int | None = 1000,
    stdio: tuple[KernelFd, KernelFd, KernelFd] = (PIPE, PIPE, PIPE),
) -> KernelContext:
    pid_ns, mnt_ns, net_ns, user_ns = namespaces
    key = None if links is None else b"".join(LINK.pack(*pair) for pair in links.items())
    return KernelContext(cgroup, pid_ns, mnt_ns, net_ns, user_ns, loginuid, stdio, key)


def read(
    reader: ContextReader,
    proc: Path,
    given: KernelContext | None,
    environ: bytes | None = None,
) -> Context:
    fd = os.open(proc, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return Context(*reader.read_values(fd, STAT, 500, given, environ))
    finally:
        os.close(fd)


def bare_process(root: Path, pid: int) -> Path:
    """A /proc/<pid> with stat, cgroup and environ only: no namespace links, no loginuid,
    no fds. Whatever the reader gives beyond those came from the kernel's block."""
    proc = fake_process(root, pid, fds={}, environ=b"LD_PRELOAD=/proc-read.so\0")
    for name in ("pid", "mnt", "net", "user"):
        (proc / "ns" / name).unlink()
    (proc / "loginuid").unlink()
    return proc


# -- the block ---------------------------------------------------------------------------------


def test_a_block_decodes_to_what_the_kernel_read() -> None:
    fds = (
        (5, 0, 15, 0o10600, FD_OPEN, 0, 0, 0, 0),  # the mount not read
        (0, 0, 0, 0, FD_CLOSED, 0, 0, 0, 0),
        (9, 0, 0, 0, FD_UNKNOWN, 0, 0, 0, 0),
    )
    found = kernel_context.decode(block(fds=fds))
    assert found == KernelContext(
        77, 110, 11, 12, 13, 1000, (KernelFd(FD_OPEN, 0o10600, 5, 0, 15), CLOSED, UNKNOWN)
    )
    address = 0xFFFF_8880_1234_5678  # a kernel address: a cache key, never shown
    opened = (5, 0, 15, 0o100644, FD_OPEN, 0, 1, address, 3141)
    mounted = kernel_context.decode(block(fds=(opened,) * 3))
    assert mounted is not None and mounted.stdio[0].mount_id == 0  # read, and 0
    assert mounted.stdio[0].dentry == address and str(address) not in repr(mounted)
    assert mounted.stdio[0].generation == 3141
    assert found is not None and found.stdio[0].is_pipe and not found.stdio[0].is_socket


def test_the_cgroups_of_every_hierarchy_are_a_key_only_when_walked_to_the_end() -> None:
    found = kernel_context.decode(block(links=((0, 1), (4, 44750), (9, 1))))
    assert found is not None and found.cgroups == {0: 1, 4: 44750, 9: 1}
    cut = kernel_context.decode(block(links=((0, 1), (4, 44750)), whole=False))
    assert cut is not None and cut.cgroup_key is None and cut.cgroups == {}
    none = kernel_context.decode(block(links=()))
    assert none is not None and none.cgroup_key is None


def test_values_the_kernel_could_not_read_are_none_and_no_flags_is_no_block() -> None:
    found = kernel_context.decode(block(HAS_PID_NS | HAS_USER_NS, loginuid=0))
    assert found is not None
    assert found.namespaces == (110, None, None, 13)
    assert found.cgroup_id is None and found.loginuid is None  # 0 is root: only with its flag
    root = kernel_context.decode(block(HAS_LOGINUID, loginuid=0))
    assert root is not None and root.loginuid == 0
    assert kernel_context.decode(block(0)) is None
    assert kernel_context.decode(block()[:-1]) is None


# -- the reader with a block -------------------------------------------------------------------


def test_what_the_kernel_gave_is_not_read_from_proc(tmp_path: Path) -> None:
    fake_process(tmp_path, 1, fds={})
    proc = bare_process(tmp_path, 4242)
    stdio = (SOCKET, PIPE, CLOSED)
    found = read(ContextReader(os.fsencode(tmp_path)), proc, kernel(stdio=stdio))
    assert (found.pid_ns, found.mnt_ns, found.net_ns, found.user_ns) == (110, 11, 12, 13)
    assert found.ns_foreign == "pid"  # init's pid namespace is 10
    assert found.loginuid == 1000
    assert (found.stdin, found.stdout, found.stderr) == ("socket:[222]", "pipe:[5]", "closed")
    assert (found.container_runtime, found.container_id) == ("docker", DOCKER_ID)  # /proc


def test_processes_writing_to_one_pipe_hold_one_name_for_it(tmp_path: Path) -> None:
    """A supervisor's thousands of workers log to one pipe: each record holds the same
    string, not one of its own (129 bytes a process at 10,000)."""
    fake_process(tmp_path, 1, fds={})
    reader = ContextReader(os.fsencode(tmp_path))
    first = read(reader, bare_process(tmp_path, 4242), kernel(stdio=(CLOSED, PIPE, PIPE)))
    second = read(reader, bare_process(tmp_path, 4243), kernel(stdio=(CLOSED, PIPE, PIPE)))
    assert first.stdout == second.stderr == "pipe:[5]"
    assert first.stdout is first.stderr is second.stdout is second.stderr


def test_what_the_kernel_left_unread_is_read_from_proc(tmp_path: Path) -> None:
    fake_process(tmp_path, 1, fds={})
    proc = fake_process(tmp_path, 4242, fds={0: "pipe:[9]", 1: "/var/log/app.log"})
    given = kernel(namespaces=(None, 11, 12, 13), loginuid=None, stdio=(UNKNOWN, UNKNOWN, CLOSED))
    found = read(ContextReader(os.fsencode(tmp_path)), proc, given)
    assert (found.pid_ns, found.ns_foreign) == (110, "pid")  # all four links, read
    assert found.loginuid == 1000  # the file
    assert (found.stdin, found.stdout, found.stderr) == (
        "pipe:[9]",
        "file:/var/log/app.log",
        "closed",
    )


def test_no_login_is_none_as_in_the_file(tmp_path: Path) -> None:
    fake_process(tmp_path, 1, fds={})
    proc = bare_process(tmp_path, 4242)
    found = read(ContextReader(os.fsencode(tmp_path)), proc, kernel(loginuid=4294967295))
    assert found.loginuid is None


def test_the_environment_taken_at_the_exec_is_used_and_still_only_by_allow_list(
    tmp_path: Path,
) -> None:
    fake_process(tmp_path, 1, fds={})
    proc = bare_process(tmp_path, 4242)
    taken = b"LD_PRELOAD=/dev/shm/.x.so\0AWS_SECRET_ACCESS_KEY=hunter2\0"
    found = read(ContextReader(os.fsencode(tmp_path)), proc, kernel(), taken)
    assert json.loads(found.environment or "") == {"LD_PRELOAD": "/dev/shm/.x.so"}
    assert "hunter2" not in repr(found)


def test_a_process_gone_before_proc_was_read_keeps_the_kernels_context(tmp_path: Path) -> None:
    fake_process(tmp_path, 1, fds={})
    reader = ContextReader(os.fsencode(tmp_path))
    found = Context(
        *reader.read_values(None, None, 500, kernel(stdio=(SOCKET, PIPE, CLOSED)), b"HISTFILE=\0")
    )
    assert (found.pid_ns, found.ns_foreign, found.loginuid) == (110, "pid", 1000)
    assert (found.stdin, found.stdout, found.stderr) == ("socket:[222]", "pipe:[5]", "closed")
    assert json.loads(found.environment or "") == {"HISTFILE": ""}
    assert found.cgroup is None and found.session_id is None  # nothing known of them
    over_ssh = b"SSH_CONNECTION=10.0.0.9 51234 10.0.0.1 22\0"
    gone = Context(*reader.read_values(None, None, 500, kernel(), over_ssh))
    assert (gone.ssh_client, gone.ssh_source) == ("10.0.0.9 51234", "process")


# -- what is kept between processes ---------------------------------------------------------


def test_a_devices_name_is_kept_only_when_it_names_that_device_here(tmp_path: Path) -> None:
    """A link read through /proc is the path in the process's own mount namespace, where a
    user namespace can bind a device over any name: a name stands for every process on that
    device only when the same path is that device in procmond's namespace."""
    fake_process(tmp_path, 1, fds={})
    null, zero = device("/dev/null"), device("/dev/zero")
    reader = ContextReader(os.fsencode(tmp_path))
    alias = tmp_path / "root-ssh-session-pts-0"  # another name for /dev/null, as a bind shows
    alias.symlink_to("/dev/null")
    decoy = fake_process(tmp_path, 4242, fds={1: str(alias)})
    assert read(reader, decoy, kernel(stdio=(PIPE, null, CLOSED))).stdout == f"file:{alias}"
    honest = fake_process(tmp_path, 4243, fds={1: "/dev/null", 2: str(alias)})
    found = read(reader, honest, kernel(stdio=(PIPE, null, null)))
    assert (found.stdout, found.stderr) == (
        "file:/dev/null",
        "file:/dev/null",
    )  # kept, not the alias
    replaced = read(reader, decoy, kernel(stdio=(PIPE, zero, CLOSED))).stdout
    assert replaced is not None and replaced.startswith("other:")


def _fdinfo(proc: Path, fd: int, inode: int, mount_id: int = 24, own: str = "") -> None:
    """What /proc/<pid>/fdinfo/<fd> says of an open file (its inode since Linux 5.14), with
    the file's own lines after the kernel's."""
    (proc / "fdinfo").mkdir(exist_ok=True)
    (proc / "fdinfo" / str(fd)).write_text(
        f"pos:\t0\nflags:\t02\nmnt_id:\t{mount_id}\nino:\t{inode}\n{own}"
    )


def test_an_fd_pointed_elsewhere_since_the_exec_is_the_kernels_inode_alone(
    tmp_path: Path,
) -> None:
    fake_process(tmp_path, 1, fds={})
    at_exec, after = tmp_path / "at-exec.log", tmp_path / "after.log"
    at_exec.write_text("")
    after.write_text("")
    seen = KernelFd(FD_OPEN, stat.S_IFREG | 0o644, os.stat(at_exec).st_ino)
    proc = fake_process(tmp_path, 4242, fds={1: str(after), 2: str(at_exec)})
    _fdinfo(proc, 1, os.stat(after).st_ino)
    _fdinfo(proc, 2, seen.inode)
    found = read(ContextReader(os.fsencode(tmp_path)), proc, kernel(stdio=(PIPE, seen, seen)))
    assert found.stdout == f"other:inode {seen.inode} (replaced since the exec)"
    assert found.stderr == f"file:{at_exec}"


def test_a_file_with_the_same_inode_number_through_another_mount_is_not_the_execs(
    tmp_path: Path,
) -> None:
    """An inode number is unique only within its filesystem: when the kernel gave the mount
    the file was opened through, fdinfo's must be that one too (and the kernel's own lines
    count, not ones the file adds after them)."""
    fake_process(tmp_path, 1, fds={})
    seen = KernelFd(FD_OPEN, stat.S_IFREG | 0o644, 4711, mount_id=31)
    proc = fake_process(tmp_path, 4242, fds={1: "/mnt/other/x.log", 2: "/var/log/x.log"})
    _fdinfo(proc, 1, 4711, mount_id=99, own="mnt_id:\t31\n")
    _fdinfo(proc, 2, 4711, mount_id=31)
    found = read(ContextReader(os.fsencode(tmp_path)), proc, kernel(stdio=(PIPE, seen, seen)))
    assert found.stdout == "other:inode 4711 (replaced since the exec)"
    assert found.stderr == "file:/var/log/x.log"


def _opened(path: Path, dentry: int) -> KernelFd:
    """What the kernel says of an fd open on the regular file at `path`, as the block gives
    it: inode, filesystem, the mount (as fdinfo names it) and a stand-in for the dentry."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            mount = int(info.read().split("mnt_id:")[1].split()[0])
        found = os.fstat(fd)
    finally:
        os.close(fd)
    mode, inode, dev = found.st_mode, found.st_ino, _kernel_dev(found.st_dev)
    return KernelFd(FD_OPEN, mode, inode, 0, dev, mount_id=mount, dentry=dentry)


def test_a_process_moving_its_fd_between_the_check_and_the_read_cannot_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check (inode and mount) and the name come through procmond's own descriptor: a
    process that points its fd at a decoy the moment after the check does not give the file
    the decoy's name, for itself or for the next process on that file."""
    fake_process(tmp_path, 1, fds={})
    log, decoy = tmp_path / "app.log", tmp_path / "EVIL-NAME"
    log.write_text("")
    decoy.write_text("")
    seen = _opened(log, dentry=1)
    attacker = fake_process(tmp_path, 4242, fds={1: str(log)})
    checked = context_module._fdinfo_value

    def then_flip(raw: bytes, key: bytes) -> bytes | None:
        (attacker / "fd" / "1").unlink(missing_ok=True)
        (attacker / "fd" / "1").symlink_to(decoy)  # the process points fd 1 at the decoy
        return checked(raw, key)

    monkeypatch.setattr(context_module, "_fdinfo_value", then_flip)
    reader = ContextReader(os.fsencode(tmp_path))
    assert read(reader, attacker, kernel(stdio=(PIPE, seen, CLOSED))).stdout == f"file:{log}"
    victim = fake_process(tmp_path, 4243, fds={1: str(log)})
    assert read(reader, victim, kernel(stdio=(PIPE, seen, CLOSED))).stdout == f"file:{log}"


def test_a_file_of_another_generation_is_named_anew(tmp_path: Path) -> None:
    """A dentry's address and an inode's number freed during a scan may come back for another
    file: the inode's generation, which the filesystem draws anew, tells them apart."""
    fake_process(tmp_path, 1, fds={})
    gone, new = tmp_path / "gone.log", tmp_path / "new.log"
    gone.write_text("")
    new.write_text("")
    reader = ContextReader(os.fsencode(tmp_path))
    first = _opened(gone, dentry=1)
    # the new file as the kernel would give it after the reuse: dentry, inode and mount alike
    reused = dataclasses.replace(_opened(new, dentry=1), inode=first.inode, generation=7)
    early = fake_process(tmp_path, 4242, fds={1: str(gone)})
    assert read(reader, early, kernel(stdio=(PIPE, first, CLOSED))).stdout == f"file:{gone}"
    later = fake_process(tmp_path, 4243, fds={1: str(new)})
    named = read(reader, later, kernel(stdio=(PIPE, reused, CLOSED))).stdout
    assert named is not None and "gone.log" not in named  # not the earlier file's name


def test_each_link_of_a_file_keeps_its_own_name(tmp_path: Path) -> None:
    """Hard links share an inode (and a btrfs subvolume's inode numbers repeat under one
    device): the name is kept per dentry, the link the process opened."""
    fake_process(tmp_path, 1, fds={})
    real, alias = tmp_path / "real.log", tmp_path / "innocent.log"
    real.write_text("")
    os.link(real, alias)
    reader = ContextReader(os.fsencode(tmp_path))
    first = fake_process(tmp_path, 4242, fds={1: str(alias)})
    second = fake_process(tmp_path, 4243, fds={1: str(real)})
    by_alias, by_real = _opened(alias, dentry=1), _opened(real, dentry=2)
    assert read(reader, first, kernel(stdio=(PIPE, by_alias, CLOSED))).stdout == f"file:{alias}"
    assert read(reader, second, kernel(stdio=(PIPE, by_real, CLOSED))).stdout == f"file:{real}"


def test_a_file_on_stdio_is_checked_without_asking_its_filesystem(tmp_path: Path) -> None:
    """The inode comes from fdinfo, which no filesystem answers: a `stat` through the link
    would ask the file's own filesystem, and a user's FUSE mount can stall that at will. Here
    the link names nothing stat could find, and the file is still named."""
    fake_process(tmp_path, 1, fds={})
    seen = KernelFd(FD_OPEN, stat.S_IFREG | 0o644, 4711)
    proc = fake_process(tmp_path, 4242, fds={1: "/home/mallory/fuse/slow.log"})
    _fdinfo(proc, 1, 4711)
    found = read(ContextReader(os.fsencode(tmp_path)), proc, kernel(stdio=(PIPE, seen, CLOSED)))
    assert found.stdout == "file:/home/mallory/fuse/slow.log"


def _cgroup_tree(root: Path, *paths: str) -> dict[str, int]:
    """Directories standing for cgroups; each one's inode number is its cgroup id."""
    ids = {}
    for path in paths:
        directory = root / path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        ids[path] = os.stat(directory).st_ino
    return ids


def test_on_a_v1_host_every_line_must_be_the_kernels_cgroup_to_be_kept(tmp_path: Path) -> None:
    """A container on a v1 host: the unified line says '/', the memory line names the
    container. The file is kept under every hierarchy's ids once each line's directory has the
    kernel's id for its hierarchy; the unified id alone is never a key while a v1 hierarchy
    is mounted (one process in the root of everything would otherwise name every process
    '/' for a minute)."""
    unified, memory = tmp_path / "unified", tmp_path / "memory"
    u = _cgroup_tree(unified, "/")["/"]
    m = _cgroup_tree(memory, "/", f"/docker/{DOCKER_ID}")
    proc_root = tmp_path / "proc"
    fake_process(proc_root, 1, fds={})
    mounts = {0: os.fsencode(unified), 4: os.fsencode(memory)}
    reader = ContextReader(os.fsencode(proc_root), cgroup_mounts=mounts)
    top = bare_process(proc_root, 4241)  # in the root of every hierarchy
    (top / "cgroup").write_bytes(b"4:memory:/\n0::/\n")
    assert read(reader, top, kernel(cgroup=u, links={0: u, 4: m["/"]})).cgroup == "/"
    first = bare_process(proc_root, 4242)
    (first / "cgroup").write_bytes(f"4:memory:/docker/{DOCKER_ID}\n0::/\n".encode())
    in_container = kernel(cgroup=u, links={0: u, 4: m[f"/docker/{DOCKER_ID}"]})
    assert read(reader, first, in_container).container_id == DOCKER_ID
    second = bare_process(proc_root, 4243)
    (second / "cgroup").write_bytes(b"4:memory:/\n0::/\n")  # not read: the ids are known
    assert read(reader, second, in_container).container_id == DOCKER_ID
    # a line whose directory is another cgroup than the kernel's (moved meanwhile): not kept
    moved = bare_process(proc_root, 4244)
    (moved / "cgroup").write_bytes(f"4:memory:/docker/{DOCKER_ID}\n0::/\n".encode())
    elsewhere = kernel(cgroup=u, links={0: u, 4: m["/"] + 10_000})
    assert read(reader, moved, elsewhere).container_id == DOCKER_ID  # its own file, this once
    assert read(reader, second, elsewhere).container_id is None


def test_on_a_v2_host_the_unified_id_alone_is_a_key(tmp_path: Path) -> None:
    cgroups = tmp_path / "cgroup2"
    ids = _cgroup_tree(cgroups, "/", "/system.slice/cron.service")
    proc_root = tmp_path / "proc"
    fake_process(proc_root, 1, fds={})
    reader = ContextReader(os.fsencode(proc_root), cgroup_mounts={0: os.fsencode(cgroups)})
    first = bare_process(proc_root, 4242)
    (first / "cgroup").write_bytes(b"0::/system.slice/cron.service\n")
    cron = ids["/system.slice/cron.service"]
    assert read(reader, first, kernel(cgroup=cron)).unit == "cron.service"  # no links walked
    second = bare_process(proc_root, 4243)
    (second / "cgroup").write_bytes(b"0::/\n")
    assert read(reader, second, kernel(cgroup=cron)).unit == "cron.service"


def test_kept_paths_expire_so_a_renamed_cgroup_is_read_again(tmp_path: Path) -> None:
    a = _cgroup_tree(tmp_path, "/a.slice")["/a.slice"]
    now = [0.0]
    table: CgroupIds[str] = CgroupIds({0: os.fsencode(tmp_path)}, clock=lambda: now[0])
    given = kernel(cgroup=a)
    table.learn(given, b"0::/a.slice\n", "a")
    assert table.get(given) == "a"
    now[0] += LIFETIME
    assert table.get(given) is None
    table.learn(given, b"0::/b.slice\n", "b")  # no such directory: not kept
    assert table.get(given) is None
    table.learn(given, b"0::/a.slice\n" * 2 + b"garbage\n", "a")  # not a cgroup file
    assert table.get(given) is None


def test_each_hierarchy_is_found_where_it_is_mounted(tmp_path: Path) -> None:
    mountinfo, own = tmp_path / "mountinfo", tmp_path / "cgroup"
    mountinfo.write_bytes(
        b"30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        b"31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        b"32 25 0:28 / /sys/fs/cgroup/sys\\040temd rw - cgroup cgroup rw,xattr,name=systemd\n"
        b"33 25 0:29 /docker/x /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
        b"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    own.write_bytes(b"9:name=systemd:/\n5:pids:/\n4:memory:/\n2:cpu,cpuacct:/\n0::/\n")
    assert hierarchy_mounts(str(mountinfo), str(own)) == {
        0: b"/sys/fs/cgroup/unified",
        2: b"/sys/fs/cgroup/cpu,cpuacct",
        4: b"/sys/fs/cgroup/memory",
        9: b"/sys/fs/cgroup/sys temd",
    }  # pids is mounted from a subtree: its paths would not be under it
    assert hierarchy_mounts(str(tmp_path / "missing"), str(own)) == {}
