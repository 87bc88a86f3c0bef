"""The eBPF exec capture on this machine's kernel: the program loads against the kernel's own
BTF, its records carry what /proc says of the same process, and short-lived programs that
/proc no longer shows are still seen whole.

Skipped, with the reason, where the capture cannot load (not root, no BTF, bpf(2) refused);
the connector tests are skipped where the connector cannot be used."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.collector.cgroup_ids import hierarchy_mounts
from daemoneye.collector.context import ContextReader
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.exec_capture import ENV_BYTES, CapturedExec, ExecCapture
from daemoneye.collector.kernel_context import FD_CLOSED, FD_OPEN
from daemoneye.collector.netlink import probe
from daemoneye.collector.proc_events import ExecEvent
from daemoneye.collector.procfs import parse_cmdline, parse_stat_fields, read_boot_time
from daemoneye.procmond.privileges import drop_procmond, lookup_account
from tests.bpf_available import skip_module_unless
from tests.forked import in_child

skip_module_unless(lambda: ExecCapture.open().close(), "eBPF exec capture")

SH = "/bin/sh"
GUARD_S = 60.0  # a hang guard, not a timing assertion


@pytest.fixture
def capture() -> Iterator[ExecCapture]:
    opened = ExecCapture.open()
    yield opened
    opened.close()


def _wait_in_read(pid: int) -> None:
    """Until the process is blocked in read(2): back in user space after its exec, whose
    environment record the program writes after the exec's own (a collect in between would
    take the record without it; the daemon takes records at the exec's event, sent after)."""
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/syscall", "rb") as file:
            if file.read().split(b" ", 1)[0] == b"0":  # x86-64's read
                return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never blocked in read")


def _record_of(capture: ExecCapture, pid: int) -> CapturedExec:
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        capture.collect()
        found = capture.take(pid, time.monotonic_ns())
        if found is not None:
            return found
        time.sleep(0.01)
    raise AssertionError(f"no record for pid {pid}")


def test_a_record_says_what_proc_says_of_the_same_process(capture: ExecCapture) -> None:
    child = subprocess.Popen(
        [SH, "-c", "read line", "marker-\u00e9\x01", "a b"], stdin=subprocess.PIPE, cwd="/"
    )
    try:
        captured = _record_of(capture, child.pid)
        with open(f"/proc/{child.pid}/stat", "rb") as file:
            stat = parse_stat_fields(file.read())
        with open(f"/proc/{child.pid}/cmdline", "rb") as file:
            cmdline = parse_cmdline(file.read())
        exe = os.readlink(f"/proc/{child.pid}/exe")
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    assert captured.argv == (SH, "-c", "read line", "marker-\u00e9\x01", "a b") == cmdline
    assert captured.argv_complete
    assert captured.filename == SH
    assert captured.path == os.path.realpath(SH) == exe
    assert captured.start_ticks == stat.start_ticks  # the instance's identity, to the tick
    assert (captured.ppid, captured.uid, captured.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert captured.comm == "sh"


def test_an_argv_past_the_record_is_marked_cut(capture: ExecCapture) -> None:
    child = subprocess.Popen(["/bin/true", "x" * 100_000])
    child.wait()
    captured = _record_of(capture, child.pid)
    assert not captured.argv_complete
    assert captured.argv[0] == "/bin/true" and set(captured.argv[1]) == {"x"}


def test_without_cap_bpf_loading_is_refused_with_the_reason() -> None:
    def child() -> str:
        drop_procmond(lookup_account("nobody"), frozenset())
        try:
            ExecCapture.open().close()
        except OSError as exc:
            return str(exc)
        return "loaded"

    refusal = in_child(child)
    assert "BPF" in refusal and "Operation not permitted" in refusal


@pytest.mark.skipif(probe() is not None, reason=f"process connector unavailable: {probe()}")
def test_every_short_shell_of_a_loop_is_seen_with_exe_and_argv() -> None:
    """A loop of sub-millisecond `sh -c :` runs, one after another as a shell loop runs them:
    with the capture every exec event carries the exe and the full argv, whether or not /proc
    still showed the process when the reader got there."""
    source = ProcEventSource(read_boot_time(), capture=ExecCapture.open())
    source.start()
    marker = f"marker-{os.getpid()}"
    wanted = {(SH, "-c", f": {marker}-{index}") for index in range(300)}
    try:
        for argv in sorted(wanted):
            subprocess.run(argv, check=True)
        seen: dict[tuple[str, ...], str | None] = {}
        deadline = time.monotonic() + GUARD_S
        while len(seen) < len(wanted) and time.monotonic() < deadline:
            source.ready.wait(0.2)
            for item in source.drain():
                if item.kind == "exec" and item.cmdline in wanted:
                    seen[item.cmdline] = item.exe
    finally:
        source.stop()
    assert source.error is None
    assert set(seen) == wanted
    assert all(seen.values())


def test_huge_command_lines_do_not_crowd_out_other_programs(capture: ExecCapture) -> None:
    """An attacker execs with 32 KB arguments and 4 KB environments until the rings would be
    full, before the reader drains them (as when it is busy): a short program run after that
    still has its record, and so does every one of the attacker's execs (cut to
    SHORT_ARGV_BYTES)."""
    environment = {"FILL": "E" * (ENV_BYTES - 16)}
    flood = [
        subprocess.Popen(["/bin/true", f"{index:04d}" + "A" * 32_000], env=environment)
        for index in range(300)
    ]
    for child in flood:
        child.wait()
    shells = [subprocess.Popen([SH, "-c", f": after-flood-{index}"]) for index in range(20)]
    for shell in shells:
        shell.wait()
    capture.collect()
    now = time.monotonic_ns()
    for shell in shells:
        found = capture.take(shell.pid, now)
        assert found is not None and found.argv[-1].startswith(": after-flood-")
    cut = [capture.take(child.pid, now) for child in flood]
    assert all(found is not None and found.argv[0] == "/bin/true" for found in cut)


def test_the_path_is_walked_across_mounts_whatever_path_was_given(
    capture: ExecCapture, tmp_path: Path
) -> None:
    """Run by a relative path from a directory with hostile names, and from /dev/shm (a tmpfs
    mounted under /dev): the record names the executable as /proc/PID/exe does."""
    odd = tmp_path / "a b\n(deleted)"
    odd.mkdir()
    places = [odd]
    if os.path.ismount("/dev/shm"):
        shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
        places.append(shm)
    try:
        for place in places:
            shutil.copy("/bin/true", place / "tr ue")
            child = subprocess.Popen(["./tr ue"], cwd=place)
            child.wait()
            captured = _record_of(capture, child.pid)
            assert captured.filename == "./tr ue"
            assert captured.path == str(place / "tr ue")
    finally:
        for place in places[1:]:
            shutil.rmtree(place)


def test_an_unlinked_executable_is_marked_deleted_and_a_long_name_is_not_cut(
    capture: ExecCapture, tmp_path: Path
) -> None:
    """A binary run from an open descriptor after its file was removed (the fileless trick),
    and one whose name is longer than the walk takes: the first is flagged, the second gets
    no path rather than a cut one that could name a decoy."""
    doomed = tmp_path / "dropper"
    shutil.copy("/bin/true", doomed)
    fd = os.open(doomed, os.O_RDONLY)
    doomed.unlink()
    pid = os.fork()
    if pid == 0:
        try:
            os.execve(fd, ["dropper"], {})
        finally:
            os._exit(127)
    os.close(fd)
    os.waitpid(pid, 0)
    captured = _record_of(capture, pid)
    assert captured.path == str(doomed) and captured.path_deleted
    long_name = tmp_path / ("x" * 200)
    shutil.copy("/bin/true", long_name)
    child = subprocess.Popen([str(long_name)])
    child.wait()
    captured = _record_of(capture, child.pid)
    assert captured.path is None and not captured.path_deleted


def _cgroup_paths(pid: int) -> dict[int, str]:
    with open(f"/proc/{pid}/cgroup", "rb") as file:
        lines = file.read().decode().splitlines()
    return {int(line.split(":", 2)[0]): line.split(":", 2)[2] for line in lines}


def test_the_records_context_is_what_proc_says_of_the_same_process(
    capture: ExecCapture,
) -> None:
    """Namespaces, login uid, cgroup id, each stdio fd and the environment, as the kernel read
    them inside execve, against /proc's links, files and stat of the same process."""
    ours, theirs = socket.socketpair()
    child = subprocess.Popen(
        [SH, "-c", "read line"],
        stdin=subprocess.PIPE,
        stdout=theirs.fileno(),
        stderr=subprocess.DEVNULL,
        env={"HISTFILE": "/dev/null", "PATH": "/usr/bin:/bin"},
    )
    theirs.close()
    try:
        _wait_in_read(child.pid)  # the exec (and its environment record) long done
        captured = _record_of(capture, child.pid)
        proc = f"/proc/{child.pid}"
        links = {name: os.readlink(f"{proc}/ns/{name}") for name in ("pid", "mnt", "net", "user")}
        with open(f"{proc}/loginuid", "rb") as file:
            loginuid = int(file.read())
        with open(f"{proc}/environ", "rb") as file:
            environ = file.read()
        fds = [os.stat(f"{proc}/fd/{fd}") for fd in range(3)]
        paths = _cgroup_paths(child.pid)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
        ours.close()
    found = captured.context
    assert found is not None
    assert found.namespaces == tuple(
        int(links[name].split("[")[1].rstrip("]")) for name in ("pid", "mnt", "net", "user")
    )
    assert found.loginuid == loginuid
    assert captured.environ == environ
    for kernel_fd, proc_fd in zip(found.stdio, fds, strict=True):
        assert (kernel_fd.state, kernel_fd.mode, kernel_fd.inode) == (
            FD_OPEN,
            proc_fd.st_mode,
            proc_fd.st_ino,
        )
    assert found.stdio[0].is_pipe and found.stdio[1].is_socket and found.stdio[2].is_char_device
    null = os.stat("/dev/null").st_rdev
    assert found.stdio[2].rdev == os.major(null) << 20 | os.minor(null)
    # every hierarchy's cgroup id is the inode of its directory where that hierarchy is mounted
    mounts = hierarchy_mounts()
    assert set(found.cgroups) == set(paths)
    for hierarchy, mount in mounts.items():
        directory = os.fsdecode(mount) + paths[hierarchy].rstrip("/")
        assert found.cgroups[hierarchy] == os.stat(directory).st_ino
    if 0 in mounts:
        assert found.cgroup_id == found.cgroups[0]


def test_a_closed_fd_and_an_environment_past_the_record(capture: ExecCapture) -> None:
    child = subprocess.Popen(
        [SH, "-c", ":"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env={"BIG": "x" * (ENV_BYTES + 1)},
    )
    child.wait()
    captured = _record_of(capture, child.pid)
    assert captured.environ is None  # too long for the record: /proc's, when still there
    pid = os.fork()
    if pid == 0:
        try:
            os.close(0)
            os.execve("/bin/true", ["true"], {"LD_AUDIT": "a.so"})
        finally:
            os._exit(127)
    os.waitpid(pid, 0)
    closed = _record_of(capture, pid)
    assert closed.context is not None and closed.context.stdio[0].state == FD_CLOSED
    assert closed.environ == b"LD_AUDIT=a.so\0"


def test_a_process_gone_before_proc_was_read_keeps_its_context(
    capture: ExecCapture, tmp_path: Path
) -> None:
    """A sub-millisecond shell with a socket on stdin and a preload in its environment, run
    in a directory of its own and reaped before the reader looks: its exec still carries all
    three."""
    ours, theirs = socket.socketpair()
    child = subprocess.Popen(
        [SH, "-c", ":"],
        stdin=theirs.fileno(),
        env={"LD_PRELOAD": "", "SUDO_USER": "mallory"},
        cwd=tmp_path,
    )
    theirs.close()
    child.wait()
    ours.close()
    capture.collect()
    source = ProcEventSource(read_boot_time(), capture=capture, context=ContextReader())
    observed = source.handle(ExecEvent(0, 1, time.monotonic_ns(), child.pid, child.pid))
    assert observed is not None and observed.details is not None
    details = observed.details
    assert observed.event.partial and observed.event.cmdline == (SH, "-c", ":")
    assert details.stdin is not None and details.stdin.startswith("socket:[")
    assert json.loads(details.environment or "") == {"LD_PRELOAD": "", "SUDO_USER": "mallory"}
    assert details.pid_ns is not None and details.mnt_ns is not None
    assert details.cwd == str(tmp_path)
    assert source.stats().rescued_total == 1


def test_the_working_directory_is_what_proc_says_wherever_it_is(
    capture: ExecCapture, tmp_path: Path
) -> None:
    """The root, a directory with hostile names, one on another mount (/dev/shm), and one
    removed before the exec: the record's cwd reads as /proc/PID/cwd does. A directory too
    deep for the walk gets no cwd (the reader then reads /proc's)."""
    odd = tmp_path / "a b\n(deleted)"
    odd.mkdir()
    places: list[Path] = [Path("/"), odd]
    if os.path.ismount("/dev/shm"):
        places.append(Path(tempfile.mkdtemp(dir="/dev/shm")))
    try:
        for place in places:
            child = subprocess.Popen([SH, "-c", "read line"], stdin=subprocess.PIPE, cwd=place)
            try:
                captured = _record_of(capture, child.pid)
                proc_cwd = os.readlink(f"/proc/{child.pid}/cwd")
            finally:
                assert child.stdin is not None
                child.stdin.close()
                child.wait()
            assert captured.cwd == proc_cwd == str(place)
    finally:
        for place in places[2:]:
            shutil.rmtree(place)
    removed = tmp_path / "removed"
    removed.mkdir()
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(removed)
            os.rmdir(removed)
            os.execv(SH, [SH, "-c", ":"])
        finally:
            os._exit(127)
    os.waitpid(pid, 0)
    assert _record_of(capture, pid).cwd == f"{removed} (deleted)"
    deep = tmp_path.joinpath(*(["d" * 40] * 14))  # 574 bytes of names: past the walk's 512
    deep.mkdir(parents=True)
    child = subprocess.Popen([SH, "-c", ":"], cwd=deep)
    child.wait()
    assert _record_of(capture, child.pid).cwd is None
