"""What the attack benchmark measures while an attack runs: the probe.

Five loops on one asyncio loop, every sample tagged with the phase that was current when it was
taken (a marker and a `hello` with the phase they were started in):

- `hello` round trips on a connection opened before the attacks, one every ~100 ms, one at a
  time (a stalled answer is a long sample, not a skipped one; past `HELLO_TIMEOUT_S` it counts
  as that long and as a timeout);
- a new connection (connect + `hello`, as root) every second: refused or timed out counts;
- a marker process every 2 s (`/bin/sleep` whose argv[0] is the run's token), and the time
  from its spawn to its alert arriving on an `alerts` subscription;
- the daemon's RSS (VmRSS of the daemon and its descendants) every ~100 ms;
- the store's size (db + WAL bytes) every ~100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procstat import children, rss_bytes
from benchmarks.spawn import SLEEP, ProcessGroup

PROBE_PERIOD_S = 0.1
CONNECT_PERIOD_S = 1.0
MARKER_PERIOD_S = 2.0
MARKER_LIFETIME_S = 3
HELLO_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
_DESCENDANTS_PERIOD_S = 2.0


@dataclass
class Marker:
    """One harmless "attack": spawned at `spawned_at` (monotonic), alerted at `alerted_at`."""

    pid: int
    spawned_at: float
    alerted_at: float | None = None

    @property
    def latency_s(self) -> float | None:
        return None if self.alerted_at is None else self.alerted_at - self.spawned_at


@dataclass
class PhaseSamples:
    """Everything measured during one phase."""

    name: str
    started_at: float = 0.0
    ended_at: float = 0.0
    hello_ms: list[float] = field(default_factory=list)
    hello_timeouts: int = 0
    connect_ms: list[float] = field(default_factory=list)
    connect_failures: Counter[str] = field(default_factory=Counter)
    markers: list[Marker] = field(default_factory=list)
    rss_bytes: list[int] = field(default_factory=list)
    store_bytes: list[int] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return max(1e-9, self.ended_at - self.started_at)

    def raw(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 2),
            "hello_ms": self.hello_ms,
            "hello_timeouts": self.hello_timeouts,
            "connect_ms": self.connect_ms,
            "connect_failures": dict(self.connect_failures),
            "marker_latency_s": [m.latency_s for m in self.markers],
            "rss_bytes": self.rss_bytes,
            "store_bytes": self.store_bytes,
        }


class Probe:
    """Runs the five loops until `stop()`; `begin(name)` starts a new phase."""

    def __init__(
        self,
        *,
        socket: Path,
        daemon_pid: int,
        db: Path,
        group: ProcessGroup,
        marker_token: str,
        marker_rule_id: str,
    ) -> None:
        self.socket = socket
        self.daemon_pid = daemon_pid
        self.db = db
        self.group = group
        self.marker_token = marker_token
        self.marker_rule_id = marker_rule_id
        self.phases: list[PhaseSamples] = []
        self.markers_by_pid: dict[int, Marker] = {}
        self.notes: Counter[str] = Counter()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pids = [daemon_pid]
        self._alerts_ready = asyncio.Event()

    @property
    def current(self) -> PhaseSamples:
        return self.phases[-1]

    def begin(self, name: str) -> PhaseSamples:
        now = time.monotonic()
        if self.phases:
            self.phases[-1].ended_at = now
        self.phases.append(PhaseSamples(name=name, started_at=now))
        return self.phases[-1]

    async def start(self) -> None:
        """Start the loops once the alerts subscription is up (so no marker alert is missed)."""
        self.begin("warm-up")
        self._tasks.append(asyncio.create_task(self._alerts_loop()))
        await asyncio.wait_for(self._alerts_ready.wait(), HELLO_TIMEOUT_S)
        for loop in (self._hello_loop, self._connect_loop, self._marker_loop, self._sample_loop):
            self._tasks.append(asyncio.create_task(loop()))

    async def stop(self) -> None:
        self.current.ended_at = time.monotonic()
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_marker_alerted(self, timeout_s: float) -> float:
        """Spawn one marker and wait for its alert: proves the path works; its latency."""
        marker = self._spawn_marker()
        deadline = time.monotonic() + timeout_s
        while marker.alerted_at is None:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the marker rule never alerted within {timeout_s:.0f} s "
                    f"(probe notes: {dict(self.notes)})"
                )
            await asyncio.sleep(0.05)
        assert marker.latency_s is not None
        return marker.latency_s

    # -- the loops ---------------------------------------------------------------------------
    async def _alerts_loop(self) -> None:
        from daemoneye.ipc.client import DaemonClient
        from daemoneye.models import Alert

        while not self._stopping.is_set():
            try:
                async with DaemonClient(
                    self.socket, client_name="attackbench-alerts", connect_timeout=CONNECT_TIMEOUT_S
                ) as client:
                    await client.subscribe("alerts")
                    self._alerts_ready.set()
                    async for event in client.events():
                        if isinstance(event, Alert) and event.rule_id == self.marker_rule_id:
                            self._alerted(event.pid)
            except (OSError, _ipc_error()) as error:
                self.notes[f"alerts subscription lost: {type(error).__name__}"] += 1
            await asyncio.sleep(0.2)

    def _alerted(self, pid: int) -> None:
        marker = self.markers_by_pid.get(pid)
        if marker is not None and marker.alerted_at is None:
            marker.alerted_at = time.monotonic()

    async def _hello_loop(self) -> None:
        from daemoneye.ipc.client import DaemonClient
        from daemoneye.ipc.protocol import CallTimeout

        while not self._stopping.is_set():
            try:
                async with DaemonClient(
                    self.socket, client_name="attackbench-probe", connect_timeout=CONNECT_TIMEOUT_S
                ) as client:
                    next_at = time.monotonic()
                    while True:
                        phase = self.current
                        started = time.perf_counter()
                        try:
                            await client.call(
                                "hello", {"client": "attackbench-probe"}, timeout=HELLO_TIMEOUT_S
                            )
                            phase.hello_ms.append((time.perf_counter() - started) * 1000.0)
                        except CallTimeout:
                            phase.hello_ms.append(HELLO_TIMEOUT_S * 1000.0)
                            phase.hello_timeouts += 1
                        next_at = max(next_at + PROBE_PERIOD_S, time.monotonic())
                        await asyncio.sleep(next_at - time.monotonic())
            except (OSError, _ipc_error()) as error:
                self.notes[f"probe connection lost: {type(error).__name__}"] += 1
            await asyncio.sleep(0.2)

    async def _connect_loop(self) -> None:
        from daemoneye.ipc.client import DaemonClient

        while not self._stopping.is_set():
            phase = self.current
            started = time.perf_counter()
            client = DaemonClient(
                self.socket, client_name="attackbench-connect", connect_timeout=CONNECT_TIMEOUT_S
            )
            try:
                await asyncio.wait_for(client.connect(), CONNECT_TIMEOUT_S * 2)
                phase.connect_ms.append((time.perf_counter() - started) * 1000.0)
            except (OSError, TimeoutError, _ipc_error()) as error:
                phase.connect_failures[_short(error)] += 1
            finally:
                await client.close()
            await asyncio.sleep(CONNECT_PERIOD_S)

    async def _marker_loop(self) -> None:
        while not self._stopping.is_set():
            self._spawn_marker()
            self.group.reap()
            await asyncio.sleep(MARKER_PERIOD_S)

    def _spawn_marker(self) -> Marker:
        serial = self.group.spawned_total
        pid = self.group.spawn(SLEEP, [f"{self.marker_token}-{serial}", str(MARKER_LIFETIME_S)])
        marker = Marker(pid=pid, spawned_at=time.monotonic())
        self.markers_by_pid[pid] = marker
        self.current.markers.append(marker)
        return marker

    async def _sample_loop(self) -> None:
        next_descendants = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_descendants:
                self._pids = _descendants(self.daemon_pid)
                next_descendants = now + _DESCENDANTS_PERIOD_S
            phase = self.current
            phase.rss_bytes.append(sum(_rss_or_zero(pid) for pid in self._pids))
            phase.store_bytes.append(store_bytes(self.db))
            await asyncio.sleep(PROBE_PERIOD_S)


def store_bytes(db: Path) -> int:
    """The store's size on disk: the database file and its write-ahead log."""
    total = 0
    for path in (db, db.with_name(db.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def _descendants(pid: int) -> list[int]:
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children(parent)]
        found += frontier
    return found


def _rss_or_zero(pid: int) -> int:
    try:
        return rss_bytes(pid)
    except OSError:  # the process just ended
        return 0


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _ipc_error() -> type[Exception]:
    from daemoneye.ipc.protocol import IpcError

    return IpcError
