"""ProcScanner against a fake /proc tree in tmp_path (every lifecycle case, deterministic clock),
then against the real /proc with real children."""

from __future__ import annotations

import dataclasses
import errno
import gc
import json
import os
import pwd
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemoneye.collector import details as details_module
from daemoneye.collector import kernel_context
from daemoneye.collector.context import ContextReader
from daemoneye.collector.procfs import CLOCK_TICKS, PAGE_SIZE, read_boot_time
from daemoneye.collector.scanner import (
    SNAPSHOT_AT,
    SNAPSHOT_SHARE,
    THREADS_PER_PROCESS_MAX,
    ProcScanner,
)
from daemoneye.collector.task_iter import TaskSnapshot
from daemoneye.errors import CollectorError
from daemoneye.models import ExeHash, ProcessKey, ProcessRecord, ScanDelta

BOOT = 1_700_000_000.0
USERS = {0: "root", 1000: "alice"}


class FakeProc:
    """A directory laid out like /proc: <pid>/{stat,status,cmdline} and exe/cwd symlinks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        (root / "sys").mkdir()  # non-pid entries must be ignored
        (root / "self").symlink_to("1")
        (root / "uptime").write_text("1.0 1.0\n")
        self.stats: dict[int, dict[str, Any]] = {}

    def spawn(
        self,
        pid: int,
        comm: str = "sleep",
        *,
        start: int = 1000,
        ppid: int = 1,
        exe: str | None = "/usr/bin/sleep",
        cmdline: tuple[str, ...] = ("sleep", "60"),
        cwd: str = "/home/alice",
        uid: int = 1000,
        gid: int = 1000,
        kthread: bool = False,
        **stat: Any,
    ) -> None:
        piddir = self.root / str(pid)
        if piddir.exists():
            shutil.rmtree(piddir)
        piddir.mkdir()
        self.stats[pid] = (
            dict(
                comm=comm,
                start=start,
                ppid=ppid,
                kthread=kthread,
                state="S",
                utime=0,
                stime=0,
                threads=1,
                rss=100,
            )
            | stat
        )
        self._write_stat(pid)
        (piddir / "status").write_text(
            f"Name:\t{comm}\nPid:\t{pid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
            f"Gid:\t{gid}\t{gid}\t{gid}\t{gid}\n"
        )
        (piddir / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in cmdline))
        if exe is not None:
            (piddir / "exe").symlink_to(exe)
        (piddir / "cwd").symlink_to(cwd)

    def change(self, pid: int, **stat: Any) -> None:
        self.stats[pid].update(stat)
        self._write_stat(pid)

    def exec(self, pid: int, comm: str, exe: str, cmdline: tuple[str, ...]) -> None:
        piddir = self.root / str(pid)
        (piddir / "exe").unlink(missing_ok=True)
        (piddir / "exe").symlink_to(exe)
        (piddir / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in cmdline))
        self.change(pid, comm=comm)

    def kill(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid))

    def _write_stat(self, pid: int) -> None:
        s = self.stats[pid]
        fields = ["0"] * 52
        fields[0], fields[1], fields[2], fields[3] = (
            str(pid),
            f"({s['comm']})",
            s["state"],
            str(s["ppid"]),
        )
        fields[8] = str(0x00200000 if s["kthread"] else 0x00400000)
        fields[13], fields[14] = str(s["utime"]), str(s["stime"])
        fields[19], fields[21], fields[23] = str(s["threads"]), str(s["start"]), str(s["rss"])
        (self.root / str(pid) / "stat").write_text(" ".join(fields) + "\n")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_scanner(proc: FakeProc, clock: Clock) -> Callable[..., ProcScanner]:
    def make(**kwargs: Any) -> ProcScanner:
        kwargs.setdefault("update_interval", 10.0)
        return ProcScanner(
            str(proc.root), boot_time=BOOT, clock=clock, user_names=USERS.get, **kwargs
        )

    return make


def start_time(ticks: int) -> float:
    return BOOT + ticks / CLOCK_TICKS


def is_empty(delta: ScanDelta) -> bool:
    return not (delta.added or delta.updated or delta.execed or delta.ended or delta.events)


# -- lifecycle on a fake /proc ---------------------------------------------------------------------


def test_first_scan_adds_every_process_with_its_details(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(
        1, "init", start=5, ppid=0, exe="/sbin/init", cmdline=("/sbin/init",), uid=0, gid=0, cwd="/"
    )
    proc.spawn(42, "sleep", start=1000, rss=250, cmdline=("sleep", "60", "with space"))
    proc.spawn(2, "kthreadd", start=5, ppid=0, exe=None, cmdline=(), uid=0, gid=0, kthread=True)
    delta = make_scanner().scan()
    assert {r.pid for r in delta.added} == {1, 2, 42}
    sleep = next(r for r in delta.added if r.pid == 42)
    assert sleep == ProcessRecord(
        pid=42,
        ppid=1,
        start_time=start_time(1000),
        name="sleep",
        exe="/usr/bin/sleep",
        cmdline=("sleep", "60", "with space"),
        cwd="/home/alice",
        uid=1000,
        user="alice",
        gid=1000,
        state="S",
        threads=1,
        rss=250 * PAGE_SIZE,
        cpu_percent=0.0,
        exe_sha256=None,
        exe_deleted=False,
        first_seen=clock.now,
        last_seen=clock.now,
    )
    kthread = next(r for r in delta.added if r.pid == 2)
    assert (kthread.exe, kthread.cwd, kthread.cmdline) == (None, None, ())
    assert [e.kind for e in delta.events] == ["start"] * 3
    event = next(e for e in delta.events if e.pid == 42)
    assert (event.exe, event.cmdline, event.source, event.start_time) == (
        "/usr/bin/sleep",
        ("sleep", "60", "with space"),
        "poll",
        start_time(1000),
    )
    assert (delta.stats.processes, delta.stats.new, delta.stats.vanished) == (3, 3, 0)


def test_an_unchanged_stat_produces_nothing_and_rebuilds_nothing(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42)
    scanner = make_scanner()
    scanner.scan()
    before = scanner.snapshot()
    for _ in range(3):
        clock.now += 20.0  # well past update_interval: still nothing to say
        assert is_empty(scanner.scan())
    after = scanner.snapshot()
    assert after == before
    assert all(after[key] is before[key] for key in before)


def test_updates_are_emitted_at_most_once_per_update_interval(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42, rss=100)
    scanner = make_scanner(update_interval=10.0)
    t0 = clock.now
    scanner.scan()
    key = ProcessKey(42, start_time(1000))
    clock.now = t0 + 1
    proc.change(42, rss=200, state="R")
    assert is_empty(scanner.scan())
    assert scanner.snapshot()[key].rss == 200 * PAGE_SIZE  # the live view is current at once
    clock.now = t0 + 5
    proc.change(42, rss=300)
    assert is_empty(scanner.scan())
    clock.now = t0 + 10
    delta = scanner.scan()
    assert [(r.rss, r.state, r.last_seen, r.first_seen) for r in delta.updated] == [
        (300 * PAGE_SIZE, "R", t0 + 10, t0)
    ]
    assert scanner.snapshot()[key] == delta.updated[0]
    clock.now = t0 + 11
    assert is_empty(scanner.scan())


def test_a_change_reverted_before_the_interval_is_not_emitted(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42, state="S")
    scanner = make_scanner(update_interval=10.0)
    scanner.scan()
    clock.now += 1
    proc.change(42, state="D")
    scanner.scan()
    clock.now += 1
    proc.change(42, state="S")
    scanner.scan()
    clock.now += 20
    assert scanner.scan().updated == ()


def test_cpu_percent_over_the_last_interval_and_back_to_zero_when_idle(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42, utime=0, stime=0)
    scanner = make_scanner(update_interval=0.0)
    scanner.scan()
    key = ProcessKey(42, start_time(1000))
    clock.now += 2.0
    proc.change(42, utime=CLOCK_TICKS // 2, stime=CLOCK_TICKS // 2)  # 1 s of CPU in 2 s
    assert [r.cpu_percent for r in scanner.scan().updated] == [50.0]
    clock.now += 1.0  # stat unchanged: no CPU used in this interval
    assert [r.cpu_percent for r in scanner.scan().updated] == [0.0]
    assert scanner.snapshot()[key].cpu_percent == 0.0


def test_a_new_process_gets_its_cpu_since_start(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    ticks_started = int((clock.now - 4.0 - BOOT) * CLOCK_TICKS)  # started 4 s ago
    proc.spawn(42, start=ticks_started, utime=CLOCK_TICKS * 2)  # 2 s of CPU
    [record] = make_scanner().scan().added
    assert record.cpu_percent == pytest.approx(50.0, abs=0.2)


def test_exec_is_detected_by_a_name_change(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42, "bash", exe="/usr/bin/bash", cmdline=("bash",))
    scanner = make_scanner()
    t0 = clock.now
    scanner.scan()
    clock.now += 1
    proc.exec(42, "curl", "/usr/bin/curl", ("curl", "http://example.invalid/x"))
    delta = scanner.scan()
    [record] = delta.execed
    assert (record.name, record.exe, record.cmdline) == (
        "curl",
        "/usr/bin/curl",
        ("curl", "http://example.invalid/x"),
    )
    assert (record.key, record.first_seen, record.last_seen) == (
        ProcessKey(42, start_time(1000)),
        t0,
        clock.now,
    )
    assert [(e.kind, e.exe, e.cmdline) for e in delta.events] == [
        ("exec", "/usr/bin/curl", ("curl", "http://example.invalid/x"))
    ]
    assert delta.added == () and delta.ended == ()
    assert delta.stats.execs == 1


def test_a_rename_without_exec_is_a_rename_event_not_an_exec(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42, "python3", exe="/usr/bin/python3", cmdline=("python3", "app.py"))
    scanner = make_scanner(update_interval=60.0)
    scanner.scan()
    clock.now += 1
    proc.change(42, comm="worker-3")  # prctl(PR_SET_NAME)
    delta = scanner.scan()
    assert delta.execed == ()
    assert [(e.kind, e.old_value, e.new_value, e.source) for e in delta.events] == [
        ("rename", "python3", "worker-3", "poll")
    ]
    # written with its event at once, not held back by the update interval
    assert [r.name for r in delta.updated] == ["worker-3"]


def test_a_kernel_thread_renaming_itself_is_not_reread(
    proc: FakeProc,
    make_scanner: Callable[..., ProcScanner],
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc.spawn(9, "kworker/0:0-events", exe=None, cmdline=(), uid=0, gid=0, kthread=True, ppid=2)
    scanner = make_scanner(update_interval=0.0)
    scanner.scan()
    monkeypatch.setattr(details_module, "read_file", _fail)
    clock.now += 1
    proc.change(9, comm="kworker/0:0-mm_percpu_wq")
    delta = scanner.scan()
    assert delta.execed == () and [r.name for r in delta.updated] == ["kworker/0:0-mm_percpu_wq"]


def _fail(*args: object, **kwargs: object) -> bytes:
    raise AssertionError("details must not be read again")


def test_a_truncated_name_is_completed_from_the_executable(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner]
) -> None:
    proc.spawn(
        42,
        "systemd-journal",
        exe="/usr/lib/systemd/systemd-journald",
        cmdline=("/usr/lib/systemd/systemd-journald",),
    )
    proc.spawn(43, "averyveryveryve", exe="/usr/bin/python3", cmdline=("innocent",))
    names = {r.pid: r.name for r in make_scanner().scan().added}
    assert names == {42: "systemd-journald", 43: "averyveryveryve"}


def test_exit_ends_the_instance(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42)
    proc.spawn(43)
    scanner = make_scanner()
    scanner.scan()
    proc.kill(42)
    clock.now += 1
    delta = scanner.scan()
    assert delta.ended == (ProcessKey(42, start_time(1000)),)
    [event] = delta.events
    assert (event.kind, event.pid, event.exit_code, event.ts, event.exe) == (
        "exit",
        42,
        None,
        clock.now,
        "/usr/bin/sleep",
    )
    assert set(scanner.snapshot()) == {ProcessKey(43, start_time(1000))}
    assert delta.stats.ended == 1 and delta.stats.vanished == 0


@pytest.mark.parametrize("new_name", ["sleep", "other"])
def test_pid_reuse_ends_the_old_instance_and_adds_the_new(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock, new_name: str
) -> None:
    proc.spawn(42, "sleep", start=1000)
    scanner = make_scanner()
    scanner.scan()
    proc.spawn(42, new_name, start=5000, exe="/usr/bin/new", cmdline=("new",))
    clock.now += 1
    delta = scanner.scan()
    assert delta.ended == (ProcessKey(42, start_time(1000)),)
    assert [(r.key, r.exe) for r in delta.added] == [
        (ProcessKey(42, start_time(5000)), "/usr/bin/new")
    ]
    assert [e.kind for e in delta.events] == ["exit", "start"]
    assert list(scanner.snapshot()) == [ProcessKey(42, start_time(5000))]


def test_same_pid_different_start_time_are_different_instances() -> None:
    assert ProcessKey(42, start_time(1000)) != ProcessKey(42, start_time(1001))
    assert len({ProcessKey(42, start_time(1000)), ProcessKey(42, start_time(1001))}) == 2


def test_a_process_gone_between_listing_and_reading_is_skipped(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42)
    proc.spawn(43)
    (proc.root / "99").mkdir()  # listed, but its stat is gone: vanished, not added
    scanner = make_scanner()
    delta = scanner.scan()
    assert {r.pid for r in delta.added} == {42, 43}
    assert delta.stats.vanished == 1
    (proc.root / "99").rmdir()
    proc.kill(43)  # a known process whose stat is gone has ended (its directory goes too)
    clock.now += 1
    delta = scanner.scan()
    assert delta.ended == (ProcessKey(43, start_time(1000)),)
    assert (delta.stats.vanished, delta.stats.ended, delta.stats.processes) == (0, 1, 1)
    assert scanner.vanished_total == 1


def test_listing_is_skipped_while_no_pid_was_allocated(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    """With a procfs of our own pid namespace, an unchanged last pid in loadavg means no task
    was created, so /proc is not listed; a new pid is found as soon as the counter moves."""
    (proc.root / "self").unlink()
    (proc.root / "self").symlink_to(str(os.getpid()))
    (proc.root / "loadavg").write_text("0.00 0.01 0.05 1/80 42\n")
    proc.spawn(42)
    scanner = make_scanner()
    assert [r.pid for r in scanner.scan().added] == [42]
    proc.spawn(43)  # appears without the counter moving: only possible in a fake tree
    clock.now += 1
    assert scanner.scan().added == ()
    (proc.root / "loadavg").write_text("0.00 0.01 0.05 1/81 43\n")
    clock.now += 1
    assert [r.pid for r in scanner.scan().added] == [43]
    proc.kill(42)  # exits are found by reading the known processes, listing or not
    clock.now += 1
    assert scanner.scan().ended == (ProcessKey(42, start_time(1000)),)


def test_the_last_pid_is_not_trusted_for_another_namespace_procfs(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    (proc.root / "loadavg").write_text("0.00 0.01 0.05 1/80 42\n")  # self -> 1: not us
    proc.spawn(42)
    scanner = make_scanner()
    scanner.scan()
    proc.spawn(43)
    clock.now += 1
    assert [r.pid for r in scanner.scan().added] == [43]


def test_a_process_gone_while_its_details_are_read_is_recorded_as_partial(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner]
) -> None:
    proc.spawn(42)
    (proc.root / "42" / "status").unlink()
    delta = make_scanner().scan()
    [record] = delta.added
    assert (record.uid, record.exe) == (None, "/usr/bin/sleep")
    assert [e.partial for e in delta.events] == [True]


def test_denied_details_are_counted_and_the_rest_is_recorded(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc.spawn(42, uid=0)
    proc.spawn(43, uid=1000)
    real_readlink = os.readlink

    def readlink(path: Any, *, dir_fd: int | None = None) -> Any:
        if dir_fd is not None and real_readlink(f"/proc/self/fd/{dir_fd}").endswith("/42"):
            raise PermissionError(13, "Permission denied")
        return real_readlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "readlink", readlink)
    scanner = make_scanner()
    delta = scanner.scan()
    records = {r.pid: r for r in delta.added}
    assert (records[42].exe, records[42].cwd) == (None, None)
    assert (records[42].cmdline, records[42].uid, records[42].user) == (("sleep", "60"), 0, "root")
    assert records[43].exe == "/usr/bin/sleep"
    assert delta.stats.denied == 1 and scanner.denied_total == 1


def test_a_deleted_executable_is_flagged(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner]
) -> None:
    proc.spawn(42, exe="/tmp/dropper (deleted)")
    [record] = make_scanner().scan().added
    assert (record.exe, record.exe_deleted) == ("/tmp/dropper", True)


def test_start_time_is_identical_on_every_scan(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42, start=123_457)
    scanner = make_scanner(update_interval=0.0)
    [first] = scanner.scan().added
    clock.now += 1
    proc.change(42, rss=999)
    [again] = scanner.scan().updated
    assert again.start_time == first.start_time == BOOT + 123_457 / CLOCK_TICKS


# -- restart: prime --------------------------------------------------------------------------------


def test_prime_keeps_running_processes_and_ends_the_dead(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42)
    proc.spawn(43, "bash", exe="/usr/bin/bash", cmdline=("bash",))
    scanner = make_scanner()
    known = {r.key: r for r in make_scanner().scan().added}
    known = {
        k: dataclasses.replace(r, first_seen=123.0, exe_sha256="ab" * 32) for k, r in known.items()
    }
    dead = ProcessKey(77, start_time(50))
    known[dead] = dataclasses.replace(
        known[ProcessKey(42, start_time(1000))], pid=77, start_time=dead.start_time
    )
    proc.exec(43, "vim", "/usr/bin/vim", ("vim", "notes"))
    scanner.prime(known)
    clock.now += 1
    delta = scanner.scan()
    assert delta.added == ()
    assert [(r.pid, r.first_seen, r.exe_sha256) for r in delta.updated] == [(42, 123.0, "ab" * 32)]
    assert [(r.pid, r.exe, r.first_seen, r.exe_sha256) for r in delta.execed] == [
        (43, "/usr/bin/vim", 123.0, None)
    ]
    assert delta.ended == (dead,)
    assert sorted((e.kind, e.pid) for e in delta.events) == [("exec", 43), ("exit", 77)]
    with pytest.raises(RuntimeError):
        scanner.prime(known)


def test_a_missing_proc_root_is_a_collector_error(tmp_path: Path) -> None:
    with pytest.raises(CollectorError, match="procfs"):
        ProcScanner(str(tmp_path / "nope"), boot_time=BOOT)


# -- hashes ----------------------------------------------------------------------------------------


class FakeHasher:
    """Records submissions; results are delivered by the test, in order."""

    def __init__(self) -> None:
        self.submitted: list[tuple[ProcessKey, int]] = []
        self.results: list[ExeHash] = []

    def submit(self, key: ProcessKey, start_ticks: int) -> bool:
        self.submitted.append((key, start_ticks))
        return True

    def room(self) -> int:
        return self.capacity

    capacity = 100

    def tap(self) -> Callable[[], list[ExeHash]]:
        def take() -> list[ExeHash]:
            taken, self.results[:] = list(self.results), []
            return taken

        return take


def test_hashes_land_in_the_snapshot_and_a_stale_one_does_not(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    hasher = FakeHasher()
    proc.spawn(42, "bash", exe="/usr/bin/bash", cmdline=("bash",))
    proc.spawn(3, "kthread", exe=None, cmdline=(), kthread=True)
    scanner = make_scanner(hasher=hasher)
    scanner.scan()
    key = ProcessKey(42, start_time(1000))
    assert hasher.submitted == [(key, 1000)]  # not the kernel thread: it has no executable
    proc.exec(42, "curl", "/usr/bin/curl", ("curl",))
    clock.now += 1
    scanner.scan()
    assert hasher.submitted == [(key, 1000), (key, 1000)]
    hasher.results.append(ExeHash(key, "bash-sha"))  # the job from before the exec
    scanner.scan()
    assert scanner.snapshot()[key].exe_sha256 is None
    hasher.results.append(ExeHash(key, "curl-sha"))
    scanner.scan()
    assert scanner.snapshot()[key].exe_sha256 == "curl-sha"


def _records_alive() -> int:
    gc.collect()
    return sum(isinstance(o, ProcessRecord) for o in gc.get_objects())


def test_the_scanner_holds_one_record_per_process_while_a_change_waits_to_be_emitted(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    """A hash landing and a CPU % settling after the first sight change every record, and
    the changes wait for the update interval to be emitted: the scanner keeps what it last
    emitted as a few fields, not as a second record per process (at 10,000 processes that
    was a second 3.4 MB of records)."""
    hasher = FakeHasher()
    for pid in range(100, 150):
        proc.spawn(pid, utime=50, stime=50)  # CPU at first sight: settled to 0 % next tick
    before = _records_alive()  # whatever other tests in this process still hold
    scanner = make_scanner(hasher=hasher, update_interval=60.0)
    scanner.scan()
    clock.now += 1.0
    hasher.results += [ExeHash(key, "sha") for key, _ in hasher.submitted]
    delta = scanner.scan()
    assert not delta.updated  # waiting for the interval
    del delta
    assert _records_alive() - before == 50
    assert {r.exe_sha256 for r in scanner.snapshot().values()} == {"sha"}
    clock.now += 60.0
    emitted = scanner.scan().updated
    assert len(emitted) == 50 and {r.cpu_percent for r in emitted} == {0.0}


# -- the real /proc --------------------------------------------------------------------------------


@pytest.fixture
def real_scanner() -> ProcScanner:
    return ProcScanner("/proc", boot_time=read_boot_time())


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; print('ready', flush=True); time.sleep(30)",
            "distinct-marker-xyz",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()


def find(records: tuple[ProcessRecord, ...], pid: int) -> ProcessRecord:
    [record] = [r for r in records if r.pid == pid]
    return record


def test_a_real_child_is_seen_with_its_details_and_its_end(
    real_scanner: ProcScanner, sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    record = find(real_scanner.scan().added, sleeper.pid)
    assert record.exe == os.path.realpath(sys.executable)
    assert record.cmdline[-1] == "distinct-marker-xyz" and record.cmdline[0] == sys.executable
    assert record.cwd == str(tmp_path)
    assert (record.uid, record.gid) == (os.getuid(), os.getgid())
    assert record.user == pwd.getpwuid(os.getuid()).pw_name
    assert record.ppid == os.getpid() and record.state in ("S", "R")
    again = real_scanner.scan()
    assert sleeper.pid not in {r.pid for r in again.added}
    assert real_scanner.snapshot()[record.key].start_time == record.start_time
    sleeper.kill()
    sleeper.wait()
    delta = real_scanner.scan()
    assert record.key in delta.ended
    assert ("exit", sleeper.pid) in {(e.kind, e.pid) for e in delta.events}
    assert record.key not in real_scanner.snapshot()


def test_a_new_process_stat_file_is_opened_once_and_held_and_nothing_leaks(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stat file a new instance is read through (relative to its pinned directory) is the
    one the poller keeps polling: no second open by path, and every descriptor is accounted
    for (held while the instance lives, closed with the scanner)."""
    before = len(os.listdir("/proc/self/fd"))
    by_path: list[bytes] = []
    real_open = os.open

    def counting_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if isinstance(path, bytes) and path.endswith(b"/stat") and path.startswith(b"/proc/"):
            by_path.append(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    scanner = ProcScanner("/proc", boot_time=read_boot_time())
    try:
        delta = scanner.scan()
        assert sleeper.pid in {r.pid for r in delta.added}
        assert by_path == [], "a new instance's stat is not opened again by its path"
        os.kill(sleeper.pid, 19)  # SIGSTOP: its stat changes, read through the held file
        for _ in range(200):
            if (
                "T" in (r.state for r in scanner.scan().updated if r.pid == sleeper.pid)
                or scanner.snapshot().get(find(delta.added, sleeper.pid).key, None) is None
            ):
                break
            time.sleep(0.01)
        record = scanner.record(find(delta.added, sleeper.pid).key)
        assert record is not None and record.state == "T"
    finally:
        os.kill(sleeper.pid, 18)
        scanner.close()
    assert len(os.listdir("/proc/self/fd")) <= before  # (another test's garbage may close one)


def test_a_scan_of_a_proc_without_held_files_closes_every_stat_it_read(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner]
) -> None:
    for pid in range(100, 110):
        proc.spawn(pid)
    scanner = make_scanner()
    assert len(scanner.scan().added) == 10
    # (counting fds would be fooled by another test's garbage closing some meanwhile)
    assert not [target for target in _open_files() if target.startswith(str(proc.root))]


def _open_files() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile
    return found


def test_a_real_exec_is_seen(real_scanner: ProcScanner) -> None:
    sleep = shutil.which("sleep") or "/bin/sleep"
    code = f"import os, sys; sys.stdin.readline(); os.execv({sleep!r}, ['sleep', '30'])"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        while b"-c" not in Path(f"/proc/{child.pid}/cmdline").read_bytes():
            time.sleep(0.01)  # wait for the child's own exec of python
        before = find(real_scanner.scan().added, child.pid)
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        while Path(f"/proc/{child.pid}/comm").read_text().strip() != "sleep":
            time.sleep(0.01)
        after = find(real_scanner.scan().execed, child.pid)
        assert after.key == before.key
        assert (after.exe, after.cmdline) == (os.path.realpath(sleep), ("sleep", "30"))
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_an_unprivileged_scan_counts_what_it_cannot_see() -> None:
    """As uid 65534 the exe and cwd of root's processes are refused: counted, the rest kept."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops privileges, scans, reports through the pipe, never returns
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            scanner = ProcScanner("/proc", boot_time=read_boot_time())
            delta = scanner.scan()
            init = find(delta.added, 1)
            report = [
                scanner.sees_all,
                delta.stats.denied,
                init.exe,
                init.cwd,
                init.uid,
                len(init.cmdline),
            ]
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    os.waitpid(pid, 0)
    sees_all, denied, exe, cwd, uid, argc = json.loads(output)
    assert sees_all is False
    assert denied > 0
    assert (exe, cwd, uid) == (None, None, 0)
    assert argc > 0  # the command line is world-readable


def test_hash_jobs_wait_for_room_instead_of_being_dropped(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    hasher = FakeHasher()
    hasher.capacity = 1
    for pid in (41, 42, 43):
        proc.spawn(pid)
    scanner = make_scanner(hasher=hasher)
    scanner.scan()
    [first] = [key.pid for key, _ in hasher.submitted]
    waiting = sorted({41, 42, 43} - {first})
    proc.kill(waiting[0])  # ends while its job waits: it is never submitted
    for _ in range(3):
        clock.now += 1
        scanner.scan()
    assert [key.pid for key, _ in hasher.submitted] == [first, waiting[1]]


def test_a_process_exiting_during_an_exec_check_is_not_an_exec(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    proc.spawn(42, "bash", exe="/usr/bin/bash", cmdline=("bash",))
    scanner = make_scanner()
    scanner.scan()
    proc.change(42, comm="sh")
    (proc.root / "42" / "exe").unlink()  # what a reader sees of a process that is exiting
    (proc.root / "42" / "status").unlink()
    clock.now += 1
    assert scanner.scan().execed == ()


class _Passes:
    """A stat signature pass that says nothing moved, on a host with `threads` per process."""

    def __init__(self, proc: FakeProc, threads: float) -> None:
        self.proc = proc
        self.threads_per_process = threads
        self.reads = 0
        self.closed = False

    def read(self) -> dict[int, int | None]:
        self.reads += 1
        return {int(name): 7 for name in os.listdir(self.proc.root) if name.isdigit()}

    def close(self) -> None:
        self.closed = True


def test_a_stat_pass_unchanged_process_is_not_read_and_a_thread_heavy_host_rests_it(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner]
) -> None:
    for pid in range(100, 110):
        proc.spawn(pid)
    passes = _Passes(proc, threads=1.0)
    scanner = make_scanner(signatures=passes)  # a stand-in for the kernel pass
    scanner.scan()
    scanner.scan()  # each process read once with its signature: from now on, not read
    proc.change(105, state="R")  # a change the pass does not report is not read (by design)
    scanner.scan()
    assert _state_of(scanner, 105) == "S"
    passes.threads_per_process = THREADS_PER_PROCESS_MAX + 1
    scanner.scan()  # the pass says it costs more than the reads: every stat is read
    reads = passes.reads
    scanner.scan()
    assert passes.reads == reads and _state_of(scanner, 105) == "R"
    scanner.close()
    assert passes.closed


def _state_of(scanner: ProcScanner, pid: int) -> str:
    return next(rec.state for key, rec in scanner.snapshot().items() if key.pid == pid)


class _TaskPasses:
    """A task iterator that counts its passes and lists no task (or, once `refuse` is set,
    fails as a kernel that refuses a pass does)."""

    def __init__(self) -> None:
        self.passes = 0
        self.refuse = False

    @property
    def passes_total(self) -> int:
        return self.passes

    def snapshot(self) -> TaskSnapshot:
        if self.refuse:
            raise OSError(errno.EPERM, "refused")
        self.passes += 1
        return TaskSnapshot(b"", 10_000_000)

    def close(self) -> None:
        pass


def test_a_task_pass_is_taken_only_when_the_new_processes_are_many_and_a_share_of_all(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    """The pass visits every task: for a few new processes among many it costs more than
    reading theirs from /proc."""
    for pid in range(1000, 1400):
        proc.spawn(pid)
    tasks = _TaskPasses()
    scanner = make_scanner(context=ContextReader(os.fsencode(proc.root)), tasks=tasks)
    scanner.scan()  # the first scan: every process is new
    assert tasks.passes == 1
    for pid in range(2000, 2000 + SNAPSHOT_AT + 8):  # many, but under one in SNAPSHOT_SHARE
        proc.spawn(pid)
    clock.now += 1
    assert len(scanner.scan().added) == SNAPSHOT_AT + 8
    assert tasks.passes == 1
    for pid in range(3000, 3000 + 440 // (SNAPSHOT_SHARE - 1) + 1):  # one in eight of all
        proc.spawn(pid)
    clock.now += 1
    scanner.scan()
    assert tasks.passes == 2
    for pid in range(4000, 4000 + SNAPSHOT_AT - 1):  # under SNAPSHOT_AT, whatever the share
        proc.spawn(pid)
    for pid in range(1000, 1400):
        proc.kill(pid)
    clock.now += 1
    scanner.scan()
    assert tasks.passes == 2


def test_health_says_which_task_pass_is_on_resting_or_off_and_why(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner], clock: Clock
) -> None:
    for pid in range(1000, 1040):
        proc.spawn(pid)
    off = make_scanner(passes_off=("off: collector.exec_capture is off",) * 2)
    assert off.task_passes == "off: collector.exec_capture is off"
    tasks, signatures = _TaskPasses(), _Passes(proc, threads=1.0)
    scanner = make_scanner(
        context=ContextReader(os.fsencode(proc.root)), tasks=tasks, signatures=signatures
    )
    scanner.scan()
    assert scanner.task_passes == "context on (1 pass); stat signatures on"
    signatures.threads_per_process = THREADS_PER_PROCESS_MAX + 1
    clock.now += 1
    scanner.scan()
    assert scanner.task_passes.endswith(
        "; stat signatures resting 30 ticks (over 16 threads per process)"
    )
    tasks.refuse = True
    for pid in range(2000, 2040):
        proc.spawn(pid)
    clock.now += 1
    scanner.scan()
    assert scanner.task_passes.startswith("context off: the kernel refused a pass: ")


class _OneTaskPass(_TaskPasses):
    """A task iterator whose pass lists one process, with real ids other than its status's."""

    def __init__(self, pid: int, start_ticks: int, ids: tuple[int, int]) -> None:
        super().__init__()
        tick_ns = 1_000_000_000 // CLOCK_TICKS
        block = bytearray(kernel_context.BYTES)
        struct.pack_into("<II", block, 8, 4026531836, 0)  # pid namespace
        struct.pack_into("<I", block, 28, kernel_context.HAS_PID_NS)
        head = struct.pack("<IIQIII4x", pid, pid, start_ticks * tick_ns, *ids, 1)
        self.raw, self.tick_ns = head + bytes(block), tick_ns

    def snapshot(self) -> TaskSnapshot:
        self.passes += 1
        return TaskSnapshot(self.raw, self.tick_ns)


def test_a_task_pass_gives_its_processes_real_ids_without_reading_status(
    proc: FakeProc, make_scanner: Callable[..., ProcScanner]
) -> None:
    """With or without a context reader: the pass's ids stand for status's, for the instance
    it names (the start time), and the others still read status."""
    for pid in range(1000, 1040):
        proc.spawn(pid, start=500 + pid)
    scanner = make_scanner(tasks=_OneTaskPass(1007, 1507, (4242, 4343)))
    found = {rec.pid: rec for rec in scanner.scan().added}
    assert (found[1007].uid, found[1007].gid) == (4242, 4343)
    assert (found[1008].uid, found[1008].gid) == (1000, 1000)
    reused = make_scanner(tasks=_OneTaskPass(1007, 99, (0, 0)))  # another instance's record
    assert {rec.pid: rec for rec in reused.scan().added}[1007].uid == 1000
