"""`o` on a built-in rule: not the installed package's file (which an upgrade overwrites and
the user may not be able to write) but an override in the user's (or, for root, the
system's) rules.d — a rule with the same id there wins over the built-in one. The override
starts as a copy of the built-in rule's table, under a comment that says what it is."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daemoneye.models import Rule

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
# A TOML table header line (`[[rule]]`, `[x.y]`), not a line of a multi-line string that
# happens to start with a bracket.
_HEADER = re.compile(r"^\s*\[\[?\s*[A-Za-z0-9_.\-\" ]+\s*\]\]?\s*(#.*)?$")
HEADER_LINES = 4  # the comment above the copied table


@dataclass(frozen=True, slots=True)
class OverridePlan:
    """Where the override is, what to write there first (None: it exists already: open it as
    it is) and the line to open it at."""

    path: Path
    text: str | None
    line: int


def override_path(rule_id: str, override_dir: Path) -> Path:
    """`<override_dir>/<rule id>.override.toml`, the id made safe as a file name."""
    name = _UNSAFE_NAME.sub("_", rule_id).lstrip(".") or "rule"
    return override_dir / f"{name[:100]}.override.toml"


def rule_table(lines: Sequence[str], start: int) -> str:
    """The `[[rule]]` table that begins at 1-based line `start`: up to the next table header
    line or the end, trailing blank lines dropped."""
    table = [lines[start - 1]]
    for line in lines[start:]:
        if _HEADER.match(line):
            break
        table.append(line)
    while table and not table[-1].strip():
        table.pop()
    return "\n".join(table) + "\n"


def override_plan(
    rule: Rule, builtin_dir: Path, override_dir: Path, builtin_text: str | None
) -> OverridePlan | None:
    """None when `rule` is not a built-in rule or its table cannot be copied alone (open its
    own file); otherwise the override to open. `builtin_text` is the built-in file's text
    (None when it cannot be read here)."""
    source = Path(rule.source_file)
    if source.parent != builtin_dir:
        return None
    path = override_path(rule.id, override_dir)
    if path.exists():
        return OverridePlan(path, None, 1)
    if builtin_text is None:
        return None
    lines = builtin_text.splitlines()
    if not 1 <= rule.source_line <= len(lines) or not lines[rule.source_line - 1].startswith("[["):
        return None
    table = rule_table(lines, rule.source_line)
    try:
        parsed = tomllib.loads(table)
    except tomllib.TOMLDecodeError:
        return None  # not a table this can copy alone: open the built-in file instead
    copied = parsed.get("rule")
    if not (isinstance(copied, list) and len(copied) == 1 and copied[0].get("id") == rule.id):
        return None
    header = (
        f"# Overrides the built-in rule {rule.id!r} ({source.name}:{rule.source_line}).\n"
        "# A rule with the same id here wins over the built-in one; the daemon reloads when\n"
        "# this file is saved. Delete the file to go back to the built-in rule.\n"
        "\n"
    )
    return OverridePlan(path, header + table, HEADER_LINES + 1)
