"""The context the exec capture reads in the kernel (collector/kernel_context.py) and what the
context reader makes of it: values the kernel gave are not read from /proc again, what it left
unread is, and what is kept between processes (a cgroup id's path, a device's name) is kept
only after /proc showed it belongs to them."""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

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
    fds: tuple[tuple[int, int, int, int, int], ...] = ((5, 0, 15, 0o10600, FD_OPEN),) * 3,
    links: tuple[tuple[int, int], ...] = (),
    whole: bool = True,
) -> bytes:
    head = struct.pack("<QIIIIII", cgroup, *namespaces, loginuid, flags)
    head += b"".join(struct.pack("<QIIII", *fd) for fd in fds)
    head += struct.pack("<I4x", len(links) | (1 << 31 if whole else 0))
    head += b"".join(LINK.pack(*pair) for pair in links)
    return head.ljust(kernel_context.BYTES, b"\0")


def device(path: str) -> KernelFd:
    """What the kernel would say of an fd open on the device at `path`."""
    found = os.stat(path)
    rdev = os.major(found.st_rdev) << 20 | os.minor(found.st_rdev)
    return KernelFd(FD_OPEN, found.st_mode, found.st_ino, rdev, 6)


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
    fds = ((5, 0, 15, 0o10600, FD_OPEN), (0, 0, 0, 0, FD_CLOSED), (9, 0, 0, 0, FD_UNKNOWN))
    found = kernel_context.decode(block(fds=fds))
    assert found == KernelContext(
        77, 110, 11, 12, 13, 1000, (KernelFd(FD_OPEN, 0o10600, 5, 0, 15), CLOSED, UNKNOWN)
    )
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


# -- what is kept between processes ---------------------------------------------------------


def test_a_cgroup_ids_path_is_kept_once_the_directory_proves_it(tmp_path: Path) -> None:
    cgroups = tmp_path / "cgroup2"
    (cgroups / "kubepods" / "pod1234" / DOCKER_ID).mkdir(parents=True)
    path = f"/kubepods/pod1234/{DOCKER_ID}"
    cgroup_id = os.stat(cgroups / path.lstrip("/")).st_ino
    proc_root = tmp_path / "proc"
    fake_process(proc_root, 1, fds={})
    first = bare_process(proc_root, 4242)
    (first / "cgroup").write_bytes(f"0::{path}\n".encode())
    reader = ContextReader(os.fsencode(proc_root), cgroup_mounts={0: os.fsencode(cgroups)})
    assert read(reader, first, kernel(cgroup=cgroup_id)).container_runtime == "kubernetes"
    # another process in the same cgroup: its file is not read (it says something else here)
    second = bare_process(proc_root, 4243)
    (second / "cgroup").write_bytes(b"0::/system.slice/cron.service\n")
    again = read(reader, second, kernel(cgroup=cgroup_id))
    assert (again.cgroup, again.container_id) == (path, DOCKER_ID)
    # without the kernel's id, or with another one, the file is read
    assert read(reader, second, None).unit == "cron.service"
    assert read(reader, second, kernel(cgroup=cgroup_id + 1)).unit == "cron.service"


def test_a_path_whose_directory_is_another_cgroup_is_not_kept(tmp_path: Path) -> None:
    """The process moved between its exec and the read (the file names another cgroup than
    the kernel's id), or the path is a v1 hierarchy's: read every time."""
    cgroups = tmp_path / "cgroup2"
    (cgroups / "a.slice").mkdir(parents=True)
    proc_root = tmp_path / "proc"
    fake_process(proc_root, 1, fds={})
    proc = bare_process(proc_root, 4242)
    reader = ContextReader(os.fsencode(proc_root), cgroup_mounts={0: os.fsencode(cgroups)})
    moved_from = os.stat(cgroups / "a.slice").st_ino + 1000
    (proc / "cgroup").write_bytes(b"0::/a.slice\n")
    assert read(reader, proc, kernel(cgroup=moved_from)).cgroup == "/a.slice"
    (proc / "cgroup").write_bytes(b"0::/b.slice\n")
    assert read(reader, proc, kernel(cgroup=moved_from)).cgroup == "/b.slice"
    hybrid = b"4:memory:/docker/" + DOCKER_ID.encode() + b"\n0::/\n"
    (proc / "cgroup").write_bytes(hybrid)
    root_id = os.stat(cgroups).st_ino
    assert read(reader, proc, kernel(cgroup=root_id)).container_runtime == "docker"
    (proc / "cgroup").write_bytes(b"0::/a.slice\n")
    assert read(reader, proc, kernel(cgroup=root_id)).cgroup == "/a.slice"


def test_a_devices_name_is_kept_once_its_link_was_that_device(tmp_path: Path) -> None:
    fake_process(tmp_path, 1, fds={})
    null, zero = device("/dev/null"), device("/dev/zero")
    reader = ContextReader(os.fsencode(tmp_path))
    # the kernel saw /dev/null on fd 1, but fd 1 is /dev/zero by the time of the read: the link
    # says what it is now and is not kept as /dev/null's name
    moved = fake_process(tmp_path, 4242, fds={1: "/dev/zero"})
    assert read(reader, moved, kernel(stdio=(PIPE, null, CLOSED))).stdout == "file:/dev/zero"
    first = fake_process(tmp_path, 4243, fds={1: "/dev/null"})
    assert read(reader, first, kernel(stdio=(PIPE, null, CLOSED))).stdout == "file:/dev/null"
    # from now on /dev/null's inode is named without a link (this one would say /dev/zero)
    assert read(reader, moved, kernel(stdio=(PIPE, null, null))).stderr == "file:/dev/null"
    assert read(reader, moved, kernel(stdio=(PIPE, zero, CLOSED))).stdout == "file:/dev/zero"


def test_on_a_v1_host_the_hierarchy_whose_path_is_named_proves_it(tmp_path: Path) -> None:
    """A container on a v1 host: the unified line says '/', the memory hierarchy's line names
    the container. Its path is kept under every hierarchy's ids once the memory directory at
    that path has the kernel's memory cgroup id."""
    memory = tmp_path / "memory"
    (memory / "docker" / DOCKER_ID).mkdir(parents=True)
    memory_id = os.stat(memory / "docker" / DOCKER_ID).st_ino
    proc_root = tmp_path / "proc"
    fake_process(proc_root, 1, fds={})
    first = bare_process(proc_root, 4242)
    (first / "cgroup").write_bytes(f"4:memory:/docker/{DOCKER_ID}\n0::/\n".encode())
    mounts = {0: os.fsencode(tmp_path / "unified"), 4: os.fsencode(memory)}
    reader = ContextReader(os.fsencode(proc_root), cgroup_mounts=mounts)
    links = {0: 1, 4: memory_id}
    assert read(reader, first, kernel(cgroup=1, links=links)).container_id == DOCKER_ID
    second = bare_process(proc_root, 4243)
    (second / "cgroup").write_bytes(b"4:memory:/\n0::/\n")  # not read: the ids are known
    assert read(reader, second, kernel(cgroup=1, links=links)).container_id == DOCKER_ID
    # other ids in any hierarchy are other cgroups: the file is read
    assert read(reader, second, kernel(cgroup=1, links={0: 1, 4: 999})).container_id is None
    # a path whose directory is another cgroup than the kernel's is not kept
    moved = bare_process(proc_root, 4244)
    (moved / "cgroup").write_bytes(f"4:memory:/docker/{DOCKER_ID}\n0::/\n".encode())
    assert read(reader, moved, kernel(cgroup=1, links={0: 1, 4: 5})).container_id == DOCKER_ID
    assert read(reader, second, kernel(cgroup=1, links={0: 1, 4: 5})).container_id is None


def test_kept_paths_expire_so_a_renamed_cgroup_is_read_again(tmp_path: Path) -> None:
    (tmp_path / "a.slice").mkdir()
    cgroup_id = os.stat(tmp_path / "a.slice").st_ino
    now = [0.0]
    table: CgroupIds[str] = CgroupIds({0: os.fsencode(tmp_path)}, clock=lambda: now[0])
    given = kernel(cgroup=cgroup_id)
    table.learn(given, (0, "/a.slice"), "a")
    assert table.get(given) == "a"
    now[0] += LIFETIME
    assert table.get(given) is None
    table.learn(given, (0, "/b.slice"), "b")  # no such directory: not kept
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
