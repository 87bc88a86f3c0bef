"""Changes of a running process that the scan finds: what differs between two reads of one
instance, as change events (models.CHANGE_KINDS), and which instances to look at each tick.

A chdir() or the deletion of a running binary changes nothing in /proc/<pid>/stat that the
scanner could rely on (cpu times move in whole clock ticks, so a process may chdir and sleep
again without a visible change), so "only processes whose stat changed" would miss them. The
scan instead looks at every instance once per update interval, a slice per tick
(`ChangeSweep`): two readlinks each (cwd and exe), and a full read of the instance only when
one of them differs. The cost per tick is therefore bounded by processes * tick interval /
update interval readlinks, whatever the processes do.
"""

from __future__ import annotations

import math
import os
import stat as stat_mode
from collections.abc import Callable, Iterable

from daemoneye.collector.procfs import read_link
from daemoneye.models import ProcessEvent, ProcessRecord

# The record fields a change event is about, in the order events are emitted.
_TEXT_CHANGES = (("rename", "name"), ("uid", "uid"), ("gid", "gid"), ("cwd", "cwd"))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def change_events(
    old: ProcessRecord,
    new: ProcessRecord,
    now: float,
    *,
    exe_setid: Callable[[int], bool | None] = lambda bit: None,
    path_exists: Callable[[str], bool] = os.path.lexists,
) -> list[ProcessEvent]:
    """The change events that take `old` to `new`, two reads of the same instance without an
    exec between them. A value that could not be read (None) is not a change: a uid that
    became unreadable did not become anything. `exe_setid(bit)` says whether the executable
    carries S_ISUID / S_ISGID (asked only for an id change); `path_exists` tells a deleted
    executable from a replaced one."""
    events: list[ProcessEvent] = []
    for kind, name in _TEXT_CHANGES:
        before, after = getattr(old, name), getattr(new, name)
        if after is None or before == after:
            continue
        setid = None
        if kind == "uid":
            setid = exe_setid(stat_mode.S_ISUID)
        elif kind == "gid":
            setid = exe_setid(stat_mode.S_ISGID)
        events.append(_event(new, now, kind, _text(before), _text(after), setid))
    if new.exe_deleted and not old.exe_deleted and new.exe is not None:
        kind = "exe_replaced" if path_exists(new.exe) else "exe_deleted"
        events.append(_event(new, now, kind, new.exe, None, None))
    return events


def _event(
    rec: ProcessRecord,
    now: float,
    kind: str,
    old_value: str | None,
    new_value: str | None,
    exe_setid: bool | None,
) -> ProcessEvent:
    return ProcessEvent(
        ts=now,
        kind=kind,
        pid=rec.pid,
        start_time=rec.start_time,
        ppid=rec.ppid,
        exe=rec.exe,
        source="poll",
        old_value=old_value,
        new_value=new_value,
        exe_setid=exe_setid,
    )


class ChangeSweep:
    """Round robin over the live instances: each tick takes the share of them that makes one
    full round per update interval. A round is a list taken when the previous one is done;
    instances that ended meanwhile are skipped by the caller, new ones wait for the next."""

    def __init__(self) -> None:
        self._round: list[bytes] = []
        self.checked_total = 0  # instances looked at (two readlinks each)

    def take(
        self, names: Iterable[bytes], count: int, elapsed: float, interval: float
    ) -> list[bytes]:
        """The names to look at this tick: `count` live instances, `elapsed` seconds since the
        last tick, a round every `interval` seconds."""
        if elapsed <= 0.0:
            return []
        if not self._round:
            self._round = list(names)
        fraction = 1.0 if interval <= 0.0 else min(1.0, elapsed / interval)
        share = min(len(self._round), math.ceil(count * fraction))
        batch = self._round[len(self._round) - share :]
        del self._round[len(self._round) - share :]
        self.checked_total += len(batch)
        return batch


def links_differ(proc_root: bytes, name: bytes, rec: ProcessRecord) -> bool:
    """True when /proc/<name>/cwd or exe no longer say what `rec` says (a new working
    directory, an executable deleted since): the instance is then worth a full read. Links
    that cannot be read (gone, refused, a kernel thread) are no evidence of a change."""
    base = proc_root + b"/" + name
    if rec.cwd is not None:
        try:
            if read_link(base + b"/cwd") != rec.cwd:
                return True
        except OSError:
            return False
    if rec.exe is not None and not rec.exe_deleted:
        try:
            return os.readlink(base + b"/exe").endswith(b" (deleted)")
        except OSError:
            return False
    return False
