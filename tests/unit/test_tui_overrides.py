"""Where `o` on a built-in rule leads: a new override, named safely, holding a copy of the
rule's table (tui/logic/overrides.py)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from daemoneye.tui.logic.overrides import override_path, override_plan, rule_table
from tests.fakes.dashboard_source import sample_rules

PACK = """[[rule]]
id = "a"
query = "SELECT 1"

[[rule]]
id = "b"
description = '''
[not a table] inside a string is kept only when it does not start a line
'''
query = "SELECT 2"


[[rule]]
id = "c"
"""


def test_the_table_runs_to_the_next_header() -> None:
    lines = PACK.splitlines()
    assert rule_table(lines, 1) == '[[rule]]\nid = "a"\nquery = "SELECT 1"\n'
    table = rule_table(lines, 5)
    assert table.startswith('[[rule]]\nid = "b"')
    assert table.endswith('query = "SELECT 2"\n')  # through the bracketed line in the string
    assert tomllib.loads(table)["rule"][0]["id"] == "b"


def test_an_id_becomes_a_safe_file_name_inside_the_directory(tmp_path: Path) -> None:
    for hostile in ("../../etc/passwd", "a/b", "..", "x\x00y", "\u202eevil"):
        path = override_path(hostile, tmp_path)
        assert path.parent == tmp_path and path.name.endswith(".override.toml")
        assert "/" not in path.name[: -len(".override.toml")]


def test_only_builtin_rules_get_an_override(tmp_path: Path) -> None:
    rule = sample_rules()[0].rule
    builtin = tmp_path / "builtin"
    assert override_plan(rule, builtin, tmp_path / "user", "x") is None  # not from the pack
    pack = builtin / "pack.toml"
    mine = dataclasses.replace(rule, id="a", source_file=str(pack), source_line=1)
    plan = override_plan(mine, builtin, tmp_path / "user", PACK)
    assert plan is not None and plan.text is not None and plan.line == 5
    parsed = tomllib.loads(plan.text)
    assert parsed == {"rule": [{"id": "a", "query": "SELECT 1"}]}
    wrong_line = dataclasses.replace(mine, source_line=2)
    assert override_plan(wrong_line, builtin, tmp_path / "user", PACK) is None
