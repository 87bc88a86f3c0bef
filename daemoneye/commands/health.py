"""`daemoneye health`: how the daemon is doing, with a non-zero exit code when it is not well."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import fields

from daemoneye.capability_text import exec_capture_text, kernel_losses_text, privileges_line
from daemoneye.commands.common import Context, format_bytes, format_time, with_daemon_or_store
from daemoneye.ipc.client import DaemonClient
from daemoneye.ipc.codec import from_wire, to_wire
from daemoneye.models import DaemonStatus, HealthReport, HistoryReach
from daemoneye.output import render
from daemoneye.startup_text import startup_evaluation_text
from daemoneye.store.history import history_reach
from daemoneye.store.readonly import ReadOnlyStore
from daemoneye.units import format_uptime

HEALTH_META_KEY = "health"
STALE_AFTER_TICKS = 5  # a report older than this many intervals means the daemon is not ticking
EXIT_UNHEALTHY = 1


def read_health(ctx: Context) -> HealthReport | None:
    """The last report the daemon wrote to the store (None: no daemon ever wrote one)."""
    with ctx.open_store() as store:
        return _report_in(store)


def _report_in(store: ReadOnlyStore) -> HealthReport | None:
    raw = store.get_meta(HEALTH_META_KEY)
    if raw is None:
        return None
    return from_wire(HealthReport, json.loads(raw))  # lenient: an older daemon's report reads


def assess(report: HealthReport, now: float) -> list[str]:
    """Every reason the daemon is not healthy, in words; empty when it is."""
    problems = [p for p in report.problems if not p.startswith("running as uid")]
    age = now - report.updated_at
    stopped = any(p.startswith("the daemon stopped") for p in problems)
    if not stopped and age > max(STALE_AFTER_TICKS * report.interval_s, 10.0):
        problems.insert(
            0,
            f"the last report is {age:.0f}s old: the daemon (pid "
            f"{report.daemon_pid}) is not running or not scanning",
        )
    return problems


def staleness_note(ctx: Context) -> str | None:
    """A sentence for stderr when what the store holds is not live (no daemon is scanning)."""
    report = read_health(ctx)
    if report is None:
        return "no daemon has written to this store yet"
    problems = assess(report, time.time())
    if not problems:
        return None
    return f"{problems[0]}; these are the processes as of {format_time(report.updated_at)}, not now"


def _engine_rows(status: DaemonStatus | None) -> list[tuple[str, str]]:
    if status is None:
        return [("clients", "no daemon is answering on the socket")]
    rows = [("clients", f"{status.clients} connected over IPC")]
    engine = status.engine
    if engine is None:
        return [*rows, ("rules", "the detection engine is not running")]
    rule_set = f"{engine.rules_active} active, {engine.rules_rejected} rejected"
    if engine.last_reload_error:
        rule_set += f"; the last reload was refused ({engine.last_reload_error})"
    elif engine.last_reload_at is not None:
        rule_set += f", loaded {format_time(engine.last_reload_at)}"
    return [
        *rows,
        ("rules", rule_set),
        ("alerts", f"{engine.alerts_open} open"),
        ("sink backlog", f"{engine.sink_backlog} alerts waiting for a sink"),
    ]


def _stream_rows(report: HealthReport) -> list[tuple[str, str]]:
    """The process-event stream, when [stream] names sinks."""
    if not report.stream_sinks:
        return []
    return [
        (
            "event stream",
            f"to {', '.join(report.stream_sinks)}: {report.stream_sent_total} sent, "
            f"{report.stream_queued} waiting, dropped {report.stream_dropped_rate_total} over "
            f"the rate cap and {report.stream_dropped_queue_total} with a full queue, "
            f"{report.stream_refused_total} refused",
        )
    ]


def _host_rows(status: DaemonStatus | None, now: float) -> list[tuple[str, str]]:
    host = status.host if status is not None else None
    if host is None:
        return []
    cores = host.cpu_percent
    average = sum(cores) / len(cores) if cores else 0.0
    return [
        ("host cpu", f"{average:.1f}% of {len(cores)} cores"),
        (
            "host memory",
            f"{format_bytes(host.memory_used)} of {format_bytes(host.memory_total)}, swap "
            f"{format_bytes(host.swap_used)} of {format_bytes(host.swap_total)}",
        ),
        ("host load", " ".join(f"{value:.2f}" for value in host.load)),
        ("host uptime", format_uptime(now - host.boot_time)),
    ]


def show_health(ctx: Context) -> int:
    """The daemon's own answer over IPC, or the last report it wrote to the store."""
    report, status, reach = with_daemon_or_store(
        ctx,
        _health_over_ipc,
        lambda store: (_report_in(store), None, history_reach(store)),
        named_store_first=False,  # about the daemon: its own answer when it runs
    )
    if report is None:
        print(
            "daemoneye: unhealthy: the store holds no health report; has a daemon ever run "
            f"on {ctx.loaded.paths.db}?",
            file=sys.stderr,
        )
        return EXIT_UNHEALTHY
    now = time.time()
    problems = assess(report, now)
    if status is not None and status.engine is not None:
        problems += list(status.engine.problems)
    status_word = "unhealthy" if problems else "ok"
    if ctx.output != "table":
        row: dict[str, object] = {
            "status": status_word,
            **to_wire(report),
        }
        row["problems"] = problems + [p for p in report.problems if p not in problems]
        row["clients"] = status.clients if status is not None else None
        row["history"] = (
            None if reach is None else {f.name: getattr(reach, f.name) for f in fields(reach)}
        )
        engine = status.engine if status is not None else None
        row["engine"] = (
            None if engine is None else {f.name: getattr(engine, f.name) for f in fields(engine)}
        )
        host = status.host if status is not None else None
        row["host"] = (
            None if host is None else {f.name: getattr(host, f.name) for f in fields(host)}
        )
        render(tuple(row), [tuple(row.values())], ctx.output, sys.stdout)
        return EXIT_UNHEALTHY if problems else 0
    uptime = report.updated_at - report.started_at
    rows = [
        ("status", status_word),
        (
            "daemon",
            f"pid {report.daemon_pid}, uid {report.daemon_uid}, version {report.version},"
            f" {report.mode} mode",
        ),
        ("uptime", f"{uptime:.0f}s (since {format_time(report.started_at, now)})"),
        *(
            [("startup evaluation", startup_evaluation_text(report.startup_evaluation, now))]
            if report.startup_evaluation is not None
            else []
        ),
        ("last report", f"{now - report.updated_at:.1f}s ago"),
        (
            "coverage",
            "all processes"
            if report.privileged
            else "own processes in full, others without exe/cwd/hash",
        ),
        (
            "event source",
            report.event_source + (f" ({report.event_filter})" if report.event_filter else ""),
        ),
        *([("exec capture", exec_capture_text(report))] if report.exec_capture else []),
        *([("task passes", report.task_passes)] if report.task_passes else []),
        (
            "scan",
            f"every {report.interval_s:g}s, last {report.last_scan_ms:.1f} ms, "
            f"average {report.avg_scan_ms:.1f} ms over {report.ticks} ticks",
        ),
        ("processes", f"{report.processes} live"),
        ("events", f"{report.new_per_second:.2f} new processes/s (last minute)"),
        ("events lost", kernel_losses_text(report)),
        ("denied", f"{report.denied_total} reads refused (permission)"),
        ("vanished", f"{report.vanished_total} processes gone mid-read (normal)"),
        ("hash queue", f"{report.hash_dropped_total} executables not hashed (queue full)"),
        ("store", format_bytes(report.store_bytes)),
        ("history", history_text(reach, now)),
        ("daemon cpu", f"{report.daemon_cpu_percent:.1f}% of a core"),
        ("daemon rss", format_bytes(report.daemon_rss_bytes)),
        (
            "procmond",
            (
                f"pid {report.procmond_pid}, {format_bytes(report.procmond_rss_bytes)}, "
                f"{report.procmond_cpu_percent:.1f}% of a core"
                if report.procmond_pid
                else "not running"
            )
            + f"; {report.procmond_restarts} restarts, {report.procmond_gap_s:.1f}s without a "
            f"collector, up to {report.procmond_missed_upper} events possibly missed",
        ),
        *_engine_rows(status),
        *_stream_rows(report),
        ("agent runs as", privileges_line(report.agent_privileges)),
        ("procmond runs as", privileges_line(report.procmond_privileges)),
        *_host_rows(status, now),
    ]
    rows += [("problem", p) for p in problems]
    rows += [("note", p) for p in report.problems if p not in problems]
    render(("check", "value"), rows, "table", sys.stdout, max_width=10**6)
    return EXIT_UNHEALTHY if problems else 0


def history_text(reach: HistoryReach | None, now: float) -> str:
    """How far back the store's history reaches, for people."""
    if reach is None:
        return "unknown (the daemon did not say)"
    if reach.oldest is None:
        return "none yet"
    span = format_uptime(now - reach.oldest)  # '3h 00m', not '10801s'
    return (
        f"from {format_time(reach.oldest, now)} ({span} back), {reach.instances} process instances"
    )


async def _health_over_ipc(
    client: DaemonClient,
) -> tuple[HealthReport | None, DaemonStatus, HistoryReach | None]:
    status = await client.health()
    return status.report, status, status.history
