"""When the dashboard's garbage collector may run.

At 10,000 processes a delta replaces about a thousand records and their cells every second,
and CPython's collector then walks tens of thousands of young objects, some of them 10,000-entry
containers, at moments it chooses: a collection took 20-80 ms, often right in front of a key.
So the dashboard chooses the moments instead. As soon as a process set has been applied,
everything alive is frozen (`gc.freeze`: kept out of collections, and freed by reference
counting as usual), and the automatic threshold is set above what one refresh at 10 % churn
allocates, so an automatic collection runs only when far more than that piles up between two
sets. Frozen objects caught in a reference cycle (Textual's strips reference themselves through
their caches) are not freed that way, so every `full_every_s` the frozen heap is released and
collected in full, at a moment with no key or click in the last `idle_s` seconds (or, if the
user never pauses, after twice the period). A full collection takes 80-90 ms at 10,000
processes; the period bounds what the frozen garbage adds to the RSS (Textual's strips of
30-60 refreshes, 15-30 MiB).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

THRESHOLDS = (20_000, 20, 100)  # objects allocated between two freezes before one runs
FULL_EVERY_S = 30.0
IDLE_S = 1.0


@dataclass(frozen=True, slots=True)
class Collector:
    """The parts of the `gc` module the policy drives (a fake in tests)."""

    freeze: Callable[[], None] = gc.freeze
    unfreeze: Callable[[], None] = gc.unfreeze
    collect: Callable[[], int] = gc.collect
    get_threshold: Callable[[], tuple[int, int, int]] = gc.get_threshold
    set_threshold: Callable[[int, int, int], None] = gc.set_threshold


class CollectionPolicy:
    """Freezes the heap after each refresh; collects it in full now and then, when idle."""

    def __init__(
        self,
        *,
        collector: Collector | None = None,
        clock: Callable[[], float] = time.monotonic,
        full_every_s: float = FULL_EVERY_S,
        idle_s: float = IDLE_S,
    ) -> None:
        self._gc = collector or Collector()
        self._clock = clock
        self.full_every_s = full_every_s
        self.idle_s = idle_s
        self._saved_thresholds: tuple[int, int, int] | None = None
        self._last_full = clock()
        self._last_input = float("-inf")
        self.full_collections = 0

    def start(self) -> None:
        if self._saved_thresholds is None:
            self._saved_thresholds = self._gc.get_threshold()
            self._gc.set_threshold(*THRESHOLDS)
        self._last_full = self._clock()

    def stop(self) -> None:
        """Give the process its collector back as it was (tests run many apps in one)."""
        self._gc.unfreeze()
        if self._saved_thresholds is not None:
            self._gc.set_threshold(*self._saved_thresholds)
            self._saved_thresholds = None

    def input_seen(self) -> None:
        """A key or a click: the user is waiting for the screen now."""
        self._last_input = self._clock()

    def set_applied(self) -> None:
        """A process set has been applied: freeze what is alive, or collect in full if due."""
        now = self._clock()
        since_full = now - self._last_full
        idle = now - self._last_input >= self.idle_s
        if since_full >= 2 * self.full_every_s or (since_full >= self.full_every_s and idle):
            self._collect_all(now)
        self._gc.freeze()

    def _collect_all(self, now: float) -> None:
        started = self._clock()
        self._gc.unfreeze()
        found = self._gc.collect()
        self._last_full = now
        self.full_collections += 1
        log.debug(
            "full collection: %d unreachable objects in %.0f ms",
            found,
            (self._clock() - started) * 1000,
        )
