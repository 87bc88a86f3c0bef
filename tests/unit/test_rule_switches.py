"""`rules enable|disable` survive a restart and every reload (engine/rule_switches.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from daemoneye.engine.reload import RuleRegistry
from daemoneye.engine.rule_loader import RuleValidator
from daemoneye.engine.rule_switches import RuleSwitches
from tests.unit.rule_text import rule_toml


def _restart(rules_dir: Path, validator: RuleValidator, file: Path) -> RuleRegistry:
    registry = RuleRegistry([rules_dir], validator=validator, switches=RuleSwitches(file))
    registry.reload_now()
    return registry


def _enabled(registry: RuleRegistry) -> dict[str, bool]:
    return {rule.id: rule.enabled for rule in registry.current.rules}


def test_a_switch_outlives_the_daemon_and_its_reloads(
    rules_dir: Path, validator: RuleValidator, tmp_path: Path
) -> None:
    file = tmp_path / "state" / "rule-switches.json"
    (rules_dir / "a.toml").write_text(rule_toml("one") + rule_toml("two"))
    first = _restart(rules_dir, validator, file)
    assert first.set_enabled("one", False) is not None
    assert json.loads(file.read_text()) == {"one": False}
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    second = _restart(rules_dir, validator, file)  # the daemon started again
    assert _enabled(second) == {"one": False, "two": True}
    second.reload_now()
    (rules_dir / "a.toml").write_text(rule_toml("one", "x") + rule_toml("two"))  # an edit
    second.reload_now()
    assert _enabled(second) == {"one": False, "two": True}
    second.set_enabled("one", True)  # what its file says: the switch goes
    assert json.loads(file.read_text()) == {}
    assert _enabled(_restart(rules_dir, validator, file)) == {"one": True, "two": True}


@pytest.mark.parametrize(
    "content", [b"{not json", b'["one"]', b'{"one": "no"}', b"\xff\xfe", b" " * 300_000]
)
def test_a_damaged_file_is_ignored_and_said(
    content: bytes,
    rules_dir: Path,
    validator: RuleValidator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    file = tmp_path / "rule-switches.json"
    file.write_bytes(content)
    (rules_dir / "a.toml").write_text(rule_toml("one"))
    assert _enabled(_restart(rules_dir, validator, file)) == {"one": True}
    assert "rule switches" in caplog.text


def test_an_unwritable_place_keeps_the_switch_for_this_run(
    rules_dir: Path, validator: RuleValidator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    (rules_dir / "a.toml").write_text(rule_toml("one"))
    registry = _restart(rules_dir, validator, blocker / "rule-switches.json")
    assert registry.set_enabled("one", False) is not None
    assert _enabled(registry) == {"one": False}
    assert "cannot write" in caplog.text
