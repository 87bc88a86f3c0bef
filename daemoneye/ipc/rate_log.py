"""A warning logged at most once per interval: what a peer can make the daemon log is bounded."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class RateLimitedLog:
    """A warning logged at most once per interval, with the count of what was not logged."""

    what: str
    interval_s: float
    _last: float = 0.0
    _suppressed: int = field(default=0)

    def log(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        log.warning("%s: %s%s", self.what, message, extra)
        self._last = now
        self._suppressed = 0
