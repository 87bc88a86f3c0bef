"""Settling the heap after a full scan: freed memory goes back to the kernel, and what stays
alive leaves the garbage collector's generations."""

from __future__ import annotations

import gc
import os

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
