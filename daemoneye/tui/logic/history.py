"""Recent CPU and RSS samples per process instance, for the detail pane's sparklines.

Kept for every live process so the sparkline has a past the moment a row is selected, yet cheap
at 10,000 processes: a sample is written only when the record object changed (an unchanged
process is filled forward when read), into fixed float32 rings.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping

from daemoneye.models import ProcessRecord

HISTORY_LENGTH = 60


class _Series:
    """Two rings of `length` samples, indexed by tick modulo length."""

    __slots__ = ("cpu", "first_tick", "last_record", "last_tick", "rss")

    def __init__(self, length: int, tick: int, record: ProcessRecord) -> None:
        self.cpu = array("f", bytes(4 * length))
        self.rss = array("f", bytes(4 * length))
        self.first_tick = tick
        self.last_tick = tick - 1
        self.last_record = record
        self.push(tick, record)

    def push(self, tick: int, record: ProcessRecord) -> None:
        length = len(self.cpu)
        self._fill(tick - 1)
        self.cpu[tick % length] = record.cpu_percent
        self.rss[tick % length] = float(record.rss)
        self.last_tick = tick
        self.last_record = record

    def _fill(self, until: int) -> None:
        """Repeat the last sample up to tick `until` (at most one ring's worth)."""
        length = len(self.cpu)
        start = max(self.last_tick + 1, until - length + 1)
        cpu, rss = self.last_record.cpu_percent, float(self.last_record.rss)
        for tick in range(start, until + 1):
            self.cpu[tick % length] = cpu
            self.rss[tick % length] = rss

    def read(self, tick: int) -> tuple[list[float], list[float]]:
        self._fill(tick)
        self.last_tick = max(self.last_tick, tick)
        length = len(self.cpu)
        first = max(self.first_tick, tick - length + 1)
        ticks = range(first, tick + 1)
        return [self.cpu[t % length] for t in ticks], [self.rss[t % length] for t in ticks]


class SampleHistory:
    """CPU % and RSS of every live instance over the last `length` process-set updates."""

    def __init__(self, length: int = HISTORY_LENGTH) -> None:
        self._length = length
        self._tick = 0
        self._series: dict[str, _Series] = {}

    def __len__(self) -> int:
        return len(self._series)

    def record(
        self, records: Mapping[str, ProcessRecord], changed: Iterable[str] | None = None
    ) -> None:
        """One update: sample every record that changed; forget instances that are gone.
        `changed`, when the caller knows it, names every key that may differ from the last
        update (see `ProcessSet.changed_since`), so only those are looked at."""
        self._tick += 1
        tick, series_by_key, length = self._tick, self._series, self._length
        if changed is None:
            items: Iterable[tuple[str, ProcessRecord | None]] = records.items()
        else:
            items = ((key, records.get(key)) for key in changed)
        for key, record in items:
            series = series_by_key.get(key)
            if record is None:
                series_by_key.pop(key, None)
            elif series is None:
                series_by_key[key] = _Series(length, tick, record)
            elif series.last_record is not record:
                series.push(tick, record)
        if changed is None and len(series_by_key) > len(records):
            for key in [key for key in series_by_key if key not in records]:
                del series_by_key[key]

    def samples(self, key: str) -> tuple[list[float], list[float]]:
        """(cpu %, rss bytes) oldest first; empty lists for an unknown instance."""
        series = self._series.get(key)
        if series is None:
            return [], []
        return series.read(self._tick)
