"""The health screen as label/value pairs, grouped, with a tone for values that need care."""

from __future__ import annotations

from daemoneye.capability_text import (
    NOT_RUNNING,
    capabilities_text,
    exec_capture_text,
    identity,
    kernel_losses_text,
)
from daemoneye.models import (
    DaemonStatus,
    EngineStatus,
    HealthReport,
    ProcessPrivileges,
    StartupEvaluation,
)
from daemoneye.startup_text import startup_evaluation_text
from daemoneye.tui.logic.format import DASH, format_bytes, format_duration, format_time, safe

Fact = tuple[str, str, str]  # label, value, tone ("" or a severity / "dim")


def engine_facts(engine: EngineStatus | None, now: float) -> list[Fact]:
    if engine is None:
        return [("engine", "not running: no rules are evaluated", "medium")]
    reload_text = format_time(engine.last_reload_at, now) or DASH
    facts: list[Fact] = [
        (
            "rules",
            f"{engine.rules_active} active, {engine.rules_rejected} rejected",
            "high" if engine.rules_rejected else "",
        ),
        ("last reload", reload_text, ""),
        ("open alerts", str(engine.alerts_open), "medium" if engine.alerts_open else ""),
        ("sink backlog", str(engine.sink_backlog), "high" if engine.sink_backlog else ""),
    ]
    if engine.rule_timeouts_total or engine.rules_suspended:
        facts.append(
            (
                "rule timeouts",
                f"{engine.rule_timeouts_total} ({engine.rules_suspended} rules suspended)",
                "high" if engine.rules_suspended else "medium",
            )
        )
    if engine.last_reload_error:
        facts.append(("reload error", safe(engine.last_reload_error, 1000), "high"))
    return facts


def startup_facts(evaluation: StartupEvaluation | None, now: float) -> list[Fact]:
    """The start's run of the rules over the whole store: marked while it runs (alerts about
    past processes may still come) and when a rule's run failed."""
    if evaluation is None:
        return []
    tone = "medium" if evaluation.rules_failed else "low" if evaluation.state != "done" else ""
    return [("startup eval", startup_evaluation_text(evaluation, now), tone)]


def _process_facts(
    role: str, privileges: ProcessPrivileges | None, missing: str, missing_tone: str
) -> list[Fact]:
    if privileges is None:
        return [(role, missing, missing_tone)]
    return [
        (role, identity(privileges), ""),
        # The agent should hold nothing once it dropped; root with capabilities is worth a look.
        (
            "capabilities",
            capabilities_text(privileges),
            "medium" if role == "agent" and privileges.permitted else "",
        ),
    ]


def privilege_facts(report: HealthReport) -> list[Fact]:
    """Who runs as whom, holding what: the agent, then procmond."""
    return [
        *_process_facts("agent", report.agent_privileges, "not reported", "dim"),
        *_process_facts("procmond", report.procmond_privileges, NOT_RUNNING, "low"),
    ]


def health_sections(status: DaemonStatus, now: float) -> list[tuple[str, list[Fact]]]:
    report = status.report
    stale = now - report.updated_at > max(5.0, 3 * report.interval_s)
    return [
        (
            "daemon",
            [
                ("version", safe(report.version, 100), ""),
                ("pid / uid", f"{report.daemon_pid} / {report.daemon_uid}", ""),
                (
                    "mode",
                    report.mode
                    + ("" if report.privileged else " (unprivileged: other users' details hidden)"),
                    "" if report.privileged else "medium",
                ),
                ("uptime", format_duration(now - report.started_at), ""),
                *startup_facts(report.startup_evaluation, now),
                (
                    "events",
                    safe(report.event_source, 200),
                    "" if report.event_source == "netlink" else "low",
                ),
                *(
                    [
                        (
                            "exec capture",
                            safe(
                                exec_capture_text(report),
                                200,
                            ),
                            "low" if report.exec_capture.startswith("off") else "",
                        )
                    ]
                    if report.exec_capture
                    else []
                ),
                *(
                    [
                        (
                            "task passes",
                            safe(report.task_passes, 300),
                            "low" if "off" in report.task_passes else "",
                        )
                    ]
                    if report.task_passes
                    else []
                ),
                (
                    "last report",
                    f"{format_duration(now - report.updated_at)} ago",
                    "high" if stale else "",
                ),
                ("clients", str(status.clients), ""),
            ],
        ),
        (
            "collection",
            [
                ("interval", f"{report.interval_s:g} s", ""),
                ("scans", f"{report.ticks}", ""),
                (
                    "scan time",
                    f"{report.last_scan_ms:.1f} ms (avg {report.avg_scan_ms:.1f} ms)",
                    "medium" if report.last_scan_ms > 500 * report.interval_s else "",
                ),
                ("processes", f"{report.processes}", ""),
                ("new / s", f"{report.new_per_second:.1f}", ""),
                (
                    "events lost",
                    kernel_losses_text(report),
                    "medium" if report.events_lost_total or report.events_dropped_total else "",
                ),
                ("denied", f"{report.denied_total}", "low" if report.denied_total else ""),
                ("vanished", f"{report.vanished_total}", ""),
                (
                    "hashes dropped",
                    f"{report.hash_dropped_total}",
                    "medium" if report.hash_dropped_total else "",
                ),
            ],
        ),
        (
            "resources",
            [
                ("daemon cpu", f"{report.daemon_cpu_percent:.1f} %", ""),
                ("daemon rss", format_bytes(report.daemon_rss_bytes), ""),
                ("store", format_bytes(report.store_bytes), ""),
            ],
        ),
        ("engine", engine_facts(status.engine, now)),
        ("privileges", privilege_facts(report)),
    ]


def problems(status: DaemonStatus) -> list[str]:
    found = [safe(problem, 1000) for problem in status.report.problems]
    if status.engine is not None:
        found.extend(safe(problem, 1000) for problem in status.engine.problems)
    return found
