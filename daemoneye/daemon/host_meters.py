"""The host's meters for `health` and the dashboard's header (models.HostMeters), read with
psutil. CPU use per core is the share of non-idle time between two samples, computed here
from psutil's cumulative per-core times (not `psutil.cpu_percent`, whose module-global state
another caller would disturb). The sampler samples once when made, so that its first answer
has an interval to measure over."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from daemoneye.models import HostMeters

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.5  # samples closer than this return the previous one


def busy_percent(before: Sequence[Any], after: Sequence[Any]) -> tuple[float, ...]:
    """Per core, the percentage of time not idle (idle + iowait) between two per-core
    `cpu_times` samples; a core without elapsed time (or one that appeared) reads 0."""
    shares: list[float] = []
    for index, now in enumerate(after):
        if index >= len(before):
            shares.append(0.0)
            continue
        then = before[index]
        total = sum(now) - sum(then)
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (then.idle + getattr(then, "iowait", 0.0))
        shares.append(
            0.0 if total <= 0 else round(max(0.0, min(100.0, 100.0 * (total - idle) / total)), 1)
        )
    return tuple(shares)


class HostSampler:
    """Samples the host at most every MIN_INTERVAL_S; `sample()` is cheap between."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._times: Sequence[Any] | None = None
        self._last: HostMeters | None = None
        self._failed = False
        self.sample()  # the first answer then has an interval to measure CPU use over

    def sample(self) -> HostMeters | None:
        now = self._clock()
        if self._last is not None and now - self._last.sampled_at < MIN_INTERVAL_S:
            return self._last
        try:
            times = psutil.cpu_times(percpu=True)
            memory = psutil.virtual_memory()
            swap = psutil.swap_memory()
            load = os.getloadavg()
            boot = psutil.boot_time()
        except (OSError, RuntimeError) as exc:
            if not self._failed:
                log.warning("cannot read the host's meters: %s", exc)
                self._failed = True
            return None
        cpu = busy_percent(self._times, times) if self._times is not None else (0.0,) * len(times)
        self._times = times
        self._last = HostMeters(
            cpu_percent=cpu,
            memory_total=int(memory.total),
            memory_used=int(memory.total - memory.available),
            swap_total=int(swap.total),
            swap_used=int(swap.used),
            load=(float(load[0]), float(load[1]), float(load[2])),
            boot_time=float(boot),
            sampled_at=now,
        )
        return self._last
