"""How many refused admin calls of one peer are audited (issue 19, "flooding"): a reader that
calls admin methods in a loop gets its "forbidden" answer every time, but the audit log takes
at most `rate` entries per second per uid (bursts of `burst`); the rest are counted and become
one summary entry per window ("N refused calls from uid U suppressed")."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    refilled_at: float
    suppressed: int = 0


class RefusalBudget:
    """A token bucket per uid. `clock` is injectable so tests need no sleeps."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}

    def allow(self, uid: int) -> bool:
        """True when this refused call is audited; False when it is only counted."""
        now = self._clock()
        bucket = self._buckets.get(uid)
        if bucket is None:
            bucket = self._buckets[uid] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(
                float(self.burst), bucket.tokens + (now - bucket.refilled_at) * self.rate
            )
            bucket.refilled_at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        bucket.suppressed += 1
        return False

    def take_suppressed(self, uid: int) -> int:
        """How many calls of `uid` were counted and not audited since the last take; a bucket
        with nothing pending is forgotten once it is full again (bounded memory)."""
        bucket = self._buckets.get(uid)
        count = 0
        if bucket is not None:
            count, bucket.suppressed = bucket.suppressed, 0
        self._prune(self._clock())
        return count

    def _prune(self, now: float) -> None:
        full = [
            uid
            for uid, b in self._buckets.items()
            if not b.suppressed and b.tokens + (now - b.refilled_at) * self.rate >= self.burst
        ]
        for uid in full:
            del self._buckets[uid]

    def __len__(self) -> int:
        return len(self._buckets)
