"""Settling the heap after a burst: a full scan builds every live process's record at once,
with the frames, JSON and lists around them that are garbage a moment later.

`settle()` runs once after such a burst: a full collection, then `gc.freeze()` (the records
that stay alive — most of the heap — leave the collector's generations, so its later passes
walk only what is new; records hold no reference cycles and are still freed by reference
counting when their process ends), then glibc's `malloc_trim(0)`, which hands the freed
pages back to the kernel instead of keeping them mapped in the process's RSS.

`burst()` wraps such a burst: the cyclic collector is paused while it runs (its passes over
the tens of thousands of records being built find nothing to free: 6 % of a first scan's CPU
at 10,000 processes), and the heap is settled after it.

`limit_arenas()` runs first thing in both processes, before any thread: glibc gives each new
thread that mallocs its own arena (up to 8 per core), and memory freed in one is neither
reused by the others nor trimmed as readily. Two arenas keep SQLite (which mallocs without the
GIL in the agent's threads) from contending with Python on one lock.
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return cast("Callable[[int], int]", trim)


_MALLOC_TRIM = _libc_malloc_trim()
_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENA_MAX = 2


def limit_arenas(arenas: int = ARENA_MAX) -> bool:
    """Cap glibc's malloc arenas at `arenas` unless the environment already sets the cap
    (MALLOC_ARENA_MAX, or a GLIBC_TUNABLES arena_max). Call before starting any thread.
    False where there is no glibc mallopt or the environment decides."""
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def settle() -> None:
    """Collect, freeze what survived, and return freed memory to the kernel."""
    gc.collect()
    gc.freeze()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@contextmanager
def burst() -> Iterator[None]:
    """The cyclic collector paused for a burst that builds long-lived objects (a first scan),
    then `settle()`. Collection resumes as it was even when the burst raises."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
    settle()
