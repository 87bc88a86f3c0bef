"""Slowing down a reader that keeps sending what the daemon must refuse (issue 19, flooding).

Every malformed line and every refused admin call costs the event loop its parse before it can
be refused: 16 connections sending 100,000 `[` or 900 KiB admin calls in a loop kept the
loop busy enough to delay everyone else's answers by tens of milliseconds. Such refusals are
strikes against the sender's uid: a token bucket per uid lets `burst` through, then one per
1/`rate` seconds; each strike past that pushes the uid's next allowed read further out, and the
connection that struck stops reading until then. Reading stops in the kernel (the client's
writes block), so nothing more of it is parsed. A well-behaved client never strikes; admins
are never slowed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_DEBT_S = 60.0  # how far into the future one uid's strikes can push its next read


@dataclass
class _Debt:
    tokens: float
    refilled_at: float
    next_read: float = 0.0  # when the uid's connections may read again after running dry


class StrikeBudget:
    """Strikes per uid. `strike` returns how long the striking connection must stop reading
    (0 while the uid has tokens). `clock` is injectable so tests need no sleeps."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = max(rate, 1e-3)
        self.burst = max(burst, 1)
        self._clock = clock
        self._debts: dict[int, _Debt] = {}

    def strike(self, uid: int) -> float:
        now = self._clock()
        debt = self._debts.get(uid)
        if debt is None:
            debt = self._debts[uid] = _Debt(float(self.burst), now)
        else:
            debt.tokens = min(float(self.burst), debt.tokens + (now - debt.refilled_at) * self.rate)
            debt.refilled_at = now
        if debt.tokens >= 1.0 and debt.next_read <= now:
            debt.tokens -= 1.0
            return 0.0
        # The debt is capped: one script's storm must not stall the same user's dashboard for
        # hours after it stopped.
        debt.next_read = min(max(debt.next_read, now) + 1.0 / self.rate, now + MAX_DEBT_S)
        self._prune(now)
        return debt.next_read - now

    def _prune(self, now: float) -> None:
        """Forget uids whose bucket is full again and owe nothing (bounded memory)."""
        rested = [
            uid
            for uid, d in self._debts.items()
            if d.next_read <= now and d.tokens + (now - d.refilled_at) * self.rate >= self.burst
        ]
        for uid in rested:
            del self._debts[uid]

    def __len__(self) -> int:
        return len(self._debts)
