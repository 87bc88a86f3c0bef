"""Who gets a connection slot (issue 19, "locking out"): a reader must never be able to take
the slots root needs to reach the admin methods.

- `max_clients` connections at most; the last `admin_reserved` of them only for admins, so
  readers can hold `max_clients - admin_reserved` at most;
- readers hold at most `max_clients_per_uid` connections per uid (admins are exempt);
- a connection that neither sends a request nor reads a live subscription for `idle_timeout_s`
  is closed (see `Connection`), so slots held by idle clients come free on their own.

`refusal` is a pure function of the counts, so the policy is tested without sockets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SlotLimits:
    max_clients: int = 128
    admin_reserved: int = 8  # of max_clients, kept for admins
    max_clients_per_uid: int = 32  # readers only; 0 = no per-uid cap


def refusal(limits: SlotLimits, *, total: int, of_uid: int, admin: bool, uid: int) -> str | None:
    """Why one more connection (of `uid`, `admin` or not) is refused, or None to admit it;
    `total` and `of_uid` count the connections open now."""
    if total >= limits.max_clients:
        return (
            f"too many connections: this daemon serves at most {limits.max_clients} clients "
            "at once (daemon.max_clients); close another client and try again"
        )
    if admin:
        return None
    reader_slots = max(limits.max_clients - limits.admin_reserved, 0)
    if total >= reader_slots:
        return (
            f"too many connections: {reader_slots} of the {limits.max_clients} slots are open "
            f"to readers and the other {limits.admin_reserved} are kept for admins "
            "(daemon.max_clients, daemon.admin_reserved_clients); try again later"
        )
    if limits.max_clients_per_uid and of_uid >= limits.max_clients_per_uid:
        return (
            f"too many connections from uid {uid}: at most {limits.max_clients_per_uid} "
            "per user (daemon.max_clients_per_uid); close one of yours and try again"
        )
    return None


@dataclass
class SlotCounts:
    """Open connections in all and per uid."""

    total: int = 0
    by_uid: Counter[int] = field(default_factory=Counter)

    def add(self, uid: int) -> None:
        self.total += 1
        self.by_uid[uid] += 1

    def remove(self, uid: int) -> None:
        self.total -= 1
        self.by_uid[uid] -= 1
        if self.by_uid[uid] <= 0:
            del self.by_uid[uid]
