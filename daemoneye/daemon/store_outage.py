"""A store that cannot be written (disk full, failing device): how long, how often, and what the
daemon's log says about it — the first failure, then a summary at most every
`SUMMARY_EVERY_S`, then one line when writes succeed again. Hundreds of failed ticks make three
or four log lines, not hundreds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from daemoneye.text import shorten

log = logging.getLogger(__name__)

SUMMARY_EVERY_S = 30.0
_MAX_ERROR_CHARS = 300


class StoreOutage:
    """Counts the store's failed writes between two successful ones (writer thread only)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        summary_every_s: float = SUMMARY_EVERY_S,
    ) -> None:
        self._clock = clock
        self.summary_every_s = summary_every_s
        self.since: float | None = None  # clock time of the first failure; None: writable
        self.failures = 0
        self.last_error = ""
        self._summarised_at = 0.0

    @property
    def active(self) -> bool:
        return self.since is not None

    def duration(self) -> float:
        return 0.0 if self.since is None else max(0.0, self._clock() - self.since)

    def failed(self, error: str, held: Callable[[], str]) -> None:
        """A write failed with `error`; `held` says what the daemon keeps meanwhile."""
        now = self._clock()
        self.last_error = shorten(error, _MAX_ERROR_CHARS)
        self.failures += 1
        if self.since is None:
            self.since = self._summarised_at = now
            log.error(
                "the store cannot be written: %s; collection goes on, new alerts go to "
                "the sinks and are held in memory until it can (summary every %.0fs)",
                self.last_error,
                self.summary_every_s,
            )
        elif now - self._summarised_at >= self.summary_every_s:
            self._summarised_at = now
            log.warning(
                "the store still cannot be written after %.0fs: %d writes failed, %s; "
                "last error: %s",
                now - self.since,
                self.failures,
                held(),
                self.last_error,
            )

    def succeeded(self) -> float | None:
        """A write succeeded: how long the store was unwritable (None: it was not)."""
        if self.since is None:
            return None
        lasted = max(0.0, self._clock() - self.since)
        self.since = None
        self.failures = 0
        return lasted
