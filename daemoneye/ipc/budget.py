"""What waits to be written to all clients together (issue 19, "memory").

Each connection keeps its notifications in a queue of shared line objects (one encoding for all
subscribers) and hands the socket only what fits under the write high-water mark. The
`QueueBudget` counts the bytes queued by every connection; when the total passes its limit the
server drops the largest queues to a `resync` first. Released memory is handed back to the
operating system (`malloc_trim`) once enough of it has been freed, so the daemon shrinks again
after a crowd of slow clients has left.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_AFTER_BYTES = 16 * 1024 * 1024


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    return trim


class QueueBudget:
    """Bytes queued across connections, and the memory given back after large releases."""

    def __init__(
        self,
        limit: int,
        *,
        trim_after: int = TRIM_AFTER_BYTES,
        trim: Callable[[int], int] | None = None,
    ) -> None:
        self.limit = limit
        self.total = 0
        self.trims = 0
        self._trim_after = trim_after
        self._trim = trim if trim is not None else _load_malloc_trim()
        self._released = 0

    @property
    def exceeded(self) -> bool:
        return self.total > self.limit

    def add(self, size: int) -> None:
        self.total += size

    def release(self, size: int, *, freed: bool = False) -> None:
        """`size` bytes left the queues; `freed` when they were dropped, not written (so the
        memory behind them is really free, e.g. a client left)."""
        self.total -= size
        if freed:
            self.freed(size)

    def freed(self, size: int) -> None:
        """Memory of this size was let go; trim the heap once enough has been."""
        self._released += size
        if self._released >= self._trim_after and self._trim is not None:
            self._released = 0
            self.trims += 1
            self._trim(0)
