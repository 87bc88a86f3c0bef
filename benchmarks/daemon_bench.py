"""The daemon against top and htop: CPU % of one core and RSS over a steady-state window.

The real daemon (`python -m daemoneye --mode user … daemon --interval 1`), `top -b -d1` and
`htop -d 10` (in tmux) run at the same time on the same population; after the daemon says
"ready:" and a warm-up (so startup — the first full scan and the hashing of every executable —
is excluded) all three are sampled from /proc every second. The window is cut into blocks; each
block gives one CPU % per tool and one daemon/tool ratio, whence median and spread.

Targets: daemon CPU lower than top's and htop's; daemon RSS ≤ 40 MiB (judged on the peak).
"""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from benchmarks import store_probe
from benchmarks.availability import missing
from benchmarks.daemon_runner import DaemonFailed, DaemonProcess
from benchmarks.model import FAILED, NOT_BUILT, SKIPPED, Row, judge, status_row
from benchmarks.monitors import HtopInTmux, Top
from benchmarks.procstat import collector_of, cpu_seconds, rss_bytes
from benchmarks.stats import paired_ratios, summarize

SECTION = "daemon"
RSS_LIMIT_MIB = 72.0  # agent and procmond together
PROCMOND_RSS_LIMIT_MIB = 20.0
WARMUP_S = 3.0
_MIB = 1024 * 1024


@dataclass
class _Track:
    """Cumulative CPU seconds and RSS of one process (or the sum over several: the daemon is
    the agent and its procmond), one entry per sample."""

    name: str
    pid: int
    cpu_s: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    more_pids: tuple[int, ...] = ()

    def sample(self) -> None:
        pids = (self.pid, *self.more_pids)
        self.cpu_s.append(sum(cpu_seconds(pid) for pid in pids))
        self.rss.append(sum(rss_bytes(pid) for pid in pids))


def _block_percent(track: _Track, times: list[float], block: int) -> list[float]:
    """CPU % of one core in consecutive blocks of `block` samples."""
    percents = []
    for start in range(0, len(times) - block, block):
        end = start + block
        percents.append(
            (track.cpu_s[end] - track.cpu_s[start]) / (times[end] - times[start]) * 100.0
        )
    return percents


def run(
    size: int, *, window_s: int, blocks: int, top_reason: str | None, htop_reason: str | None
) -> tuple[list[Row], dict[str, Any]]:
    label = f"sleepers={size}"
    reason = missing("daemoneye.daemon.lifecycle", "Daemon")
    if reason is not None:
        return [status_row(SECTION, f"{label}: daemon", NOT_BUILT, reason)], {}
    with ExitStack() as stack:
        tracks: dict[str, _Track] = {}
        if top_reason is None:
            tracks["top"] = _Track("top", stack.enter_context(Top()).pid)
        htop = stack.enter_context(HtopInTmux()) if htop_reason is None else None
        if htop is not None:
            tracks["htop"] = _Track("htop", htop.pid)
            tracks["tmux server"] = _Track("tmux server", htop.tmux_server_pid)
        daemon = stack.enter_context(DaemonProcess(interval=1.0))
        try:
            ready_s = daemon.wait_ready()
        except DaemonFailed as failed:
            return [status_row(SECTION, f"{label}: daemon", FAILED, str(failed))], {}
        collector = collector_of(daemon.pid)
        extra = (collector,) if collector is not None else ()
        tracks["daemon"] = _Track("daemon", daemon.pid, more_pids=extra)  # both processes
        tracks["agent"] = _Track("agent", daemon.pid)
        if collector is not None:
            tracks["procmond"] = _Track("procmond", collector)
        time.sleep(WARMUP_S)
        times = _sample(tracks, window_s, daemon)
        health = store_probe.health(daemon.db)
    block = max(1, window_s // blocks)
    percents = {name: _block_percent(track, times, block) for name, track in tracks.items()}
    rows = _rows(label, tracks, percents, top_reason, htop_reason, health)
    raw = {
        "size": size,
        "ready_s": ready_s,
        "warmup_s": WARMUP_S,
        "window_s": window_s,
        "block_s": block,
        "sample_times": times,
        "cpu_seconds": {name: track.cpu_s for name, track in tracks.items()},
        "rss_bytes": {name: track.rss for name, track in tracks.items()},
        "cpu_percent_blocks": percents,
        "daemon_health": health,
    }
    return rows, raw


def _sample(tracks: dict[str, _Track], window_s: int, daemon: DaemonProcess) -> list[float]:
    """Sample every track once a second, on the second, for `window_s` seconds."""
    times = []
    start = time.monotonic()
    for index in range(window_s + 1):
        delay = start + index - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        daemon.check_alive()
        times.append(time.monotonic())
        for track in tracks.values():
            track.sample()
    return times


def _rows(
    label: str,
    tracks: dict[str, _Track],
    percents: dict[str, list[float]],
    top_reason: str | None,
    htop_reason: str | None,
    health: dict[str, Any] | None,
) -> list[Row]:
    daemon_cpu = summarize(percents["daemon"])
    processes = int(health["processes"]) if health else None
    # New processes per second on the host is what the daemon pays for and top does not
    # (a full read per new instance, plus kernel events): on a shared host it varies a lot.
    scan_note = (
        f"daemon's own health: last scan {health['last_scan_ms']:.0f} ms, avg "
        f"{health['avg_scan_ms']:.0f} ms, {health.get('new_per_second', 0):.0f} new "
        f"processes/s on the host, events: {health.get('event_source', '?')}"
        if health
        else ""
    )
    rows = [
        Row(
            SECTION,
            f"{label}: daemon CPU",
            processes,
            daemon_cpu,
            "% core",
            note="; ".join(filter(None, ["top, htop and the daemon ran concurrently", scan_note])),
        )
    ]
    for name, earlier, reason in (("top", "11 %", top_reason), ("htop", "20 %", htop_reason)):
        if reason is not None:
            rows.append(
                status_row(
                    SECTION, f"{label}: daemon CPU vs {name}", SKIPPED, reason, target=f"< {name}"
                )
            )
            continue
        ratio = summarize(paired_ratios(percents["daemon"], percents[name]))
        rows.append(
            Row(
                SECTION,
                f"{label}: daemon CPU",
                processes,
                daemon_cpu,
                "% core",
                f"{name} CPU",
                ratio,
                f"< {name} (ratio < 1)",
                judge(ratio.median, 1.0),
            )
        )
        extra = ""
        if name == "htop":
            extra = f"; tmux server {statistics.median(percents['tmux server']):.1f} % more"
        rows.append(
            Row(
                SECTION,
                f"{label}: {name} CPU",
                processes,
                summarize(percents[name]),
                "% core",
                note=f"measured earlier here: {earlier} at 10k{extra}",
            )
        )
    daemon_rss = summarize([rss / _MIB for rss in tracks["daemon"].rss])
    reference = "htop" if "htop" in tracks else "top" if "top" in tracks else None
    ratio_rss = (
        summarize(paired_ratios(tracks["daemon"].rss, tracks[reference].rss)) if reference else None
    )
    rows.append(
        Row(
            SECTION,
            f"{label}: daemon RSS (agent + procmond)",
            processes,
            daemon_rss,
            "MiB",
            f"{reference} RSS" if reference else None,
            ratio_rss,
            f"≤{RSS_LIMIT_MIB:g} MiB (peak)",
            judge(daemon_rss.high, RSS_LIMIT_MIB),
            f"peak {daemon_rss.high:.1f} MiB",
        )
    )
    if "procmond" in tracks:
        procmond_rss = summarize([rss / _MIB for rss in tracks["procmond"].rss])
        agent_rss = summarize([rss / _MIB for rss in tracks["agent"].rss])
        rows += [
            Row(
                SECTION,
                f"{label}: procmond RSS",
                processes,
                procmond_rss,
                "MiB",
                target=f"≤{PROCMOND_RSS_LIMIT_MIB:g} MiB (peak)",
                verdict=judge(procmond_rss.high, PROCMOND_RSS_LIMIT_MIB),
                note=f"peak {procmond_rss.high:.1f} MiB; agent peak {agent_rss.high:.1f} MiB",
            ),
            Row(
                SECTION,
                f"{label}: procmond CPU",
                processes,
                summarize(percents["procmond"]),
                "% core",
                note=f"agent {statistics.median(percents['agent']):.1f} % (daemon = both)",
            ),
        ]
    for name in ("top", "htop"):
        if name in tracks:
            rows.append(
                Row(
                    SECTION,
                    f"{label}: {name} RSS",
                    processes,
                    summarize([rss / _MIB for rss in tracks[name].rss]),
                    "MiB",
                )
            )
    return rows
