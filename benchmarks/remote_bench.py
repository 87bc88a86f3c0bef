"""Beyond one host (issue 20): the dashboard over SSH next to the local one, several hosts'
alerts merged, and alerts/s through the OTLP and OCSF paths.

    .venv/bin/python -m benchmarks.remote_bench [--processes 10000] [--hosts 4]
        [--per-host 2000] [--runs 3] [--alerts 2000] [--json PATH]

- **Remote vs local** (root: it starts a throw-away sshd on 127.0.0.1): one real daemon over a
  population of sleepers; the dashboard (the real app, IpcSource, headless) attached to it
  through its socket and through `--host ssh://root@127.0.0.1` (ssh + the remote bridge), runs
  alternating: first paint (app start → every live process painted) and cursor key → repaint
  (each move also fetches the new row's detail from the daemon: a round trip through ssh).
  The reference is the local figure of the same run; the ratio is remote / local.
- **Several hosts**: `hosts` real daemons on this machine, each with a rule that alerts on every
  sleeper of a population of `per_host` (so each daemon holds `per_host` alerts); the dashboard
  over all of them (MultiSource of local sockets: the merge is what is measured), on the Alerts
  screen: cursor key, the host filter `h`, the state filter `o` → repaint. Reference: the same
  keys on one daemon's alerts in the same run.
- **Delivery**: alerts/s that the file sink (native, ocsf, ecs) and the OTLP sink (a local
  OTLP/HTTP receiver) take, handed over as the delivery thread does (OTLP: 50 per request; one
  each for comparison), and process events/s through the stream's path (file ocsf; OTLP ocsf,
  100 per request). Reference: alerts through the file sink with the native format.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import cleanup
from benchmarks.daemon_runner import DaemonProcess
from benchmarks.dashboard_bench import TimedApp, note_work, timed_key
from benchmarks.model import FAILED, MET, MISSED, NO_TARGET, SKIPPED, Row, status_row
from benchmarks.population import Population
from benchmarks.stats import paired_ratios, summarize
from daemoneye.config.remote_values import parse_ssh_target
from daemoneye.engine.sinks.base import Sink, batch_sink
from daemoneye.engine.sinks.file import FileSink
from daemoneye.engine.stream_payload import process_payload
from daemoneye.ipc.client import DaemonClient
from daemoneye.ipc.ssh import SshRoute, ssh_route
from daemoneye.models import ProcessEvent, ProcessRecord
from daemoneye.tui.ipc_source import IpcSource
from daemoneye.tui.multi_source import MultiSource
from daemoneye.tui.screens.alerts import AlertsScreen
from daemoneye.tui.screens.processes import ProcessesScreen
from daemoneye.tui.source import DashboardSource
from daemoneye.tui.widgets.live_table import LiveTable
from tests.fakes.dashboard_source import FrozenClock

SECTION = "remote"
# The dashboard holds each daemon's newest 1,000 alerts (DaemonCalls.alerts_list's default).
DASHBOARD_ALERTS = 1_000
TARGET_KEY_MS = 50.0  # the dashboard's own key target (dashboard_bench), remote or merged
# Every population sleeper is /bin/sleep through a copy or link under the population's temp
# tree; this rule alerts on each of them once (dedup: one alert per process instance).
SLEEPER_RULE = """
[[rule]]
id = "bench-sleeper"
name = "Benchmark sleeper"
description = "A sleeper of the benchmark population (remote_bench)."
severity = "low"
query = "SELECT pid, start_time, name FROM live_processes WHERE exe LIKE '{root}/%'"
"""


def _say(text: str) -> None:
    print(f"[remote] {text}", flush=True)


def _wait(probe: Callable[[], bool], what: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.25)


def _socket(daemon: DaemonProcess) -> Path:
    return daemon.root / "runtime" / "daemoneye.sock"


async def _count(client_factory: Callable[[], DaemonClient], what: str) -> int:
    client = client_factory()
    try:
        await client.connect()
        if what == "processes":
            return len(await client.processes_list())
        return len(await client.alerts_list())
    finally:
        await client.close()


# -- remote vs local -----------------------------------------------------------------------


async def _dashboard_run(source: DashboardSource, expect: int, keys: int) -> dict[str, Any]:
    """First paint and cursor keys of one dashboard over `source`."""
    app = TimedApp(source, clock=FrozenClock())
    started = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, ProcessesScreen)
        deadline = time.monotonic() + 120
        while len(screen.table.shown_keys) < expect:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the dashboard showed {len(screen.table.shown_keys)} of {expect} processes"
                )
            await asyncio.sleep(0.005)
        await pilot.pause()
        first_paint = time.perf_counter() - started
        moves = [await timed_key(pilot, key) for key in ("down", "up") * (keys // 2)]
    timings = [wall for wall, _ in moves if wall > 0]
    return {"first_paint_s": first_paint, "key_ms": timings}


def _route(sshd: Any, socket_path: Path) -> SshRoute:
    import sys

    return ssh_route(
        parse_ssh_target(sshd.url()),
        ssh=(str(sshd.ssh),),
        remote_command=(sys.executable, "-m", "daemoneye"),
        remote_socket=str(socket_path),
    )


def remote_vs_local(processes: int, runs: int, keys: int = 20) -> tuple[list[Row], dict[str, Any]]:
    from tests.sshd_server import SSHD, SshdFailed, start_sshd, stop_sshd

    if os.geteuid() != 0 or not Path(SSHD).exists() or shutil.which("ssh") is None:
        why = "needs root and openssh-server (a throw-away sshd on 127.0.0.1)"
        return [status_row(SECTION, "dashboard over SSH vs local", SKIPPED, why)], {}
    note_work(ProcessesScreen, "_refresh_rows")
    note_work(ProcessesScreen, "_show_detail")
    note_work(LiveTable, "_move")
    raw: dict[str, Any] = {"local": [], "ssh": []}
    root = Path(tempfile.mkdtemp(prefix="daemoneye-bench-ssh-"))
    try:
        sshd = start_sshd(root / "sshd")
    except SshdFailed as exc:
        shutil.rmtree(root, ignore_errors=True)
        return [status_row(SECTION, "dashboard over SSH vs local", FAILED, str(exc))], {}
    try:
        with Population(processes) as population, DaemonProcess(interval=1.0) as daemon:
            _say(f"{processes} sleepers up in {population.spawn_s:.1f} s")
            daemon.wait_ready()
            sock = _socket(daemon)
            route = _route(sshd, sock)

            def local() -> DaemonClient:
                return DaemonClient(sock, client_name="bench", reconnect=True)

            def remote() -> DaemonClient:
                return DaemonClient(
                    "remote", client_name="bench", reconnect=True, ssh=route, connect_timeout=30
                )

            _wait(
                lambda: asyncio.run(_count(local, "processes")) >= processes,
                f"the daemon to list {processes} processes",
            )
            for run in range(runs):
                for name, factory in (("local", local), ("ssh", remote)):
                    expect = int(processes * 0.98)
                    figures = asyncio.run(_dashboard_run(IpcSource(factory()), expect, keys))
                    raw[name].append(figures)
                    _say(
                        f"run {run + 1} {name}: first paint {figures['first_paint_s']:.2f} s, "
                        f"key p50 {statistics.median(figures['key_ms']):.1f} ms"
                    )
    finally:
        stop_sshd(sshd)
        shutil.rmtree(root, ignore_errors=True)
    return _remote_rows(processes, raw), raw


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _remote_rows(processes: int, raw: dict[str, Any]) -> list[Row]:
    local, ssh = raw["local"], raw["ssh"]
    rows: list[Row] = []
    paint_local = [run["first_paint_s"] for run in local]
    paint_ssh = [run["first_paint_s"] for run in ssh]
    rows.append(
        Row(
            SECTION,
            "first paint over SSH (ssh + bridge on loopback)",
            processes,
            summarize(paint_ssh),
            "s",
            reference="first paint, local socket, same run",
            ratio=summarize(paired_ratios(paint_ssh, paint_local)),
            target="≤ 1 s (the dashboard's own target)",
            verdict=MET if statistics.median(paint_ssh) <= 1.0 else MISSED,
        )
    )
    rows.append(Row(SECTION, "first paint, local socket", processes, summarize(paint_local), "s"))
    for name, runs in (("over SSH", ssh), ("local socket", local)):
        p95s = [_p95(run["key_ms"]) for run in runs]
        rows.append(
            Row(
                SECTION,
                f"cursor key → repaint p95 (with the detail fetch), {name}",
                processes,
                summarize(p95s),
                "ms",
                reference="local socket, same run" if name == "over SSH" else None,
                ratio=summarize(paired_ratios(p95s, [_p95(run["key_ms"]) for run in local]))
                if name == "over SSH"
                else None,
                target=f"≤ {TARGET_KEY_MS:g} ms",
                verdict=MET if statistics.median(p95s) <= TARGET_KEY_MS else MISSED,
            )
        )
    return rows


# -- several hosts -------------------------------------------------------------------------


async def _alerts_run(source: DashboardSource, expect: int, several: bool) -> dict[str, Any]:
    app = TimedApp(source, clock=FrozenClock())
    async with app.run_test(size=(160, 48)) as pilot:
        deadline = time.monotonic() + 180
        while len(app.alerts) < expect:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard held {len(app.alerts)} of {expect} alerts")
            await asyncio.sleep(0.01)
        await pilot.press("2")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, AlertsScreen)
        while len(screen.table.shown_keys) < min(expect, len(app.alerts)):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Alerts screen shows {len(screen.table.shown_keys)} of the "
                    f"{len(app.alerts)} alerts the dashboard holds"
                )
            await asyncio.sleep(0.01)
        moves = [await timed_key(pilot, key) for key in ("down", "up") * 10]
        filters = [await timed_key(pilot, "o") for _ in range(5)]
        hosts = [await timed_key(pilot, "h") for _ in range(5)] if several else []
    return {
        "alerts": len(app.alerts),
        "cursor_ms": [wall for wall, _ in moves if wall > 0],
        "cursor_cpu_ms": [cpu for wall, cpu in moves if wall > 0],
        "state_filter_ms": [wall for wall, _ in filters if wall > 0],
        "state_filter_cpu_ms": [cpu for wall, cpu in filters if wall > 0],
        "host_filter_ms": [wall for wall, _ in hosts if wall > 0],
        "host_filter_cpu_ms": [cpu for wall, cpu in hosts if wall > 0],
    }


@contextlib.contextmanager
def _daemons(count: int, rule: str) -> Iterator[list[DaemonProcess]]:
    """`count` daemons whose rules directory holds `rule` from the start (a rule loaded later
    is evaluated over the live set once, capped by the row limit)."""
    with contextlib.ExitStack() as stack:
        daemons = []
        for _ in range(count):
            daemon = DaemonProcess(interval=1.0)
            rules = daemon.root / "config" / "daemoneye" / "rules.d"
            rules.mkdir(parents=True, mode=0o700)
            (rules / "bench.toml").write_text(rule)
            daemons.append(stack.enter_context(daemon))
        for daemon in daemons:
            daemon.wait_ready()
        yield daemons


def several_hosts(hosts: int, per_host: int, runs: int) -> tuple[list[Row], dict[str, Any]]:
    note_work(AlertsScreen, "_refresh_rows")
    note_work(LiveTable, "_move")
    raw: dict[str, Any] = {"merged": [], "one": []}
    with Population(per_host) as population:
        rule = SLEEPER_RULE.format(root=population.root)
        with _daemons(hosts, rule) as daemons:
            sockets = [_socket(daemon) for daemon in daemons]

            def factory(sock: Path) -> Callable[[], DaemonClient]:
                return lambda: DaemonClient(sock, client_name="bench", reconnect=True)

            for sock in sockets:

                def enough(sock: Path = sock) -> bool:
                    held = asyncio.run(_count(factory(sock), "alerts"))
                    return held >= min(per_host, DASHBOARD_ALERTS)

                _wait(enough, f"{per_host} alerts on {sock}")
            for run in range(runs):
                merged = MultiSource(
                    {f"host{i + 1}": IpcSource(factory(s)()) for i, s in enumerate(sockets)}
                )
                shown = min(per_host, DASHBOARD_ALERTS)
                figures = asyncio.run(_alerts_run(merged, hosts * shown, True))
                raw["merged"].append(figures)
                one = asyncio.run(_alerts_run(IpcSource(factory(sockets[0])()), shown, False))
                raw["one"].append(one)
                _say(
                    f"run {run + 1}: {figures['alerts']} merged alerts, cursor p95 "
                    f"{_p95(figures['cursor_ms']):.1f} ms vs {_p95(one['cursor_ms']):.1f} ms "
                    f"on one host's {one['alerts']}"
                )
    return _merged_rows(hosts, per_host, raw), raw


def _merged_rows(hosts: int, per_host: int, raw: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    merged, one = raw["merged"], raw["one"]
    label = f"{hosts} daemons x {per_host} alerts"
    for key, what in (
        ("cursor_ms", "cursor key"),
        ("state_filter_ms", "state filter (o)"),
        ("host_filter_ms", "host filter (h)"),
    ):
        p95s = [_p95(run[key]) for run in merged if run[key]]
        if not p95s:
            continue
        reference = [_p95(run[key]) for run in one if run[key]]
        rows.append(
            Row(
                SECTION,
                f"merged alerts screen ({label}): {what} → repaint p95",
                hosts * per_host,
                summarize(p95s),
                "ms",
                reference=f"one daemon's {per_host} alerts, same run" if reference else None,
                ratio=summarize(paired_ratios(p95s, reference))
                if len(reference) == len(p95s)
                else None,
                target=f"≤ {TARGET_KEY_MS:g} ms",
                verdict=MET if statistics.median(p95s) <= TARGET_KEY_MS else MISSED,
            )
        )
    return rows


# -- delivery ------------------------------------------------------------------------------


def _payload(index: int) -> dict[str, Any]:
    now = time.time()
    return {
        "event": "alert.raised",
        "event_id": f"bench/{index}/1",
        "ts": now,
        "time": "",
        "host": "bench",
        "alert_id": index,
        "occurrence": 1,
        "rule_id": "exec-from-tmp",
        "rule_name": "Execution from /tmp",
        "description": "A process runs an executable under /tmp.",
        "tags": ["T1059.004", "execution"],
        "severity": "high",
        "title": f"payload-{index} runs from /tmp/.x/payload-{index}",
        "pid": 10_000 + index,
        "start_time": now - 1,
        "first_seen": now,
        "last_seen": now,
        "count": 1,
        "state": "open",
        "row": {
            "pid": 10_000 + index,
            "name": f"payload-{index}",
            "exe": f"/tmp/.x/payload-{index}",
            "cmdline": f"/tmp/.x/payload-{index} --connect 203.0.113.7:4444",
            "uid": 1000,
            "user": "alice",
        },
    }


def _event_payload(index: int) -> dict[str, Any]:
    now = time.time()
    event = ProcessEvent(now, "exec", 10_000 + index, now - 0.001, ppid=1, source="netlink")
    argv = (f"/tmp/.x/payload-{index}", "--connect", "203.0.113.7:4444")
    return process_payload(event, _bench_record(event, argv), "bench")


def _bench_record(event: ProcessEvent, argv: tuple[str, ...]) -> ProcessRecord:
    return ProcessRecord(
        pid=event.pid,
        ppid=1,
        start_time=event.start_time,
        name=argv[0].rsplit("/", 1)[-1][:15],
        exe=argv[0],
        cmdline=argv,
        cwd="/home/alice",
        uid=1000,
        user="alice",
        gid=1000,
        state="R",
        threads=1,
        rss=4096,
        cpu_percent=0.0,
        exe_sha256=None,
        exe_deleted=False,
        first_seen=event.ts,
        last_seen=event.ts,
    )


def _rate(sink: Sink, payloads: list[dict[str, Any]], batch: int) -> float:
    """Payloads/s the sink takes, handed over as the delivery thread and the stream do: in
    batches of `batch` when the sink takes batches, else one at a time."""
    batcher = batch_sink(sink)
    started = time.perf_counter()
    if batcher is not None and batch > 1:
        for at in range(0, len(payloads), batch):
            batcher.deliver_batch(payloads[at : at + batch])
    else:
        for payload in payloads:
            sink.deliver(payload)
    elapsed = time.perf_counter() - started
    sink.close()
    return len(payloads) / elapsed


def delivery(count: int, runs: int) -> tuple[list[Row], dict[str, Any]]:
    from daemoneye.engine.sinks.otlp import OtlpSink
    from tests.integration.otlp_receiver import logs_receiver

    alerts = [_payload(index) for index in range(count)]
    events = [_event_payload(index) for index in range(count)]
    raw: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="daemoneye-bench-sinks-") as tmp:
        for run in range(runs):
            for fmt in ("native", "ocsf", "ecs"):
                path = Path(tmp) / f"{fmt}-{run}.jsonl"
                raw.setdefault(f"alerts, file {fmt}", []).append(
                    _rate(FileSink(path, fsync=False, fmt=fmt), alerts, 1)
                )
            path = Path(tmp) / f"events-{run}.jsonl"
            raw.setdefault("process events, file ocsf", []).append(
                _rate(FileSink(path, fsync=False, fmt="ocsf"), events, 1)
            )
            cases = (
                ("alerts, otlp native, one request each", alerts, "native", 1),
                ("alerts, otlp native, 50 per request (the outbox's batch)", alerts, "native", 50),
                ("alerts, otlp ocsf, 50 per request", alerts, "ocsf", 50),
                (
                    "process events, otlp ocsf, 100 per request (the stream's batch)",
                    events,
                    "ocsf",
                    100,
                ),
            )
            for name, payloads, fmt, batch in cases:
                with logs_receiver() as receiver:
                    raw.setdefault(name, []).append(
                        _rate(OtlpSink(receiver.url, timeout=10, fmt=fmt), payloads, batch)
                    )
    reference = raw["alerts, file native"]
    rows = [
        Row(
            SECTION,
            f"{name}: per second taken by the sink",
            None,
            summarize(rates),
            "per s",
            reference="alerts, file sink, native format, same run"
            if name != "alerts, file native"
            else None,
            ratio=summarize(paired_ratios(rates, reference))
            if name != "alerts, file native"
            else None,
            verdict=NO_TARGET,
            note="fsync off; OTLP to a local OTLP/HTTP receiver" if "otlp" in name else "fsync off",
        )
        for name, rates in raw.items()
    ]
    return rows, raw


# -- the section ---------------------------------------------------------------------------


def run(
    *, processes: int, hosts: int, per_host: int, runs: int, alerts: int
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    parts: tuple[tuple[str, Callable[[], tuple[list[Row], dict[str, Any]]]], ...] = (
        ("delivery", lambda: delivery(alerts, runs)),
        ("several_hosts", lambda: several_hosts(hosts, per_host, runs)),
        ("remote", lambda: remote_vs_local(processes, runs)),
    )
    for name, part in parts:
        try:
            part_rows, raw[name] = part()
        except Exception as exc:  # a benchmark's failure is a FAILED row, not a crash
            part_rows = [status_row(SECTION, name, FAILED, f"{type(exc).__name__}: {exc}")]
        rows += part_rows
    return rows, raw


def main() -> None:
    cleanup.install()  # SIGTERM/SIGHUP unwind the with-blocks: no daemon or sleeper left
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--per-host", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--alerts", type=int, default=2_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows, raw = run(
        processes=args.processes,
        hosts=args.hosts,
        per_host=args.per_host,
        runs=args.runs,
        alerts=args.alerts,
    )
    for row in rows:
        value = f"{row.value.median:.2f} {row.unit}" if row.value else "-"
        ratio = f" ({row.ratio.median:.2f}x {row.reference})" if row.ratio else ""
        print(f"{row.verdict:9} {row.metric}: {value}{ratio} {row.note}".rstrip())
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
