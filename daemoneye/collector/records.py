"""Building ProcessRecords from what the scanner read: plain functions, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from operator import attrgetter, itemgetter
from typing import Any

from daemoneye.collector.procfs import StatFields
from daemoneye.collector.shared_text import SHARED
from daemoneye.models import (
    PROCESS_FIELDS,
    ProcessDetails,
    ProcessEvent,
    ProcessKey,
    ProcessRecord,
    field_names,
)
from daemoneye.positional import constructor

_COMM_MAX = 15  # TASK_COMM_LEN - 1: longer names are cut by the kernel


def display_name(comm: str, exe: str | None, cmdline: tuple[str, ...]) -> str:
    """The process name: the kernel's comm, lengthened when the kernel cut it at 15 characters
    and the executable's (or argv[0]'s) base name continues it, so that a rule on
    name = 'systemd-journald' works. Only an extension of comm is taken, never a different
    name, so argv[0] cannot make a process look like something else."""
    if len(comm) < _COMM_MAX:
        return comm
    candidates = [exe] if exe else []
    if cmdline:
        candidates.append(cmdline[0])
    for candidate in candidates:
        base = candidate.rsplit("/", 1)[-1]
        if len(base) > len(comm) and base.startswith(comm):
            return base
    return comm


def cpu_since_start(cpu_ticks: int, start_time: float, now: float, ticks_per_s: float) -> float:
    """CPU % of one core over the instance's life, the only interval a first sighting has: for a
    process started since the last scan it is exactly the last interval."""
    lifetime = max(now - start_time, 1.0 / ticks_per_s)
    # `or 0.0`: an idle process's record holds the one constant 0.0, not a float of its own
    return round(cpu_ticks / ticks_per_s / lifetime * 100.0, 1) or 0.0


# How a record is filled from what the collector reads, planned once from the description
# (models.py): a field of ProcessDetails (collector/details.py) or StatFields (procfs.py) with
# the record field's name fills it, `rss` comes from `rss_bytes`, and the rest is computed here
# (see `_COMPUTED`) or keeps its default. A required field nobody fills fails at import.
_RECORD_NAMES = tuple(f.name for f in PROCESS_FIELDS)
# Records are made from their values in order, past the frozen __init__ (positional.py).
_MAKE_RECORD = constructor(ProcessRecord)
_STAT_RENAMES = {"rss": "rss_bytes"}
_FROM_STAT = {
    name: _STAT_RENAMES.get(name, name)
    for name in _RECORD_NAMES
    if _STAT_RENAMES.get(name, name) in StatFields._fields
}
_FROM_DETAILS = tuple(
    name for name in _RECORD_NAMES if name in {f.name for f in fields(ProcessDetails)}
)
_COMPUTED = ("start_time", "name", "cpu_percent", "first_seen", "last_seen", "exe_sha256")
_DEFAULTS = {f.name: f.default for f in fields(ProcessRecord) if f.default is not MISSING}


def _order(sources: Sequence[str], pick: Callable[[str], str | None]) -> itemgetter[Any]:
    """An itemgetter that takes the record's fields in order out of the concatenation of
    `sources`; `pick(field)` names the source entry that fills a field."""
    position = {source: index for index, source in enumerate(sources)}
    unfilled = [name for name in _RECORD_NAMES if pick(name) not in position]
    if unfilled:
        raise TypeError(f"collector/records.py fills no value for ProcessRecord fields {unfilled}")
    return itemgetter(*(position[str(pick(name))] for name in _RECORD_NAMES))


def _new_source(name: str) -> str | None:
    if name in _FROM_DETAILS:
        return f"details.{name}"
    if name in _FROM_STAT:
        return f"stat.{_FROM_STAT[name]}"
    if name in _COMPUTED:
        return name
    return f"default.{name}" if name in _DEFAULTS else None


_DETAIL_VALUES = attrgetter(*_FROM_DETAILS)


def details_values(details: ProcessDetails) -> dict[str, Any]:
    """The record fields that the details reader fills, by name (for keyword construction)."""
    return dict(zip(_FROM_DETAILS, _DETAIL_VALUES(details), strict=True))


_STAT_VALUES = attrgetter(*_FROM_STAT.values())
_DEFAULT_VALUES = tuple(_DEFAULTS.values())
_NEW_ORDER = _order(
    [
        *(f"stat.{attr}" for attr in _FROM_STAT.values()),
        *(f"details.{name}" for name in _FROM_DETAILS),
        *_COMPUTED,
        *(f"default.{name}" for name in _DEFAULTS),
    ],
    _new_source,
)


def new_record(
    stat: StatFields,
    details: ProcessDetails,
    *,
    start_time: float,
    cpu_percent: float,
    first_seen: float,
    now: float,
    exe_sha256: str | None,
) -> ProcessRecord:
    """A record for an instance read in full. Positional, through one itemgetter: keyword calls
    of a 38-field dataclass cost more, per new process."""
    name = SHARED.one(display_name(stat.comm, details.exe, details.cmdline))
    return _MAKE_RECORD(
        _NEW_ORDER(
            (
                *_STAT_VALUES(stat),
                *_DETAIL_VALUES(details),
                start_time,
                name,
                cpu_percent,
                first_seen,
                now,
                exe_sha256,
                *_DEFAULT_VALUES,
            )
        )
    )


# exec_record: what the event source read at an exec, before any scan has met the instance.
_EXEC_SET = (
    "pid",
    "ppid",
    "start_time",
    "name",
    "user",
    "state",
    "threads",
    "rss",
    "cpu_percent",
    "exe_sha256",
    "first_seen",
    "last_seen",
)
_EXEC_ORDER = _order(
    [
        *(f"details.{name}" for name in _FROM_DETAILS),
        *_EXEC_SET,
        *(f"default.{name}" for name in _DEFAULTS),
    ],
    lambda name: (
        name
        if name in _EXEC_SET
        else f"details.{name}"
        if name in _FROM_DETAILS
        else f"default.{name}"
        if name in _DEFAULTS
        else None
    ),
)


def exec_record(
    key: ProcessKey,
    ppid: int,
    details: ProcessDetails,
    *,
    name: str,
    user: str | None,
    seen: float,
) -> ProcessRecord:
    """A record for an instance first met at its exec (no stat sample yet: running, one
    thread, no memory counted), first and last seen at the exec. `user` replaces the
    details' (the event source leaves names to the caller). Positional, like `new_record`:
    procmond builds one per exec of the host."""
    return _MAKE_RECORD(
        _EXEC_ORDER(
            (
                *_DETAIL_VALUES(details),
                key.pid,
                ppid,
                key.start_time,
                name,
                user,
                "R",
                1,
                0,
                0.0,
                None,
                seen,
                seen,
                *_DEFAULT_VALUES,
            )
        )
    )


# with_dynamic: the stat's dynamic fields (not the identity) replace the record's.
_TICK_FROM_STAT = {
    name: attr for name, attr in _FROM_STAT.items() if name not in field_names("identity")
}
_TICK_STAT_VALUES = attrgetter(*_TICK_FROM_STAT.values())
_RECORD_VALUES = attrgetter(*_RECORD_NAMES)
_TICK_ORDER = _order(
    [
        *(f"record.{name}" for name in _RECORD_NAMES),
        *(f"stat.{name}" for name in _TICK_FROM_STAT),
        "name",
        "cpu_percent",
        "last_seen",
    ],
    lambda name: (
        f"stat.{name}"
        if name in _TICK_FROM_STAT
        else name
        if name in ("name", "cpu_percent", "last_seen")
        else f"record.{name}"
    ),
)


def with_dynamic(
    record: ProcessRecord, stat: StatFields, name: str, cpu_percent: float, now: float
) -> ProcessRecord:
    """`record` with this tick's stat values; made positionally, several times faster than
    dataclasses.replace on a 38-field slotted dataclass, and this runs for every busy process."""
    return _MAKE_RECORD(
        _TICK_ORDER((*_RECORD_VALUES(record), *_TICK_STAT_VALUES(stat), name, cpu_percent, now))
    )


# What changes during a process's life without an exec (models.py's dynamic group): an
# `updated` record differs from the last emitted one in one of these, and the store's dynamic
# update writes exactly these (store/db.py), so a change counted here reaches the rules.
DYNAMIC_FIELDS = field_names("dynamic")
dynamic_fields: Callable[[ProcessRecord], tuple[object, ...]] = attrgetter(*DYNAMIC_FIELDS)


def start_event(record: ProcessRecord, now: float, *, kind: str, partial: bool) -> ProcessEvent:
    """A 'start' (first sighting) or 'exec' event for `record`."""
    return ProcessEvent(
        now,
        kind,
        record.pid,
        record.start_time,
        record.ppid,
        record.exe,
        record.cmdline,
        None,  # exit_code
        "poll",
        partial,
    )


def exit_event(key: ProcessKey, record: ProcessRecord | None, now: float) -> ProcessEvent:
    """An 'exit' seen by the poller: the exit code is unknowable (the parent reaped it)."""
    return ProcessEvent(
        ts=now,
        kind="exit",
        pid=key.pid,
        start_time=key.start_time,
        ppid=record.ppid if record is not None else None,
        exe=record.exe if record is not None else None,
        source="poll",
    )
