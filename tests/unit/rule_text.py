"""Rule files for the unit tests: one small valid rule as TOML text."""

from __future__ import annotations

import textwrap


def rule_toml(rule_id: str, name: str = "x", query: str | None = None) -> str:
    """A rule that matches processes called `name` (or runs `query`)."""
    query = query or f"SELECT pid, start_time FROM processes WHERE name = '{name}'"
    return textwrap.dedent(f'''
        [[rule]]
        id = "{rule_id}"
        name = "Rule {rule_id}"
        severity = "high"
        query = "{query}"
    ''')
