"""ExeHasher against real running binaries: copied, deleted while running, too large, reused pid,
a full queue, and the scanner that feeds it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.collector.hashing import ExeHasher
from daemoneye.collector.procfs import parse_stat_fields, read_boot_time, read_file
from daemoneye.collector.scanner import ProcScanner
from daemoneye.models import ExeHash, ProcessKey

SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture
def hasher() -> Iterator[ExeHasher]:
    hasher = ExeHasher()
    yield hasher
    hasher.close()


@pytest.fixture
def copied_sleep(tmp_path: Path) -> Path:
    binary = tmp_path / "copied-sleep"
    shutil.copy2(SLEEP, binary)
    return binary


def run(binary: Path) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([str(binary), "30"])
    while os.path.realpath(f"/proc/{child.pid}/exe") != str(binary):
        assert child.poll() is None, "the copied binary did not start"
        threading.Event().wait(0.005)  # until the exec is done
    return child


def key_of(pid: int) -> tuple[ProcessKey, int]:
    start_ticks = parse_stat_fields(read_file(f"/proc/{pid}/stat")).start_ticks
    return ProcessKey(pid, float(start_ticks)), start_ticks


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_hash_of_a_running_copy_is_the_hash_of_the_file(
    hasher: ExeHasher, copied_sleep: Path
) -> None:
    expected = sha256_of(copied_sleep)
    child = run(copied_sleep)
    try:
        key, start_ticks = key_of(child.pid)
        assert hasher.submit(key, start_ticks)
        assert hasher.flush(timeout=30)
        assert hasher.drain() == [ExeHash(key, expected)]
        assert hasher.drain() == []  # only what was produced since the last drain
    finally:
        child.kill()
        child.wait()


def test_a_binary_deleted_while_running_is_still_hashed_and_flagged(
    hasher: ExeHasher, copied_sleep: Path
) -> None:
    expected = sha256_of(copied_sleep)
    child = run(copied_sleep)
    try:
        copied_sleep.unlink()
        scanner = ProcScanner(boot_time=read_boot_time(), hasher=hasher)
        [record] = [r for r in scanner.scan().added if r.pid == child.pid]
        assert (record.exe, record.exe_deleted) == (str(copied_sleep), True)
        # On a busy host the job may wait in the scanner's backlog for a later tick.
        results: list[ExeHash] = []
        for _ in range(100):
            assert hasher.flush(timeout=30)
            results += hasher.drain()
            if ExeHash(record.key, expected) in results:
                break
            scanner.scan()
        assert ExeHash(record.key, expected) in results
        scanner.scan()  # the scanner folds finished hashes into its live records
        assert scanner.snapshot()[record.key].exe_sha256 == expected
    finally:
        child.kill()
        child.wait()


def test_one_file_is_read_once_for_many_processes(hasher: ExeHasher, copied_sleep: Path) -> None:
    children = [run(copied_sleep) for _ in range(3)]
    try:
        for child in children:
            hasher.submit(*key_of(child.pid))
        assert hasher.flush(timeout=30)
        assert {h.sha256 for h in hasher.drain()} == {sha256_of(copied_sleep)}
        assert (hasher.hashed_total, hasher.cache_hits_total) == (1, 2)
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_a_binary_over_the_cap_is_not_hashed(copied_sleep: Path) -> None:
    hasher = ExeHasher(max_bytes=1024)
    child = run(copied_sleep)
    try:
        key, start_ticks = key_of(child.pid)
        result = hasher.hash_instance(key, start_ticks)
        assert result.sha256 is None and result.reason is not None and "cap" in result.reason
    finally:
        child.kill()
        child.wait()
        hasher.close()


def test_a_reused_or_vanished_pid_is_not_hashed(hasher: ExeHasher, copied_sleep: Path) -> None:
    child = run(copied_sleep)
    try:
        key, start_ticks = key_of(child.pid)
        reused = hasher.hash_instance(key, start_ticks + 1)  # another instance under this pid
        assert (reused.sha256, reused.key) == (None, key)
        assert reused.reason is not None and "exited" in reused.reason
    finally:
        child.kill()
        child.wait()
    gone = hasher.hash_instance(key, start_ticks)
    assert gone.sha256 is None and gone.reason is not None and "exited" in gone.reason


def test_a_batch_is_hashed_in_order_like_single_submits(
    hasher: ExeHasher, copied_sleep: Path
) -> None:
    expected = sha256_of(copied_sleep)
    children = [run(copied_sleep) for _ in range(3)]
    try:
        jobs = [key_of(child.pid) for child in children]
        assert hasher.submit_many(jobs) == 3
        assert hasher.flush(timeout=30)
        assert hasher.drain() == [ExeHash(key, expected) for key, _ in jobs]
        assert hasher.submitted_total == 3
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_a_full_queue_drops_without_blocking(tmp_path: Path) -> None:
    """The worker is held on a FIFO (opening it blocks until a writer comes), so the queue of
    one fills deterministically; the third submit is dropped and counted."""
    fake_proc = tmp_path / "proc"
    (fake_proc / "7").mkdir(parents=True)
    os.mkfifo(tmp_path / "fifo")
    (fake_proc / "7" / "exe").symlink_to(tmp_path / "fifo")
    stat = "7 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0 0 " + "0 " * 28
    (fake_proc / "7" / "stat").write_text(stat)
    hasher = ExeHasher(str(fake_proc), queue_size=1)
    key = ProcessKey(7, 5.55)
    try:
        assert hasher.submit(key, 555)
        while not hasher._jobs.empty():  # until the worker holds the first job
            threading.Event().wait(0.01)
        assert hasher.submit(key, 555)
        assert not hasher.submit(key, 555)
        assert hasher.dropped_total == 1
    finally:
        writer = os.open(tmp_path / "fifo", os.O_RDWR)  # a writer lets every open proceed
        try:
            assert hasher.flush(timeout=30)
        finally:
            os.close(writer)
            hasher.close()
    assert [h.reason for h in hasher.drain()] == ["not a regular file"] * 2
    assert not hasher.submit(key, 555)  # closed


def test_close_stops_the_worker() -> None:
    hasher = ExeHasher()
    hasher.close(timeout=5)
    assert not hasher._thread.is_alive()
