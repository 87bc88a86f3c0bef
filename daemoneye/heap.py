"""Settling the heap after a burst: a full scan builds every live process's record at once,
with the frames, JSON and lists around them that are garbage a moment later.

`settle()` runs once after such a burst: a full collection, then `gc.freeze()` (the records
that stay alive — most of the heap — leave the collector's generations, so its later passes
walk only what is new; records hold no reference cycles and are still freed by reference
counting when their process ends), then glibc's `malloc_trim(0)`, which hands the freed
pages back to the kernel instead of keeping them mapped in the process's RSS.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
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


def settle() -> None:
    """Collect, freeze what survived, and return freed memory to the kernel."""
    gc.collect()
    gc.freeze()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
