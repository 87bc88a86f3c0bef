"""uid → user name, cached: the scanner asks once per new process instance, and a passwd lookup
may go through NSS (LDAP, sssd), which is far too slow to repeat."""

from __future__ import annotations

import pwd
import time
from collections.abc import Callable


class UserNames:
    """A cached `pwd.getpwuid`. A uid without a passwd entry maps to None, not to str(uid): the
    store's `user` column is then NULL and a rule can tell "no such user" (typical of container
    processes and of accounts deleted while their processes run) from a user literally named
    "1001". Misses are remembered for `miss_ttl` seconds only, so a user created after the daemon
    started gets a name; hits are kept for `hit_ttl` seconds so renames are eventually seen."""

    def __init__(
        self,
        *,
        hit_ttl: float = 3600.0,
        miss_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        lookup: Callable[[int], str] = lambda uid: pwd.getpwuid(uid).pw_name,
    ) -> None:
        self._hit_ttl = hit_ttl
        self._miss_ttl = miss_ttl
        self._clock = clock
        self._lookup = lookup
        self._names: dict[int, tuple[str | None, float]] = {}

    def __call__(self, uid: int) -> str | None:
        """The login name of `uid`, or None when the system has no such user."""
        cached = self._names.get(uid)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        name: str | None
        try:
            name = self._lookup(uid)
        except (KeyError, OverflowError):
            name = None
        ttl = self._hit_ttl if name is not None else self._miss_ttl
        self._names[uid] = (name, now + ttl)
        return name
