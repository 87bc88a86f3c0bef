"""The BPF task iterator on this machine's kernel: one pass gives every process's context as
/proc gives it, the scanner takes it for a scan that meets many new processes, and procmond
still runs passes once it has shed CAP_BPF and refused itself every other bpf(2) command.

Skipped, with the reason, where the iterator cannot load (not root, no BTF, bpf(2) refused)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from daemoneye.collector import bpf
from daemoneye.collector.context import ContextReader
from daemoneye.collector.procfs import parse_stat_fields, read_boot_time, read_file
from daemoneye.collector.scanner import SNAPSHOT_AT, ProcScanner
from daemoneye.collector.task_iter import TaskIterator
from daemoneye.procmond.privileges import drop_procmond, lookup_account, shed_start_capabilities
from tests.bpf_available import skip_module_unless
from tests.forked import in_child

skip_module_unless(lambda: TaskIterator.open().close(), "BPF task iterator")


@pytest.fixture
def tasks() -> Iterator[TaskIterator]:
    opened = TaskIterator.open()
    yield opened
    opened.close()


@pytest.fixture
def shells() -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [
        subprocess.Popen(
            ["/bin/sh", "-c", "read line", f"task-iter-{index}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "SUDO_USER": f"alice-{index}"},
        )
        for index in range(SNAPSHOT_AT + 8)
    ]
    yield started
    for shell in started:
        shell.kill()
        shell.wait()


def test_a_pass_gives_each_process_what_proc_says_and_no_threads(
    tasks: TaskIterator, shells: list[subprocess.Popen[bytes]]
) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        snapshot = tasks.snapshot()
        thread_id = worker.native_id
    finally:
        stop.set()
        worker.join()
    assert thread_id is not None and snapshot.get(thread_id) is None  # a thread is not listed
    for shell in shells[:5]:
        found = snapshot.get(shell.pid)
        assert found is not None
        with open(f"/proc/{shell.pid}/stat", "rb") as file:
            assert found.start_ticks == parse_stat_fields(file.read()).start_ticks
        links = [os.readlink(f"/proc/{shell.pid}/ns/{n}") for n in ("pid", "mnt", "net", "user")]
        assert found.context.namespaces == tuple(
            int(link[link.index("[") + 1 : -1]) for link in links
        )
        fds = [os.stat(f"/proc/{shell.pid}/fd/{fd}") for fd in range(3)]
        assert [fd.inode for fd in found.context.stdio] == [fd.st_ino for fd in fds]
        assert found.context.stdio[0].is_pipe and found.context.stdio[1].is_char_device
        assert found.context.cgroups  # every hierarchy's cgroup, walked to the end
    assert snapshot.get(os.getpid()) is not None
    assert len(snapshot) >= len(shells)


def test_the_scanner_takes_the_pass_and_stores_what_proc_would(
    tasks: TaskIterator, shells: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first scan (every process new) with the iterator and one without it give the shells
    the same context."""
    boot = read_boot_time()
    with_tasks = ProcScanner("/proc", boot_time=boot, context=ContextReader(), tasks=tasks)
    plain = ProcScanner("/proc", boot_time=boot, context=ContextReader())
    status_read: list[int] = []  # pids whose /proc/PID/status was read

    def counting(name: str | bytes, *, dir_fd: int | None = None) -> bytes:
        if name == b"status" and dir_fd is not None:
            status_read.append(int(os.readlink(f"/proc/self/fd/{dir_fd}").rsplit("/", 1)[1]))
        return read_file(name, dir_fd=dir_fd)

    monkeypatch.setattr("daemoneye.collector.details.read_file", counting)
    try:
        fast = {rec.pid: rec for rec in with_tasks.scan().added}
        # the shells' real ids came from the pass too: no status read for any of them
        assert not {shell.pid for shell in shells} & set(status_read)
        slow = {rec.pid: rec for rec in plain.scan().added}
    finally:
        plain.close()
    assert tasks.passes_total == 1
    fields = ["uid", "gid", "user", "cgroup", "pid_ns", "mnt_ns", "net_ns", "user_ns"]
    fields += ["ns_foreign", "loginuid"]
    for shell in shells:
        a, b = fast[shell.pid], slow[shell.pid]
        assert [getattr(a, name) for name in fields] == [getattr(b, name) for name in fields]
        assert (a.stdin, a.stdout, a.environment) == (b.stdin, b.stdout, b.environment)
        assert a.stdin is not None and a.stdin.startswith("pipe:[")
        assert a.environment is not None and '"SUDO_USER":"alice-' in a.environment


def test_procmond_still_runs_passes_after_shedding_cap_bpf_and_nothing_else_of_bpf() -> None:
    """As procmond does at start: load, drop to nobody with its capabilities, shed CAP_BPF and
    CAP_PERFMON, refuse bpf(2) but BPF_ITER_CREATE. A pass still works; creating a map does not."""

    def child() -> dict[str, object]:
        opened = TaskIterator.open()
        drop_procmond(lookup_account("nobody"))
        shed_start_capabilities()
        with open("/proc/self/status") as file:
            status = {line.split(":")[0]: line.split()[1] for line in file if ":" in line}
        count = len(opened.snapshot())
        try:
            bpf.create_map(bpf.MAP_PERCPU_ARRAY, 4, 8, 1, "refused")
            refused = "created"
        except OSError as exc:
            refused = str(exc.errno)
        return {"tasks": count, "refused": refused, "seccomp": status["Seccomp"]}

    found = in_child(child)
    assert isinstance(found["tasks"], int) and found["tasks"] > 1
    assert found["refused"] == "1"  # EPERM, from the seccomp filter
    assert found["seccomp"] == "2"


_OPEN_BOTH = """
import errno
from daemoneye.collector.stat_signatures import StatSignatures
from daemoneye.collector.task_iter import TaskIterator
for opener in (TaskIterator.open, StatSignatures.open):
    try:
        opener().close()
        print("loaded")
    except OSError as exc:
        print("refused", exc.errno == errno.EOPNOTSUPP)
"""


def test_in_a_pid_namespace_of_its_own_both_passes_refuse_to_load() -> None:
    """The kernel writes pids as the initial namespace numbers them; a procmond whose /proc
    numbers them otherwise would file one process's record under another's pid."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    found = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _OPEN_BOTH],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split("\n")[:2] == ["refused True", "refused True"]


class _LinkCounter(ContextReader):
    """A context reader that counts the stdio links it reads and works out (whichever way
    it reads them: through the process's link, or through a descriptor of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.links_read = 0

    def _kind_of(self, raw: bytes, dir_fd: int, net_ns: int | None) -> str | None:
        self.links_read += 1
        return super()._kind_of(raw, dir_fd, net_ns)


def _values(reader: ContextReader, tasks: TaskIterator, pid: int) -> tuple[object, ...]:
    """What the context reader gives a process from a pass's block, as the scanner asks."""
    found = tasks.snapshot().get(pid)
    assert found is not None
    with open(f"/proc/{pid}/stat", "rb") as file:
        raw_stat = file.read()
    dir_fd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
    try:
        return reader.read_values(dir_fd, raw_stat, found.start_ticks, found.context)
    finally:
        os.close(dir_fd)


_STDOUT = 15  # Context's field order: ... stdin, stdout, stderr, environment


def test_processes_sharing_a_log_file_are_named_by_one_read_per_scan(
    tasks: TaskIterator, tmp_path: os.PathLike[str]
) -> None:
    log = os.path.join(tmp_path, "shared.log")
    with open(log, "w") as out:
        started = [subprocess.Popen(["sleep", "30"], stdout=out, stderr=out) for _ in range(5)]
    reader = _LinkCounter()
    try:
        named = [_values(reader, tasks, started[0].pid)[_STDOUT]]
        first_reads = reader.links_read
        named += [_values(reader, tasks, proc.pid)[_STDOUT] for proc in started[1:]]
        assert named == [f"file:{log}"] * 5
        assert reader.links_read == first_reads  # the rest named by the file's inode
        os.rename(log, log + ".1")
        reader.new_scan()  # a name is kept for one scan: the next one reads it again
        assert _values(reader, tasks, started[0].pid)[_STDOUT] == f"file:{log}.1"
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


_PASS_FD_OUT = """
import os, socket, subprocess, sys
log, decoy = sys.argv[1], sys.argv[2]
ours, theirs = socket.socketpair()
inside = (
    f"mkdir -p {os.path.dirname(decoy)} 2>/dev/null; mount -t tmpfs none {os.path.dirname(decoy)}"
    f" && touch {decoy} && mount --bind {log} {decoy} && exec python3 -c '"
    "import os, socket, sys; s = socket.socket(fileno=int(sys.argv[1])); "
    "socket.send_fds(s, [b\\"x\\"], [os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND)]); "
    "os.execvp(\\"sleep\\", [\\"sleep\\", \\"30\\"])' "
    f"{theirs.fileno()} {decoy}"
)
subprocess.Popen(["unshare", "-Urm", "sh", "-c", inside], pass_fds=[theirs.fileno()])
_, fds, _, _ = socket.recv_fds(ours, 16, 1)
os.dup2(fds[0], 1)
os.execvp("sleep", ["sleep", "30"])
"""


def test_a_file_opened_through_a_users_own_mount_does_not_rename_it_for_others(
    tasks: TaskIterator,
) -> None:
    """An unprivileged user binds a log file it may write over a decoy name in a mount
    namespace of its own, opens it there and passes the fd out to a process in the host's
    mount namespace: that process is named by the decoy (its own doing), root's process that
    opened the file by its real name keeps that name, whichever is read first."""
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if shutil.which("setpriv") is None or shutil.which("unshare") is None:
        pytest.skip("setpriv and unshare (util-linux) are needed")
    if subprocess.run([*nobody, "unshare", "-Urm", "true"], capture_output=True).returncode:
        pytest.skip("unprivileged user namespaces are off here")
    shared = tempfile.mkdtemp(prefix="de-shared-")  # under /tmp: nobody may reach it
    os.chmod(shared, 0o755)
    log = os.path.join(shared, "app.log")
    with open(log, "w"):
        os.chmod(log, 0o666)
    decoy = "/tmp/de-file-decoy/null"
    attacker = subprocess.Popen([*nobody, "/usr/bin/python3", "-c", _PASS_FD_OUT, log, decoy])
    with open(log, "a") as out:
        victim = subprocess.Popen(["sleep", "30"], stdout=out)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _writes_to(attacker.pid, decoy):
            time.sleep(0.02)
        assert _writes_to(attacker.pid, decoy)
        reader = ContextReader()
        assert _values(reader, tasks, attacker.pid)[_STDOUT] == f"file:{decoy}"
        assert _values(reader, tasks, victim.pid)[_STDOUT] == f"file:{log}"
    finally:
        for proc in (attacker, victim):
            proc.kill()
            proc.wait()
        shutil.rmtree(shared)


def _writes_to(pid: int, path: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/1") == path
    except OSError:
        return False
