"""Settling the heap after a full scan: freed memory goes back to the kernel, and what stays
alive leaves the garbage collector's generations."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from daemoneye import heap


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(heap._MALLOC_TRIM is None, reason="not glibc: no malloc_trim")
def test_freed_memory_goes_back_to_the_kernel() -> None:
    """A burst of records' worth of malloc'd text (strings over pymalloc's 512 bytes), most of
    it freed while a few pieces stay alive between the holes, as after a full scan: glibc
    keeps those pages until malloc_trim hands them back."""
    burst = [os.urandom(1500) for _ in range(40_000)]  # ~60 MiB
    survivors = burst[::200]
    del burst
    before = rss_bytes()
    heap.settle()
    after = rss_bytes()
    assert before - after > 20 * 2**20, (before, after)
    assert len(survivors) == 200


def test_what_survives_the_burst_is_frozen() -> None:
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


_ARENAS_AFTER_THREADS = """
import ctypes, os, sys, threading
from daemoneye import heap
if sys.argv[1] == "limit":
    assert heap.limit_arenas(2)
held = []
ready = threading.Barrier(5)  # all five alive at once: none reuses a finished one's arena
def work():
    held.append(bytearray(4096))  # over pymalloc's 512 bytes: glibc's malloc, in this thread
    ready.wait()
threads = [threading.Thread(target=work) for _ in range(5)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas_after_five_threads(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    result = subprocess.run(
        [sys.executable, "-c", _ARENAS_AFTER_THREADS, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    return sum(1 for line in result.stderr.splitlines() if line.startswith("Arena "))


@pytest.mark.skipif(heap._MALLOC_TRIM is None, reason="not glibc: no mallopt arenas")
def test_threads_share_two_malloc_arenas_once_limited() -> None:
    """Five threads that malloc at once get arenas of their own (glibc's default), unless
    limit_arenas() ran first: then all of them share two."""
    assert _arenas_after_five_threads("default") > 2
    assert _arenas_after_five_threads("limit") == 2


def test_the_environment_keeps_its_own_arena_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert heap.limit_arenas() is False
