"""The BPF task iterator on this machine's kernel: one pass gives every process's context as
/proc gives it, the scanner takes it for a scan that meets many new processes, and procmond
still runs passes once it has shed CAP_BPF and refused itself every other bpf(2) command.

Skipped, with the reason, where the iterator cannot load (not root, no BTF, bpf(2) refused)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from daemoneye.collector import bpf
from daemoneye.collector.context import ContextReader
from daemoneye.collector.procfs import parse_stat_fields, read_boot_time
from daemoneye.collector.scanner import SNAPSHOT_AT, ProcScanner
from daemoneye.collector.task_iter import TaskIterator
from daemoneye.procmond.privileges import drop_procmond, lookup_account, shed_start_capabilities
from tests.bpf_available import why_not
from tests.forked import in_child

if not sys.platform.startswith("linux"):
    pytest.skip("eBPF is Linux-only", allow_module_level=True)


_UNAVAILABLE = why_not(lambda: TaskIterator.open().close())
if _UNAVAILABLE is not None:
    pytest.skip(f"BPF task iterator unavailable: {_UNAVAILABLE}", allow_module_level=True)


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
    tasks: TaskIterator, shells: list[subprocess.Popen[bytes]]
) -> None:
    """A first scan (every process new) with the iterator and one without it give the shells
    the same context."""
    boot = read_boot_time()
    with_tasks = ProcScanner("/proc", boot_time=boot, context=ContextReader(), tasks=tasks)
    plain = ProcScanner("/proc", boot_time=boot, context=ContextReader())
    try:
        fast = {rec.pid: rec for rec in with_tasks.scan().added}
        slow = {rec.pid: rec for rec in plain.scan().added}
    finally:
        plain.close()
    assert tasks.passes_total == 1
    fields = ("cgroup", "pid_ns", "mnt_ns", "net_ns", "user_ns", "ns_foreign", "loginuid")
    for shell in shells:
        a, b = fast[shell.pid], slow[shell.pid]
        assert [getattr(a, name) for name in fields] == [getattr(b, name) for name in fields]
        assert (a.stdin, a.stdout, a.environment) == (b.stdin, b.stdout, b.environment)
        assert a.stdin is not None and a.stdin.startswith("pipe:[")


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
