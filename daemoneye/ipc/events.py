"""What a `DaemonClient` yields from `events()`: connection transitions and the daemon's
notifications, decoded; and `apply_delta` to fold process deltas into a table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from daemoneye.models import (
    Alert,
    DaemonStatus,
    Hello,
    ProcessesDelta,
    ProcessKey,
    ProcessRecord,
    RuleStatus,
)


@dataclass(frozen=True, slots=True)
class Connected:
    """The connection is up (the first time, or again after a reconnect)."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection is gone; `retry_in` says when the next attempt is (None: no retry)."""

    reason: str
    retry_in: float | None


@dataclass(frozen=True, slots=True)
class Resync:
    """Notifications of `topic` were dropped: throw away what you derived from them. For
    `processes` a fresh snapshot follows; for `alerts` call alerts_list again."""

    topic: str
    reason: str
    dropped: int


@dataclass(frozen=True, slots=True)
class ProcessesSnapshot:
    """Every live process at `seq`: replaces whatever the receiver held."""

    seq: int
    processes: tuple[ProcessRecord, ...]


@dataclass(frozen=True, slots=True)
class RulesChanged:
    """The whole rule set, after a reload, an enable or a disable."""

    rules: tuple[RuleStatus, ...]


Event = (
    Connected
    | Disconnected
    | Resync
    | ProcessesSnapshot
    | ProcessesDelta
    | Alert
    | RulesChanged
    | DaemonStatus
)

CONNECTION_EVENTS = (Connected, Disconnected)


def apply_delta(table: dict[ProcessKey, ProcessRecord], delta: ProcessesDelta) -> None:
    """Fold one delta into a table keyed by process instance: `added` inserts or replaces
    (an exec'd instance arrives whole), `changed` updates fields, `removed` deletes."""
    for key in delta.removed:
        table.pop(key, None)
    for record in delta.added:
        table[record.key] = record
    for change in delta.changed:
        key = ProcessKey(change.pid, change.start_time)
        current = table.get(key)
        if current is not None:
            changed: dict[str, Any] = dict(change.fields)
            table[key] = dataclasses.replace(current, **changed)
