"""The /proc parsers against real samples (tests/unit/samples/procfs, made by capture.py), hostile
names and generated input, and the small readers against this machine's /proc."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemoneye.collector import procfs
from daemoneye.collector.context import ContextReader, ContextValues
from daemoneye.collector.details import NO_CONTEXT_VALUES, read_instance
from daemoneye.collector.kernel_context import FD_UNKNOWN, KernelContext, KernelFd
from daemoneye.collector.procfs import (
    CMDLINE_KEEP_ARGS,
    CMDLINE_KEEP_BYTES,
    PAGE_SIZE,
    parse_cmdline,
    parse_stat,
    parse_stat_fields,
    parse_status_ids,
    read_exe,
    read_file,
    split_deleted,
)
from daemoneye.collector.task_iter import TaskContext
from daemoneye.collector.users import UserNames
from daemoneye.errors import CollectorError

SAMPLES = Path(__file__).parent / "samples" / "procfs"
MANIFEST: dict[str, dict[str, Any]] = json.loads((SAMPLES / "manifest.json").read_text())
HOSTILE = sorted(name for name in MANIFEST if name.startswith("comm_"))


def sample(name: str, part: str) -> bytes:
    return (SAMPLES / f"{name}.{part}").read_bytes()


def status_value(status: bytes, field: str) -> str:
    for line in status.decode("utf-8", "replace").splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(field)


# -- stat ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_stat_agrees_with_status_of_the_same_process(name: str) -> None:
    stat = parse_stat(sample(name, "stat"))
    status = sample(name, "status")
    assert stat.pid == MANIFEST[name]["pid"] == int(status_value(status, "Pid"))
    assert stat.ppid == int(status_value(status, "PPid"))
    assert stat.threads == int(status_value(status, "Threads"))
    assert stat.start_ticks > 0
    if b"VmRSS:" in status:  # field 24 is rss: close to VmRSS, unlike vsize or rsslim
        vm_rss = int(status_value(status, "VmRSS").split()[0]) * 1024
        assert abs(stat.rss_bytes - vm_rss) <= 1024 * 1024
        assert stat.rss_bytes % PAGE_SIZE == 0
    else:
        assert stat.rss_bytes == 0


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_read_exactly_and_do_not_shift_fields(name: str) -> None:
    raw = sample(name, "stat")
    comm = bytes.fromhex(str(MANIFEST[name]["comm_hex"]))
    stat = parse_stat(raw)
    assert stat.comm == comm.decode("utf-8", "backslashreplace")
    assert stat.state in ("R", "S")  # a fake " Z " or " R 1 1" inside the name is ignored
    assert stat.ppid == int(status_value(sample(name, "status"), "PPid"))
    assert not parse_stat_fields(raw).kernel_thread


def test_invalid_utf8_name_keeps_the_bytes_visible() -> None:
    stat = parse_stat(sample("comm_invalid_utf8", "stat"))
    assert stat.comm == "\\xff\\xfe(bad\\x80"


def test_kernel_thread_and_zombie() -> None:
    kthreadd = parse_stat_fields(sample("kthreadd", "stat"))
    assert kthreadd.kernel_thread
    assert kthreadd.comm == "kthreadd"
    assert kthreadd.rss_bytes == 0
    zombie = parse_stat_fields(sample("zombie", "stat"))
    assert zombie.state == "Z"
    assert not zombie.kernel_thread
    assert not parse_stat_fields(sample("init", "stat")).kernel_thread


def _stat_line(
    pid: int,
    comm: bytes,
    state: bytes,
    ppid: int,
    flags: int,
    utime: int,
    stime: int,
    threads: int,
    start: int,
    rss: int,
) -> bytes:
    fields = [b"0"] * 52
    fields[0] = str(pid).encode()
    fields[1] = b"(" + comm + b")"
    fields[2] = state
    for number, value in (
        (4, ppid),
        (9, flags),
        (14, utime),
        (15, stime),
        (20, threads),
        (22, start),
        (23, 123_456_789),
        (24, rss),
        (25, 2**64 - 1),
    ):
        fields[number - 1] = str(value).encode()
    return b" ".join(fields) + b"\n"


counts = st.integers(min_value=0, max_value=2**63 - 1)


@given(
    pid=st.integers(min_value=1, max_value=2**22),
    comm=st.binary(max_size=64),
    state=st.sampled_from([b"R", b"S", b"D", b"Z", b"T", b"t", b"X", b"I", b"P"]),
    ppid=st.integers(min_value=0, max_value=2**22),
    flags=st.integers(min_value=0, max_value=2**32 - 1),
    utime=counts,
    stime=counts,
    start=counts,
    threads=st.integers(min_value=1, max_value=2**31),
    rss=st.integers(min_value=0, max_value=2**40),
)
def test_stat_round_trips_any_name_and_fields(
    pid: int,
    comm: bytes,
    state: bytes,
    ppid: int,
    flags: int,
    utime: int,
    stime: int,
    start: int,
    threads: int,
    rss: int,
) -> None:
    raw = _stat_line(pid, comm, state, ppid, flags, utime, stime, threads, start, rss)
    fields = parse_stat_fields(raw)
    assert fields == (
        pid,
        comm.decode("utf-8", "backslashreplace"),
        state.decode(),
        ppid,
        bool(flags & 0x00200000),
        utime + stime,
        threads,
        start,
        rss * PAGE_SIZE,
    )


@given(st.binary(max_size=300))
def test_garbage_stat_raises_only_value_error(raw: bytes) -> None:
    with contextlib.suppress(ValueError):  # anything else (IndexError, ...) fails the test
        parse_stat(raw)


@pytest.mark.parametrize("raw", [b"", b"12 (x", b"x) 1 2", b"12 (sleep) S 1 2 3\n"])
def test_malformed_stat_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_stat(raw)


# -- cmdline, status, links ------------------------------------------------------------------------


def test_cmdline_samples() -> None:
    assert parse_cmdline(sample("self_python", "cmdline")) == tuple(MANIFEST["self_python"]["argv"])
    assert parse_cmdline(sample("kthreadd", "cmdline")) == ()
    assert parse_cmdline(sample("zombie", "cmdline")) == ()
    # a title rewritten over argv: one argument, spaces kept, nothing invented
    title = MANIFEST["argv_rewritten"]["title"]
    assert parse_cmdline(sample("argv_rewritten", "cmdline")) == (title,)


def test_a_command_line_past_the_bound_keeps_its_head_and_its_tail() -> None:
    entry = MANIFEST["cmdline_128k"]
    raw = sample("cmdline_128k", "cmdline")
    assert len(raw) > CMDLINE_KEEP_BYTES
    argv = parse_cmdline(raw)
    head, tail = tuple(entry["argv_head"]), tuple(entry["argv_tail"])
    assert argv[: len(head)] == head and argv[-len(tail) :] == tail
    assert sum(len(arg) + 1 for arg in argv) <= CMDLINE_KEEP_BYTES + 2
    under = b"a\0" + b"b" * (CMDLINE_KEEP_BYTES - 10) + b"\0c\0"
    assert parse_cmdline(under) == ("a", "b" * (CMDLINE_KEEP_BYTES - 10), "c")  # kept whole


def test_two_hundred_thousand_empty_arguments_cost_a_bounded_tuple() -> None:
    """2 MB of argv made of empty strings (what a process may exec with) would be a 200k-item
    tuple in every copy of its record; the first and the last arguments are kept."""
    raw = b"sh\0-c\0payload\0" + b"\0" * 200_000 + b"last-word\0"
    argv = parse_cmdline(raw)
    assert len(argv) == CMDLINE_KEEP_ARGS
    assert argv[:3] == ("sh", "-c", "payload") and argv[-1] == "last-word"


def test_cmdline_edge_cases() -> None:
    assert parse_cmdline(b"") == ()
    assert parse_cmdline(b"a\0b c\0") == ("a", "b c")
    assert parse_cmdline(b"no-trailing-nul") == ("no-trailing-nul",)
    assert parse_cmdline(b"title padded\0\0\0\0\0") == ("title padded",)
    assert parse_cmdline(b"a\0\0b\0") == ("a", "", "b")
    assert parse_cmdline(b"\xff\0ok\0") == ("\\xff", "ok")


args = st.lists(st.binary(max_size=20).filter(lambda b: b"\0" not in b), min_size=1, max_size=8)


@given(args.filter(lambda a: a[-1] != b""))
def test_cmdline_round_trips(argv: list[bytes]) -> None:
    raw = b"\0".join(argv) + b"\0"
    assert parse_cmdline(raw) == tuple(a.decode("utf-8", "backslashreplace") for a in argv)


def test_status_ids_take_the_real_ids() -> None:
    status = b"Name:\tsudo\nUid:\t1000\t0\t0\t0\nGid:\t100\t0\t0\t0\nGroups:\t\n"
    assert parse_status_ids(status) == (1000, 100)
    assert parse_status_ids(b"Name:\tx\n") == (None, None)
    assert parse_status_ids(b"Uid:\tbogus\nGid:\n") == (None, None)
    entry = MANIFEST["self_python"]
    assert parse_status_ids(sample("self_python", "status")) == (entry["uid"], entry["gid"])


def test_deleted_suffix() -> None:
    assert split_deleted("/usr/bin/x (deleted)") == ("/usr/bin/x", True)
    assert split_deleted("/memfd:payload (deleted)") == ("/memfd:payload", True)
    assert split_deleted("/usr/bin/x") == ("/usr/bin/x", False)


def test_a_file_named_deleted_is_not_taken_for_a_deleted_one(tmp_path: Path) -> None:
    real = tmp_path / "tool (deleted)"
    real.write_bytes(b"#!/bin/sh\n")
    (tmp_path / "exe").symlink_to(real)
    assert read_exe(bytes(tmp_path / "exe")) == (str(real), False)
    (tmp_path / "gone").symlink_to(tmp_path / "other (deleted)")
    assert read_exe(bytes(tmp_path / "gone")) == (str(tmp_path / "other"), True)


def test_cap_eff() -> None:
    assert procfs.parse_cap_eff(b"CapPrm:\t0\nCapEff:\t0000000000080000\n") == 1 << 19
    assert procfs.parse_cap_eff(b"Name:\tx\n") == 0


# -- readers on this machine -----------------------------------------------------------------------


def test_boot_time_and_boot_id() -> None:
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert abs(procfs.read_boot_time() - (time.time() - uptime)) < 5
    boot_id = procfs.read_boot_id()
    assert len(boot_id) == 36 and boot_id.count("-") == 4
    assert procfs.clock_ticks() > 0 and procfs.page_size() >= 4096


def test_boot_time_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CollectorError, match="cannot read"):
        procfs.read_boot_time(str(tmp_path))
    (tmp_path / "stat").write_bytes(b"cpu 1 2 3\n")
    with pytest.raises(CollectorError, match="no btime"):
        procfs.read_boot_time(str(tmp_path))


def test_read_file_reads_a_live_120_kib_command_line() -> None:
    code = "import sys; print('ready', flush=True); sys.stdin.read()"
    argv = [sys.executable, "-c", code, "x" * 80_000, "y" * 40_000]  # under the bound
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert parse_cmdline(read_file(f"/proc/{child.pid}/cmdline")) == tuple(argv)
    finally:
        child.communicate(b"")


def test_read_instance_of_this_process_and_of_a_kernel_thread() -> None:
    me = read_instance(b"/proc", str(os.getpid()).encode(), UserNames())
    assert me is not None and not me.partial and not me.denied
    assert me.details.exe == os.path.realpath(sys.executable)
    assert me.details.cwd == os.getcwd()
    assert (me.details.uid, me.details.gid) == (os.getuid(), os.getgid())
    assert me.stat.pid == os.getpid()
    if Path("/proc/2/stat").exists() and b"kthreadd" in Path("/proc/2/stat").read_bytes():
        kthread = read_instance(b"/proc", b"2", UserNames())
        assert kthread is not None and kthread.stat.kernel_thread
        assert (kthread.details.exe, kthread.details.cmdline, kthread.denied) == (None, (), False)


def test_read_instance_of_a_zombie_and_of_no_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while b") Z " not in read_file(f"/proc/{child.pid}/stat"):
            time.sleep(0.01)
        zombie = read_instance(b"/proc", str(child.pid).encode(), UserNames())
        assert zombie is not None and zombie.stat.state == "Z"
        assert (zombie.details.exe, zombie.details.cmdline, zombie.partial) == (None, (), False)
    finally:
        child.wait()
    assert read_instance(b"/proc", str(child.pid).encode(), UserNames()) is None


class _EndsItDuringTheReads(ContextReader):
    """A context reader that kills its child at the context's turn, reaped or left a zombie."""

    def __init__(self, child: subprocess.Popen[bytes] | None, *, reap: bool) -> None:
        super().__init__(b"/proc")
        self._child, self._reap = child, reap

    def read_values(self, *_args: object, **_kwargs: object) -> ContextValues:
        if self._child is not None:
            self._child.kill()
            if self._reap:
                self._child.wait()
            else:
                while b") Z " not in read_file(f"/proc/{self._child.pid}/stat"):
                    time.sleep(0.01)
        return NO_CONTEXT_VALUES


@pytest.mark.parametrize(
    ("ends", "reap", "partial"),
    [(False, False, False), (True, False, False), (True, True, True)],
    ids=["alive throughout", "a zombie by its cwd read", "reaped by its cwd read"],
)
def test_a_process_reaped_during_its_reads_is_partial(
    ends: bool, reap: bool, partial: bool
) -> None:
    """With a task pass's ids (no `status` read to tell), the cwd link, read last, says whether
    the process was there to the end; a reaped one is partial, a zombie is not (its stat still
    reads, as before the cwd was read last)."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        # Popen returns at the exec's close-on-exec, before the kernel has set up the new
        # program's argv: wait for it, or cmdline reads empty
        while not read_file(f"/proc/{child.pid}/cmdline"):
            time.sleep(0.001)
        start_ticks = parse_stat_fields(read_file(f"/proc/{child.pid}/stat")).start_ticks
        no_fd = KernelFd(FD_UNKNOWN)
        block = KernelContext(None, None, None, None, None, None, (no_fd, no_fd, no_fd))
        read = read_instance(
            b"/proc",
            str(child.pid).encode(),
            UserNames(),
            _EndsItDuringTheReads(child if ends else None, reap=reap),
            task=TaskContext(start_ticks, block, (os.getuid(), os.getgid())),
        )
        assert read is not None
        assert read.partial is partial
        assert (read.details.cwd is None) is ends
        assert read.details.cmdline == ("sleep", "30")  # read before the end, either way
    finally:
        child.kill()
        child.wait()


# -- users -----------------------------------------------------------------------------------------


def test_user_names_are_cached_and_misses_expire() -> None:
    calls: list[int] = []
    now = [0.0]

    def lookup(uid: int) -> str:
        calls.append(uid)
        if uid == 1000:
            return "alice"
        raise KeyError(uid)

    names = UserNames(lookup=lookup, clock=lambda: now[0], miss_ttl=60.0)
    assert names(1000) == "alice" and names(1000) == "alice"
    assert names(4242) is None and names(4242) is None
    assert calls == [1000, 4242]
    now[0] = 61.0
    assert names(4242) is None
    assert calls == [1000, 4242, 4242]


def test_user_names_from_the_system() -> None:
    assert UserNames()(0) == "root"
    assert UserNames()(2**32 - 2) is None


@given(st.lists(st.binary(max_size=40).map(lambda arg: arg.replace(b"\0", b"")), max_size=8))
def test_cmdline_decoded_whole_equals_each_argument_decoded(args: list[bytes]) -> None:
    """parse_cmdline decodes the whole command line once and splits it: the same text as
    decoding argument by argument, whatever the bytes (a cut UTF-8 sequence at an argument's
    end stays that argument's)."""
    raw = b"\0".join(args) + b"\0"
    expected = tuple(arg.decode("utf-8", "backslashreplace") for arg in args)
    while expected and not expected[-1]:  # trailing NULs are padding
        expected = expected[:-1]
    assert parse_cmdline(raw) == expected
    assert parse_cmdline(b"\xe2\x82\0\xacx\0") == ("\\xe2\\x82", "\\xacx")
