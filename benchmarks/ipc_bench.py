"""The daemon's IPC (issue 4's targets), against the real daemon on a sleeper population:

- `processes.get` round-trip p99 — target ≤ 5 ms. Each call is interleaved with a `hello`
  round trip (the same trip with no work: the floor this host's scheduling sets at that
  moment), which is the same-run reference;
- the daemon CPU that 16 subscribed clients (processes, alerts, rules, health; each applying
  every delta) add — target ≤ 2 % of a core. The daemon is sampled every second without
  clients, with the 16, and without again; each block with clients is compared with the mean
  of the matching blocks before and after, which cancels a slow drift of the host's load.

The subscribers run in one child process (asyncio, one connection each); the latency client
runs in this process. Calls are cut into
`blocks` consecutive chunks, each giving one p99, whence median and spread; the target is
judged on the p99 of every call pooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import cleanup
from benchmarks.availability import missing
from benchmarks.daemon_runner import REPO_ROOT, DaemonFailed, DaemonProcess
from benchmarks.model import FAILED, NOT_BUILT, Row, judge, status_row
from benchmarks.population import Population
from benchmarks.procstat import CLOCK_TICKS, cpu_seconds
from benchmarks.stats import paired_ratios, summarize

SECTION = "ipc"
SUBSCRIBERS = 16
P99_TARGET_MS = 5.0
EXTRA_CPU_TARGET = 2.0
WARMUP_S = 3.0
_SEEN_TIMEOUT_S = 120.0

_SUBSCRIBER_CODE = """
import asyncio, sys
from daemoneye.ipc.client import DaemonClient, ProcessesSnapshot, apply_delta
from daemoneye.models import ProcessesDelta

async def one(path, ready):
    async with DaemonClient(path, client_name="bench-subscriber") as client:
        for topic in ("processes", "alerts", "rules", "health"):
            await client.subscribe(topic)
        table = {}
        async for event in client.events():
            if isinstance(event, ProcessesSnapshot):
                table = {r.key: r for r in event.processes}
                ready.append(1)
            elif isinstance(event, ProcessesDelta):
                apply_delta(table, event)

async def main():
    ready = []
    tasks = [asyncio.create_task(one(sys.argv[1], ready)) for _ in range(int(sys.argv[2]))]
    while len(ready) < len(tasks):
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    await asyncio.gather(*tasks)

asyncio.run(main())
"""


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _Subscribers:
    """The child process holding SUBSCRIBERS subscribed connections; killed whatever happens."""

    def __init__(self, socket: Path, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SUBSCRIBER_CODE, str(socket), str(count)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._handle = cleanup.register("ipc subscribers", self.stop)

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        started = time.monotonic()
        assert self.process.stdout is not None
        line = b""
        # readline blocks; the child prints "ready" or dies (whose stderr then says why)
        while time.monotonic() - started < timeout_s:
            line = self.process.stdout.readline()
            if line.strip() == b"ready" or not line:
                break
        if line.strip() != b"ready":
            self.stop()
            error = (
                self.process.stderr.read().decode(errors="replace") if (self.process.stderr) else ""
            )
            raise RuntimeError(f"subscribers never became ready: {error.strip()[-300:]}")
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        cleanup.unregister(self._handle)


def _cpu_blocks(pid: int, blocks: int, block_s: int) -> tuple[list[float], list[float]]:
    """CPU % of one core of the whole daemon and of its main (event-loop) thread, one figure
    per block of `block_s` seconds, sampled on the second."""
    whole, loop = [], []
    start = time.monotonic()
    last_t, last_whole, last_loop = start, cpu_seconds(pid), _thread_cpu(pid)
    for index in range(1, blocks + 1):
        delay = start + index * block_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now, now_whole, now_loop = time.monotonic(), cpu_seconds(pid), _thread_cpu(pid)
        whole.append((now_whole - last_whole) / (now - last_t) * 100.0)
        loop.append((now_loop - last_loop) / (now - last_t) * 100.0)
        last_t, last_whole, last_loop = now, now_whole, now_loop
    return whole, loop


def _thread_cpu(pid: int) -> float:
    """utime + stime of the daemon's main thread (where the event loop, hence the fan-out to
    subscribers, runs; the collector has a thread of its own)."""
    with open(f"/proc/{pid}/task/{pid}/stat", "rb") as stat:
        raw = stat.read()
    fields = raw[raw.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def _wait_seen(socket: Path, size: int) -> int:
    from daemoneye.ipc.client import DaemonClient

    deadline = time.monotonic() + _SEEN_TIMEOUT_S
    seen = 0
    while time.monotonic() < deadline:
        if socket.exists():
            with contextlib.suppress(OSError, ConnectionError):
                async with DaemonClient(socket, client_name="bench-ipc") as client:
                    seen = (await client.health()).report.processes
                    if seen >= size:
                        return seen
        await asyncio.sleep(0.25)
    raise RuntimeError(
        f"the daemon saw {seen} processes after {_SEEN_TIMEOUT_S:.0f} s; {size} sleepers expected"
    )


async def _latencies(socket: Path, pids: list[int], calls: int) -> tuple[list[float], list[float]]:
    """processes.get round trips, each followed by a `hello` one (the reference)."""
    from daemoneye.ipc.client import DaemonClient

    chosen = random.Random(7).choices(pids, k=calls)
    gets, hellos = [], []
    async with DaemonClient(socket, client_name="bench-ipc") as client:
        for _ in range(20):  # warm both paths
            await client.process_get(chosen[0])
            await client.call("hello", {"client": "bench-ipc"})
        for pid in chosen:
            started = time.perf_counter()
            await client.process_get(pid)
            gets.append((time.perf_counter() - started) * 1000.0)
            started = time.perf_counter()
            await client.call("hello", {"client": "bench-ipc"})
            hellos.append((time.perf_counter() - started) * 1000.0)
    return gets, hellos


def run(
    *, sleepers: int, blocks: int, block_s: int, calls: int
) -> tuple[list[Row], dict[str, Any]]:
    reason = (
        missing("daemoneye.ipc.server")
        or missing("daemoneye.ipc.client", "DaemonClient")
        or missing("daemoneye.daemon.lifecycle", "Daemon")
    )
    if reason is not None:
        return [status_row(SECTION, "request latency; subscriber CPU", NOT_BUILT, reason)], {}
    raw: dict[str, Any] = {
        "sleepers": sleepers,
        "subscribers": SUBSCRIBERS,
        "blocks": blocks,
        "block_s": block_s,
        "calls": calls,
    }
    with Population(sleepers) as population, DaemonProcess(interval=1.0) as daemon:
        socket = daemon.root / "runtime" / "daemoneye.sock"
        try:
            raw["ready_s"] = daemon.wait_ready()
        except DaemonFailed as failed:
            return [
                status_row(SECTION, "request latency; subscriber CPU", FAILED, str(failed))
            ], raw
        raw["processes"] = asyncio.run(_wait_seen(socket, sleepers))
        time.sleep(WARMUP_S)
        raw["before"], raw["before_loop"] = _cpu_blocks(daemon.pid, blocks, block_s)
        subscribers = _Subscribers(socket, SUBSCRIBERS)
        try:
            raw["subscribers_ready_s"] = subscribers.wait_ready()
            time.sleep(2.0)
            raw["with"], raw["with_loop"] = _cpu_blocks(daemon.pid, blocks, block_s)
            daemon.check_alive()
            raw["get_ms"], raw["hello_ms"] = asyncio.run(
                _latencies(socket, population.pids(), calls)
            )
        finally:
            subscribers.stop()
        time.sleep(1.0)
        raw["after"], raw["after_loop"] = _cpu_blocks(daemon.pid, blocks, block_s)
        daemon.check_alive()
    raw["loadavg"] = list(os.getloadavg())
    return _rows(raw), raw


def _rows(raw: dict[str, Any]) -> list[Row]:
    processes = int(raw["processes"])
    gets, hellos = raw["get_ms"], raw["hello_ms"]
    chunks = max(1, raw["blocks"])
    size = max(1, len(gets) // chunks)
    get_p99s = [_percentile(gets[i : i + size], 0.99) for i in range(0, size * chunks, size)]
    hello_p99s = [_percentile(hellos[i : i + size], 0.99) for i in range(0, size * chunks, size)]
    pooled = _percentile(gets, 0.99)
    rows = [
        Row(
            SECTION,
            f"processes.get p99, {SUBSCRIBERS} clients subscribed",
            processes,
            summarize(get_p99s),
            "ms",
            "hello p99",
            summarize(paired_ratios(get_p99s, hello_p99s)),
            f"p99 ≤{P99_TARGET_MS:g} ms (pooled)",
            judge(pooled, P99_TARGET_MS),
            f"pooled over {len(gets)} calls: p50 {_percentile(gets, 0.5):.2f}, p99 {pooled:.2f}, "
            f"max {max(gets):.2f} ms; hello p50 {_percentile(hellos, 0.5):.2f}, p99 "
            f"{_percentile(hellos, 0.99):.2f} ms; per-chunk p99 of {size} calls above",
        )
    ]
    idle = [(b + a) / 2 for b, a in zip(raw["before"], raw["after"], strict=True)]
    idle_loop = [(b + a) / 2 for b, a in zip(raw["before_loop"], raw["after_loop"], strict=True)]
    extra = [w - i for w, i in zip(raw["with"], idle, strict=True)]
    extra_loop = [w - i for w, i in zip(raw["with_loop"], idle_loop, strict=True)]
    extra_summary = summarize(extra)
    rows.append(
        Row(
            SECTION,
            f"daemon CPU added by {SUBSCRIBERS} subscribed clients",
            processes,
            extra_summary,
            "% core",
            "daemon CPU without clients",
            summarize(paired_ratios(raw["with"], idle)),
            f"≤{EXTRA_CPU_TARGET:g} % core (median)",
            judge(extra_summary.median, EXTRA_CPU_TARGET),
            f"{raw['block_s']} s blocks; daemon {statistics.median(idle):.2f} % without clients "
            f"(before {statistics.median(raw['before']):.2f}, after "
            f"{statistics.median(raw['after']):.2f}), {statistics.median(raw['with']):.2f} % with; "
            f"event-loop thread (where fan-out runs) {statistics.median(extra_loop):+.2f} %; "
            f"{raw['sleepers']} sleepers, 1 s ticks; load average at end "
            f"{raw.get('loadavg', [0.0])[0]:.1f}" + _drift(raw),
        )
    )
    return rows


def _drift(raw: dict[str, Any]) -> str:
    """A warning when the daemon's CPU without clients moved more than the target between
    before and after: the host changed under the measurement, so the extra is not all ours."""
    before, after = statistics.median(raw["before"]), statistics.median(raw["after"])
    if abs(after - before) <= EXTRA_CPU_TARGET:
        return ""
    return (
        f"; UNRELIABLE: without clients the daemon went from {before:.1f} % to "
        f"{after:.1f} % (the host changed meanwhile, e.g. a burst of new processes); "
        "the event-loop thread figure is the fan-out's own cost"
    )
