"""`daemoneye rules import`: Sigma rules → a TOML rule file whose SQL you can edit.

The TOML carries what the Sigma rule loads as (the converted query, severity, tags) and its
Sigma metadata (sigma_id, status, references, falsepositives), so the imported rule behaves
exactly like the Sigma file would. Its id is the Sigma id: put the TOML where the Sigma file
was, or in a later rule directory, and it overrides the Sigma rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import tomlkit

from daemoneye.engine.rule_file import MAX_FIELD_CHARS
from daemoneye.models import Rule, RuleProblem


@dataclass(frozen=True, slots=True)
class Imported:
    """The TOML text for one Sigma file and the rules it could not carry."""

    text: str
    rules: tuple[Rule, ...]
    problems: tuple[RuleProblem, ...]


def to_toml(source: str, rules: Sequence[Rule]) -> Imported:
    """A TOML rule file holding `rules` (converted from the Sigma file `source`)."""
    document = tomlkit.document()
    document.add(tomlkit.comment(f"Converted from the Sigma rules in {source}"))
    document.add(tomlkit.comment("by `daemoneye rules import`. Keep the Sigma rule's licence."))
    tables = tomlkit.aot()
    carried: list[Rule] = []
    problems: list[RuleProblem] = []
    for rule in rules:
        if len(rule.query) > MAX_FIELD_CHARS["query"]:
            problems.append(
                RuleProblem(
                    rule.source_file,
                    rule.source_line,
                    rule.id,
                    f"its SQL is {len(rule.query)} characters long, more than a TOML rule may "
                    f"hold ({MAX_FIELD_CHARS['query']}): keep it as a Sigma file",
                )
            )
            continue
        tables.append(_table(rule))
        carried.append(rule)
    document.add("rule", tables)
    return Imported(tomlkit.dumps(document), tuple(carried), tuple(problems))


def _table(rule: Rule) -> tomlkit.items.Table:
    table = tomlkit.table()
    table.add("id", rule.id)
    table.add("name", rule.name)
    if rule.description:
        table.add("description", _multiline(rule.description))
    table.add("severity", rule.severity)
    if not rule.enabled:
        table.add("enabled", False)
    table.add("tags", list(rule.tags))
    if rule.sigma_id is not None:
        table.add("sigma_id", rule.sigma_id)
    if rule.status is not None:
        table.add("status", rule.status)
    if rule.references:
        table.add("references", _list(rule.references))
    if rule.falsepositives:
        table.add("falsepositives", _list(rule.falsepositives))
    table.add("query", _multiline(rule.query))
    return table


def _multiline(text: str) -> tomlkit.items.String:
    body = text.rstrip("\n") + "\n"
    if "'''" not in text and all(c == "\t" or c >= " " or c == "\n" for c in text):
        return tomlkit.string(body, literal=True, multiline=True)
    return tomlkit.string(body, multiline=True)


def _list(items: Sequence[str]) -> tomlkit.items.Array:
    array = tomlkit.array()
    array.extend(items)
    if len(items) > 1:
        array.multiline(True)
    return array
