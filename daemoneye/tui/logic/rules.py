"""The rules table: every rule with its state, hits and load problems."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath

from daemoneye.models import Rule, RuleProblem, RuleStatus
from daemoneye.tui.logic.cells import Cell, RowView
from daemoneye.tui.logic.format import DASH, format_time, safe, safe_cell
from daemoneye.tui.logic.severity import label, severity_rank, tone

RULE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mark", " "),
    ("id", "rule"),
    ("severity", "sev"),
    ("enabled", "enabled"),
    ("hits", "hits"),
    ("last_hit", "last hit"),
    ("source", "source"),
)


def rule_source(rule: Rule) -> str:
    """ "file.toml:12" — the file's name and the line of the rule's table."""
    return f"{PurePath(rule.source_file).name}:{rule.source_line}"


def rule_location(rule: Rule) -> str:
    return f"{rule.source_file}:{rule.source_line}"


def ordered(rules: Iterable[RuleStatus]) -> list[RuleStatus]:
    """Rules with problems first, then by severity (worst first), then by id."""
    return sorted(
        rules,
        key=lambda s: (not (s.problems or s.suspended), -severity_rank(s.rule.severity), s.rule.id),
    )


def rule_row(status: RuleStatus, now: float) -> RowView:
    rule = status.rule
    off = "" if rule.enabled else "dim"
    if status.problems or status.suspended:
        mark = Cell("⚠", "critical")
    elif status.timeouts:
        mark = Cell("⚠", "medium")
    else:
        mark = Cell("●" if rule.enabled else "○", "" if rule.enabled else "dim")
    return RowView(
        rule.id,
        (
            mark,
            Cell(safe_cell(rule.id, 40), off),
            Cell(label(rule.severity), tone(rule.severity)),
            Cell("on" if rule.enabled else "off", off),
            Cell(str(status.hits), off, right=True),
            Cell(format_time(status.last_hit, now) or DASH, off),
            Cell(safe_cell(rule_source(rule), 40), off),
        ),
    )


def rule_rows(rules: Iterable[RuleStatus], now: float) -> list[RowView]:
    return [rule_row(status, now) for status in ordered(rules)]


def problem_text(problem: RuleProblem) -> str:
    """ "file:line: rule 'x': message", made printable."""
    return safe(str(problem), 2000)


def rule_facts(status: RuleStatus, now: float) -> list[tuple[str, str]]:
    """Label/value pairs for the rule detail pane."""
    rule = status.rule
    facts = [
        ("rule", safe(rule.id, 200)),
        ("name", safe(rule.name, 500)),
        ("severity", rule.severity),
        ("enabled", "yes" if rule.enabled else "no"),
        ("hits", f"{status.hits}, last {format_time(status.last_hit, now) or 'never'}"),
        ("source", safe(rule_location(rule), 2000)),
    ]
    if status.timeouts or status.suspended:
        facts.append(
            (
                "timeouts",
                f"{status.timeouts} (hit its time budget)"
                + (": suspended until its query changes" if status.suspended else ""),
            )
        )
    if rule.overrides:
        facts.append(("overrides", safe(rule.overrides, 2000)))
    if rule.tags:
        facts.append(("tags", safe(", ".join(rule.tags), 500)))
    facts.extend(sigma_facts(rule))
    if rule.description:  # a TOML multi-line string: its line breaks are not the layout
        facts.append(("about", safe(" ".join(rule.description.split()), 2000)))
    return facts


def sigma_facts(rule: Rule) -> list[tuple[str, str]]:
    """What a rule keeps from Sigma (its id, status, references, false positives); none for
    a rule written in TOML without them."""
    facts: list[tuple[str, str]] = []
    if rule.source_format == "sigma" or rule.sigma_id:
        origin = "Sigma rule" if rule.source_format == "sigma" else "imported from Sigma"
        sigma_id = f" {rule.sigma_id}" if rule.sigma_id else ""
        facts.append(("format", safe(f"{origin}{sigma_id}", 200)))
    if rule.status:
        facts.append(("status", safe(rule.status, 100)))
    if rule.references:
        facts.append(("refs", safe(" ".join(rule.references), 2000)))
    if rule.falsepositives:
        facts.append(("false pos", safe("; ".join(rule.falsepositives), 2000)))
    return facts
