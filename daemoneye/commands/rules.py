"""`daemoneye rules list|show ID|validate FILE|test RULE-OR-FILE` (`import`: rules_import.py).

Until the IPC client lands these read the rule directories themselves (the same loader the
daemon runs) and the store read-only; none of them touches the daemon's running set.
`validate` exits 2 when the file has problems; `test` prints would-be alerts and raises none.
"""

from __future__ import annotations

import sys
from pathlib import Path

from daemoneye.commands.common import Context, format_time, note, with_daemon
from daemoneye.engine.evaluator import Evaluator
from daemoneye.engine.last_good import LastGoodFiles, directory_for
from daemoneye.engine.rule_file import did_you_mean
from daemoneye.engine.rule_loader import (
    RULE_SUFFIXES,
    RuleSet,
    load_file,
    load_rules,
    rule_files,
)
from daemoneye.errors import DaemonEyeError, QueryError, StoreError
from daemoneye.ipc.client import DaemonClient, DaemonUnavailable, RpcError
from daemoneye.models import Rule, RuleProblem, RulesReload, RuleStatus
from daemoneye.output import render
from daemoneye.paths import BUILTIN_RULES_DIR
from daemoneye.store.readonly import open_readonly

LIST_COLUMNS = (
    "id", "severity", "enabled", "hits", "last_hit", "source", "overrides", "name", "timeouts",
    "format",
)  # fmt: skip
PROBLEM_COLUMNS = ("file", "line", "rule_id", "message")
TEST_COLUMNS = ("rule_id", "severity", "pid", "start_time", "title")

EXIT_PROBLEMS = 2


class RuleNotFound(DaemonEyeError):
    exit_code = 1


class RuleFileProblems(DaemonEyeError):
    exit_code = EXIT_PROBLEMS


def where(file: str, line: int) -> str:
    """`file:line`, with the built-in pack's directory shortened to `built-in/`."""
    path = Path(file)
    shown = f"built-in/{path.name}" if path.parent == BUILTIN_RULES_DIR else file
    return f"{shown}:{line}" if line else shown


def rule_statuses(ctx: Context) -> tuple[RuleSet, list[RuleStatus]]:
    """Every loaded rule with its hits from the store (when there is one) and its problems."""
    # The daemon's kept copies say which broken files it still runs the last good rules of.
    kept = LastGoodFiles(directory_for(ctx.loaded.paths.db), read_only=True)
    ruleset = load_rules(ctx.loaded.paths.rules_dirs, kept=kept)
    hits = _hits(ctx)
    statuses = [
        RuleStatus(
            rule,
            *hits.get(rule.id, (0, None)),
            tuple(p for p in ruleset.problems if p.rule_id == rule.id),
        )
        for rule in ruleset.rules
    ]
    return ruleset, statuses


def _hits(ctx: Context) -> dict[str, tuple[int, float | None]]:
    """Alert counts and last hit per rule; empty when there is no store or no alerts table."""
    try:
        with open_readonly(ctx.loaded.paths.db) as store:
            result = store.query(
                "SELECT rule_id, sum(count), max(last_seen) FROM alerts GROUP BY rule_id",
                max_rows=1_000_000,
            )
    except (StoreError, QueryError):
        return {}
    hits: dict[str, tuple[int, float | None]] = {}
    for rule_id, count, last in result.rows:
        hits[str(rule_id)] = (
            int(count) if isinstance(count, int | float) else 0,
            float(last) if isinstance(last, int | float) else None,
        )
    return hits


def _running_statuses(ctx: Context) -> list[RuleStatus] | None:
    """The running daemon's view (with each rule's timeouts), or None when none answers."""

    async def ask(client: DaemonClient) -> list[RuleStatus]:
        return await client.rules_list()

    try:
        return with_daemon(ctx, ask)
    except (DaemonUnavailable, RpcError):
        if ctx.remote is not None:  # this host's rule files are not that host's
            raise
        return None


def timeouts_text(status: RuleStatus) -> str:
    """ "0", "2", or "3 (suspended)": how often the rule hit its time budget."""
    return f"{status.timeouts} (suspended)" if status.suspended else str(status.timeouts)


def list_rules(ctx: Context) -> int:
    """The rules as the running daemon has them (with their timeouts), or as the rule
    directories hold them when no daemon answers."""
    ruleset, statuses = rule_statuses(ctx)
    running = _running_statuses(ctx)
    if running is not None:
        statuses = running
    table = ctx.output == "table"
    rows = []
    for status in statuses:
        rule = status.rule
        overrides = None
        if rule.overrides:
            file, _, line = rule.overrides.rpartition(":")
            overrides = f"overrides {where(file, int(line))}" if table else rule.overrides
        rows.append(
            (
                rule.id,
                rule.severity,
                ("yes" if rule.enabled else "no") if table else rule.enabled,
                status.hits,
                format_time(status.last_hit) if table else status.last_hit,
                where(rule.source_file, rule.source_line)
                if table
                else f"{rule.source_file}:{rule.source_line}",
                overrides,
                rule.name,
                timeouts_text(status) if table else status.timeouts,
                rule.source_format,
            )
        )
    render(LIST_COLUMNS, rows, ctx.output, sys.stdout, keep=("id",))
    _report(ruleset.problems)
    _report_notices(ruleset.notices)
    for fallback in ruleset.fallbacks:
        note(fallback)
    return 0


def show_rule(ctx: Context, rule_id: str) -> int:
    ruleset, statuses = rule_statuses(ctx)
    status = next((s for s in statuses if s.rule.id == rule_id), None)
    problems = [p for p in ruleset.problems if p.rule_id == rule_id]
    if status is None:
        _report(problems)
        if problems:
            raise RuleNotFound(f"rule {rule_id!r} was rejected (see the problems above)")
        raise RuleNotFound(
            f"no rule {rule_id!r}{did_you_mean(rule_id, [r.id for r in ruleset.rules])}"
        )
    rule = status.rule
    table = ctx.output == "table"
    fields: list[tuple[str, object]] = [
        ("id", rule.id),
        ("name", rule.name),
        ("severity", rule.severity),
        ("enabled", rule.enabled),
        ("tags", ", ".join(rule.tags) if table else rule.tags),
        (
            "source",
            where(rule.source_file, rule.source_line)
            if table
            else f"{rule.source_file}:{rule.source_line}",
        ),
        ("overrides", rule.overrides),
        ("title", rule.title),
        ("dedup_window_s", rule.dedup_window_s),
        ("throttle_s", rule.throttle_s),
        ("hits", status.hits),
        ("last_hit", format_time(status.last_hit) if table else status.last_hit),
        ("format", rule.source_format),
        ("sigma_id", rule.sigma_id),
        ("status", rule.status),
        ("references", "\n".join(rule.references)),
        ("falsepositives", "\n".join(rule.falsepositives)),
        ("description", rule.description.strip()),
        ("query", rule.query.strip()),
    ]
    if table:
        for name, value in fields:
            text = "" if value is None else str(value)
            indent = "\n" + " " * 16
            sys.stdout.write(f"{name:<15} {indent.join(text.splitlines()) or text}\n")
    else:
        render(
            [name for name, _ in fields], [[value for _, value in fields]], ctx.output, sys.stdout
        )
    _report(problems)
    return 0


def validate_rule_file(ctx: Context, path: Path) -> int:
    """Check one file on its own, or every rule file of a directory as the daemon loads it;
    print every problem as `file:line: rule 'id': reason`."""
    if path.is_dir():
        if not rule_files(path):
            raise RuleFileProblems(
                f"{path}: no rule files (*.toml, *.yml, *.yaml) in this directory"
            )
        ruleset = load_rules([path])
    elif path.is_file():
        ruleset = load_file(path)
    else:
        raise RuleFileProblems(f"{path}: no such file or directory")
    _report_notices(ruleset.notices)
    if ctx.output == "table":
        for problem in ruleset.problems:
            sys.stdout.write(f"{problem}\n")
        verdict = f"{len(ruleset.rules)} rule{'s' if len(ruleset.rules) != 1 else ''} valid"
        if ruleset.problems:
            verdict += (
                f", {len(ruleset.problems)} problem{'s' if len(ruleset.problems) != 1 else ''}"
            )
        note(f"{path}: {verdict}")
    else:
        render(
            PROBLEM_COLUMNS,
            [(p.file, p.line, p.rule_id, p.message) for p in ruleset.problems],
            ctx.output,
            sys.stdout,
        )
    return EXIT_PROBLEMS if ruleset.problems else 0


def test_rules(ctx: Context, target: str) -> int:
    """Run a rule (by id) or every rule of a file over the whole store, read-only, and print
    the alerts they would raise. Nothing is written."""
    rules = _rules_to_test(ctx, target)
    evaluator = Evaluator(ctx.loaded.paths.db, rules)
    try:
        result = evaluator.evaluate_full(rules)
    finally:
        evaluator.close()
    table = ctx.output == "table"
    rows = [
        (
            d.rule_id,
            d.severity,
            d.pid,
            format_time(d.start_time) if table else d.start_time,
            d.title,
        )
        for d in result.detections
    ]
    render(TEST_COLUMNS, rows, ctx.output, sys.stdout)
    for failure in result.failures:
        note(f"rule {failure.rule_id!r}: {failure.kind}: {failure.message}")
    timing = ", ".join(f"{rule_id} {ms:.1f} ms" for rule_id, ms in result.timings_ms)
    note(
        f"{len(result.detections)} would-be alert{'s' if len(result.detections) != 1 else ''} "
        f"(none raised); {timing}"
    )
    return 0


def _rules_to_test(ctx: Context, target: str) -> list[Rule]:
    path = Path(target)
    if path.suffix in RULE_SUFFIXES or path.is_file():
        if not path.is_file():
            raise RuleFileProblems(f"{path}: no such file")
        ruleset = load_file(path)
        _report(ruleset.problems)
        _report_notices(ruleset.notices)
        if not ruleset.rules:
            raise RuleFileProblems(f"{path}: no valid rule to test")
        return list(ruleset.rules)
    ruleset = load_rules(ctx.loaded.paths.rules_dirs)
    rule = ruleset.get(target)
    if rule is None:
        _report([p for p in ruleset.problems if p.rule_id == target])
        raise RuleNotFound(
            f"no rule {target!r}{did_you_mean(target, [r.id for r in ruleset.rules])}"
            " (give a rule id, a .toml file or a Sigma .yml file)"
        )
    return [rule]


def _report(problems: tuple[RuleProblem, ...] | list[RuleProblem]) -> None:
    for problem in problems:
        file, line = problem.file, problem.line
        note(str(RuleProblem(where(file, 0), line, problem.rule_id, problem.message)))


def _report_notices(notices: tuple[RuleProblem, ...]) -> None:
    """Rules skipped on purpose (a Sigma rule for another logsource): said, not failed."""
    for notice in notices:
        note(str(RuleProblem(where(notice.file, 0), notice.line, notice.rule_id, notice.message)))


def set_rule_enabled(ctx: Context, rule_id: str, enabled: bool) -> int:
    """`rules enable|disable ID`: an admin request to the running daemon (audited there). The
    daemon keeps the switch across reloads and restarts (rule-switches.json next to the store)
    until it is switched back; switching a rule to what its file says drops the switch."""

    async def ask(client: DaemonClient) -> RuleStatus:
        if enabled:
            return await client.rule_enable(rule_id)
        return await client.rule_disable(rule_id)

    status = with_daemon(ctx, ask)
    rule = status.rule
    enabled_text = ("yes" if rule.enabled else "no") if ctx.output == "table" else rule.enabled
    render(
        ("id", "enabled", "source"),
        [(rule.id, enabled_text, f"{rule.source_file}:{rule.source_line}")],
        ctx.output,
        sys.stdout,
    )
    return 0


def reload_rules(ctx: Context) -> int:
    """`rules reload`: the daemon re-reads every rule directory now (as on a file change or
    SIGHUP); exit 2 when a rule was refused (it keeps its last good version)."""

    async def ask(client: DaemonClient) -> RulesReload:
        return await client.rules_reload()

    outcome = with_daemon(ctx, ask)
    for problem in outcome.problems:
        print(f"daemoneye: {problem}", file=sys.stderr)
    render(("active", "refused"), [(outcome.active, len(outcome.problems))], ctx.output, sys.stdout)
    return 0 if outcome.accepted else 2
