"""The last good rules of a file survive a restart: a daemon that starts while a rule file is
half-written runs that file's last good rules and says so."""

from __future__ import annotations

import stat
from pathlib import Path

from daemoneye.engine.last_good import LastGoodFiles
from daemoneye.engine.reload import RuleRegistry
from daemoneye.engine.rule_loader import RuleValidator
from tests.unit.rule_text import rule_toml


def start(rules_dir: Path, kept_dir: Path, validator: RuleValidator) -> RuleRegistry:
    """A daemon's first load: a fresh registry with nothing in memory."""
    registry = RuleRegistry([rules_dir], validator=validator, kept=LastGoodFiles(kept_dir))
    registry.reload_now()
    return registry


def test_a_file_broken_across_a_restart_runs_its_last_good_rules(
    rules_dir: Path, tmp_path: Path, validator: RuleValidator
) -> None:
    kept_dir = tmp_path / "state" / "rules-last-good"
    path = rules_dir / "mine.toml"
    path.write_text(rule_toml("one", "a") + rule_toml("two", "b"))
    (rules_dir / "other.toml").write_text(rule_toml("three", "c"))
    first = start(rules_dir, kept_dir, validator)
    assert first.current.fallbacks == ()

    path.write_text(rule_toml("one", "a") + "[[rule]]\nid = 'half-writ")  # a half-written save
    second = start(rules_dir, kept_dir, validator)
    assert sorted(r.id for r in second.current.rules) == ["one", "three", "two"]
    (fallback,) = second.current.fallbacks
    assert fallback.startswith(f"rules from {path} are the last good version from 20")
    assert "the file has a problem:" in fallback and "TOML syntax" in fallback
    (problem,) = second.current.problems
    assert "the last good 2 rules of this file stay active" in problem.message

    # kept privately: a directory only the daemon's user can enter, files only it can read
    assert stat.S_IMODE(kept_dir.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in kept_dir.iterdir()} == {0o600}

    path.write_text(rule_toml("one", "z"))  # fixed: the file's own rules again
    third = start(rules_dir, kept_dir, validator)
    assert sorted(r.id for r in third.current.rules) == ["one", "three"]
    assert third.current.fallbacks == () and third.current.problems == ()


def test_a_rule_broken_across_a_restart_keeps_its_last_good_version(
    rules_dir: Path, tmp_path: Path, validator: RuleValidator
) -> None:
    kept_dir = tmp_path / "kept"
    path = rules_dir / "mine.toml"
    path.write_text(rule_toml("one", "a") + rule_toml("two", "b"))
    start(rules_dir, kept_dir, validator)
    path.write_text(rule_toml("one", "a") + rule_toml("two", "b").replace("name =", "nmae ="))
    again = start(rules_dir, kept_dir, validator)
    two = again.current.get("two")
    assert two is not None and "'b'" in two.query
    (fallback,) = again.current.fallbacks
    assert "rules 'two' from" in fallback


def test_unusable_kept_copies_are_ignored(
    rules_dir: Path, tmp_path: Path, validator: RuleValidator
) -> None:
    kept_dir = tmp_path / "kept"
    path = rules_dir / "mine.toml"
    path.write_text(rule_toml("one"))
    start(rules_dir, kept_dir, validator)
    for kept in kept_dir.iterdir():
        kept.write_text('{"version": 1, "path": "elsewhere.toml", "saved_at": 0, "rules": []}')
    path.write_text("[[rule]")
    again = start(rules_dir, kept_dir, validator)
    assert again.current.rules == () and again.current.fallbacks == ()
    assert len(again.current.problems) == 1
