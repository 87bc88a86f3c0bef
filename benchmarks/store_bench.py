"""How fast the store grows: bytes per hour with the host's own population, and with 5,000
sleepers plus a steady churn of short-lived processes, extrapolated from a window of the real
daemon running; plus the time one tick's write takes, measured in-process against the scan of
the same tick.

Growth is read from outside with a read-only connection: the bytes in use (dbstat, the
finest measure), page_count x page_size, and the .db + -wal files on disk. The window is cut
into blocks; each block gives one bytes/hour figure, whence median and spread.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks import store_probe
from benchmarks.availability import missing
from benchmarks.churn import Churn
from benchmarks.daemon_runner import DaemonFailed, DaemonProcess
from benchmarks.model import FAILED, NOT_BUILT, Row, status_row
from benchmarks.population import Population
from benchmarks.stats import Summary, paired_ratios, summarize

SECTION = "store"
WARMUP_S = 3.0


def _growth_per_hour(
    sizes: list[store_probe.StoreSize], times: list[float], block: int
) -> tuple[list[float], str]:
    """bytes/hour per block, from dbstat's used bytes when available, else from pages."""
    use_dbstat = all(size.used_bytes is not None for size in sizes)

    def measure(size: store_probe.StoreSize) -> int:
        return (
            size.used_bytes if use_dbstat and size.used_bytes is not None else (size.logical_bytes)
        )

    rates = []
    for start in range(0, len(sizes) - block, block):
        end = start + block
        rates.append(
            (measure(sizes[end]) - measure(sizes[start])) / (times[end] - times[start]) * 3600.0
        )
    return rates, "bytes in use (dbstat)" if use_dbstat else "page_count x page_size"


def _window(daemon: DaemonProcess, window_s: int, churn: Churn | None) -> dict[str, Any]:
    daemon.wait_ready()
    time.sleep(WARMUP_S)
    spawned_before = churn.spawned if churn is not None else 0
    sizes, times = [], []
    start = time.monotonic()
    for index in range(window_s + 1):
        delay = start + index - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        daemon.check_alive()
        times.append(time.monotonic())
        sizes.append(store_probe.size(daemon.db))
    spawned = (churn.spawned if churn is not None else 0) - spawned_before
    return {
        "sizes": sizes,
        "times": times,
        "churned": spawned,
        "health": store_probe.health(daemon.db),
    }


def _scenario_rows(
    metric: str, window: dict[str, Any], blocks: int, reference: list[float] | None
) -> tuple[list[Row], list[float]]:
    sizes: list[store_probe.StoreSize] = window["sizes"]
    times: list[float] = window["times"]
    block = max(1, (len(times) - 1) // blocks)
    rates, measure = _growth_per_hour(sizes, times, block)
    first, last = sizes[0], sizes[-1]
    elapsed_h = (times[-1] - times[0]) / 3600.0
    new_rows = last.processes - first.processes
    new_events = last.events - first.events
    pages_rate = (last.logical_bytes - first.logical_bytes) / elapsed_h / 1e6
    files_rate = (last.file_bytes - first.file_bytes) / elapsed_h / 1e6
    note = (
        f"{measure}; whole window: pages {pages_rate:.1f} MB/h, "
        f"files(db+wal) {files_rate:.1f} MB/h; "
        f"+{new_rows} process rows, +{new_events} events in {times[-1] - times[0]:.0f} s"
    )
    health = window["health"]
    processes = int(health["processes"]) if health else None
    ratio: Summary | None = None
    if reference:
        ratio = summarize(
            [statistics.median(rates) / statistics.median(reference)]
            if statistics.median(reference) > 0
            else [float("inf")]
        )
    rows = [
        Row(
            SECTION,
            metric,
            processes,
            summarize([rate / 1e6 for rate in rates]),
            "MB/h",
            "host-population MB/h" if reference else None,
            ratio,
            note=note,
        )
    ]
    if new_rows > 0 and measure.startswith("bytes"):
        used_growth = (last.used_bytes or 0) - (first.used_bytes or 0)
        rows.append(
            Row(
                SECTION,
                f"{metric}: bytes per new process row",
                processes,
                summarize([used_growth / new_rows]),
                "B/row",
                note=f"churn started {window['churned']} processes in the window; "
                "the rest of the new rows are the host's own",
            )
        )
    return rows, rates


def _tick_write_times(ticks: int) -> dict[str, list[float]]:
    """A scanner and a Store in this process: ms per tick for scan and for `Store.apply`."""
    from daemoneye.collector.procfs import read_boot_time
    from daemoneye.collector.scanner import ProcScanner
    from daemoneye.store.db import Store

    with tempfile.TemporaryDirectory(prefix="daemoneye-bench-store-") as tmp:
        store = Store.open(Path(tmp) / "s.db")
        try:
            scanner = ProcScanner("/proc", boot_time=read_boot_time())
            result: dict[str, list[float]] = {"scan_ms": [], "apply_ms": [], "rows": []}
            first = scanner.scan()
            started = time.perf_counter()
            store.apply(first)
            result["first_apply_ms"] = [(time.perf_counter() - started) * 1000]
            result["first_rows"] = [float(len(first.added))]
            for _ in range(ticks):
                time.sleep(1.0)
                delta = scanner.scan()
                started = time.perf_counter()
                store.apply(delta)
                result["apply_ms"].append((time.perf_counter() - started) * 1000)
                result["scan_ms"].append(delta.stats.duration_s * 1000)
                result["rows"].append(
                    float(
                        len(delta.added) + len(delta.updated) + len(delta.ended) + len(delta.events)
                    )
                )
            return result
        finally:
            store.close()


def run(
    *, sleepers: int, churn_rate: float, window_s: int, blocks: int, ticks: int
) -> tuple[list[Row], dict[str, Any]]:
    reason = missing("daemoneye.daemon.lifecycle", "Daemon") or missing(
        "daemoneye.store.db", "Store"
    )
    if reason is not None:
        return [status_row(SECTION, "bytes per hour", NOT_BUILT, reason)], {}
    rows: list[Row] = []
    raw: dict[str, Any] = {"window_s": window_s, "sleepers": sleepers, "churn_per_s": churn_rate}
    try:
        with DaemonProcess(interval=1.0) as daemon:
            idle = _window(daemon, window_s, None)
        idle_rows, idle_rates = _scenario_rows("host population: growth", idle, blocks, None)
        rows += idle_rows
        with ExitStack() as stack:
            stack.enter_context(Population(sleepers))
            churn = stack.enter_context(Churn(churn_rate))
            with DaemonProcess(interval=1.0) as daemon:
                busy = _window(daemon, window_s, churn)
            busy_rows, _ = _scenario_rows(
                f"{sleepers} sleepers + churn {churn_rate:g}/s: growth", busy, blocks, idle_rates
            )
            rows += busy_rows
            writes = _tick_write_times(ticks)
            if churn.error is not None:
                raise RuntimeError(f"churn thread failed: {churn.error!r}")
    except DaemonFailed as failed:
        return [*rows, status_row(SECTION, "bytes per hour", FAILED, str(failed))], raw
    processes = busy["health"]["processes"] if busy["health"] else None
    rows.append(
        Row(
            SECTION,
            f"{sleepers} sleepers + churn: store write per tick",
            processes,
            summarize(writes["apply_ms"]),
            "ms/tick",
            "scan of the same tick",
            summarize(paired_ratios(writes["apply_ms"], writes["scan_ms"])),
            note=f"in-process Store.apply; first tick wrote {writes['first_rows'][0]:.0f} "
            f"new rows in {writes['first_apply_ms'][0]:.0f} ms",
        )
    )
    for name, window in (("idle", idle), ("busy", busy)):
        raw[name] = {
            "times": window["times"],
            "churned": window["churned"],
            "health": window["health"],
            "sizes": [_size_dict(size) for size in window["sizes"]],
        }
    raw["tick_writes"] = writes
    return rows, raw


def _size_dict(size: store_probe.StoreSize) -> dict[str, int | None]:
    return {
        "logical_bytes": size.logical_bytes,
        "used_bytes": size.used_bytes,
        "file_bytes": size.file_bytes,
        "processes": size.processes,
        "events": size.events,
    }
