"""The stat signature pass on this machine's kernel: a process's signature moves whenever a
stat field the scanner uses moves (CPU time, in any of its threads; memory; state; threads;
parent; name) and stays put while it idles; and a scanner using it reads the stat of only the
processes whose signature moved, and still sees every change and every exit.

Skipped, with the reason, where the pass cannot load (not root, no BTF, bpf(2) refused)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from daemoneye.collector.procfs import read_boot_time
from daemoneye.collector.scanner import ProcScanner
from daemoneye.collector.stat_signatures import THREADS_WALKED, StatSignatures
from tests.bpf_available import skip_module_unless

skip_module_unless(lambda: StatSignatures.open().close(), "BPF stat signature pass")

GUARD_S = 30.0  # a hang guard, not a timing assertion
# A Python child that does what its stdin says: each line is one command.
_DRIVEN = r"""
import os, sys, threading, ctypes
hold = []
spin = threading.Event()
def burner():
    while True:
        spin.wait()
        sum(range(10000))
threads = []
for line in sys.stdin:
    word = line.split()
    if word[0] == "burn":  # CPU in a thread that is not the leader
        if not threads:
            threads.append(threading.Thread(target=burner, daemon=True))
            threads[0].start()
        spin.set()
    elif word[0] == "rest":
        spin.clear()
    elif word[0] == "grow":
        hold.append(bytearray(8 << 20))
    elif word[0] == "name":
        ctypes.CDLL(None).prctl(15, word[1].encode(), 0, 0, 0)
    elif word[0] == "threads":
        for _ in range(int(word[1])):
            t = threading.Thread(target=threading.Event().wait, daemon=True)
            t.start()
            threads.append(t)
    print("ok", flush=True)
"""


class Driven:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _DRIVEN], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.pid = self.proc.pid

    def do(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == b"ok\n"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def signatures() -> Iterator[StatSignatures]:
    opened = StatSignatures.open()
    yield opened
    opened.close()


@pytest.fixture
def driven() -> Iterator[Driven]:
    child = Driven()
    child.do("rest")
    yield child
    child.close()


def _until_stable(signatures: StatSignatures, pid: int) -> int | None:
    """The signature once two passes in a row agree (the child has settled after its answer)."""
    deadline = time.monotonic() + GUARD_S
    last = signatures.read().get(pid)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = signatures.read().get(pid)
        if now == last:
            return now
        last = now
    raise AssertionError("the signature never settled")


def test_an_idle_process_keeps_its_signature_and_each_change_moves_it(
    signatures: StatSignatures, driven: Driven
) -> None:
    idle = _until_stable(signatures, driven.pid)
    assert idle is not None
    for command in ("grow", "name de-renamed", "threads 2"):
        driven.do(command)
        moved = _until_stable(signatures, driven.pid)
        assert moved != idle, command
        idle = moved
    driven.do("burn")  # CPU in a thread other than the leader
    time.sleep(0.2)
    assert signatures.read().get(driven.pid) != idle
    driven.do("rest")


def test_a_process_with_more_threads_than_walked_is_always_read(
    signatures: StatSignatures, driven: Driven
) -> None:
    driven.do(f"threads {THREADS_WALKED + 2}")
    found = signatures.read()
    assert driven.pid in found and found[driven.pid] is None
    assert found.get(os.getpid()) is not None  # this one has few threads: walked whole


def _count_preads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    real = os.pread

    def counted(fd: int, size: int, offset: int) -> bytes:
        reads.append(fd)
        return real(fd, size, offset)

    monkeypatch.setattr(os, "pread", counted)
    return reads


def test_a_scanner_reads_only_what_moved_and_still_sees_changes_and_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(20)]
    child = Driven()
    scanner = ProcScanner(  # it owns the pass and closes it
        "/proc", boot_time=read_boot_time(), signatures=StatSignatures.open()
    )
    try:
        child.do("rest")
        scanner.scan()
        scanner.scan()  # every known process read once with a signature remembered
        reads = _count_preads(monkeypatch)
        scanner.scan()
        idle_reads = len(reads)
        assert idle_reads < len(sleepers)  # the idle sleepers were not read
        child.do("name de-steady")
        sleepers[0].kill()
        sleepers[0].wait()
        deadline = time.monotonic() + GUARD_S
        renamed = ended = False
        while not (renamed and ended) and time.monotonic() < deadline:
            delta = scanner.scan()
            renamed = renamed or any(
                rec.pid == child.pid and rec.name == "de-steady" for rec in delta.updated
            )
            ended = ended or any(key.pid == sleepers[0].pid for key in delta.ended)
        assert renamed and ended
    finally:
        monkeypatch.undo()
        scanner.close()
        child.close()
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


def test_a_first_scan_takes_no_signature_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process a first scan meets is new and read whole: a pass would spare no read, so
    the scan takes none; the next scan does."""
    passes = StatSignatures.open()
    taken: list[int] = []
    real = passes.read

    def counted() -> dict[int, int | None]:
        found = real()
        taken.append(len(found))
        return found

    monkeypatch.setattr(passes, "read", counted)
    scanner = ProcScanner("/proc", boot_time=read_boot_time(), signatures=passes)
    try:
        first = scanner.scan()
        assert first.stats.processes > 0 and taken == []
        scanner.scan()
        assert len(taken) == 1 and taken[0] > 0
    finally:
        scanner.close()
