"""At the daemon's start the rules go live first and run over the whole store after, one at a
time (`load_live`, then `evaluate_in_full` per rule): what history matches is alerted on then,
once, and a rule a later swap changed is left to that swap's own evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.config.schema import Config
from daemoneye.engine.detection import DetectionEngine
from daemoneye.store import Store
from tests.unit.conftest import DeltaFactory, RecordFactory

RULE = """
[[rule]]
id = "marker"
name = "Marker"
severity = "high"
query = "SELECT pid, start_time FROM processes WHERE name = '{name}'"
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    path = tmp_path / "rules.d"
    path.mkdir()
    (path / "mine.toml").write_text(RULE.format(name="old-tool"))
    return path


@pytest.fixture
def engine(store: Store, rules_dir: Path) -> Iterator[DetectionEngine]:
    running = DetectionEngine(store, store.path, Config(), [rules_dir])
    yield running
    running.close()
    running.registry.close()


def alerted_pids(store: Store) -> list[int]:
    return [int(pid) for (pid,) in store.fetch_rows("SELECT pid FROM alerts")]  # type: ignore[arg-type]


def test_rules_are_live_before_they_run_over_history_and_alert_on_it_once(
    engine: DetectionEngine, store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    history = make_delta(10.0, added=[make_record(100, 10.0, name="old-tool")])
    store.apply(history)
    (pending,) = engine.load_live()
    assert pending.id == "marker"
    assert alerted_pids(store) == []  # live, not yet run over the store
    fresh = make_delta(20.0, added=[make_record(200, 20.0, name="old-tool")])
    store.apply(fresh)
    engine.on_delta(fresh)  # a tick before the full run: the new instance alerts at once
    assert alerted_pids(store) == [200]
    assert [c.alert.pid for c in engine.evaluate_in_full(pending)] == [100]
    assert sorted(alerted_pids(store)) == [100, 200]  # history once, the tick's not again
    assert engine.evaluate_in_full(pending) == []


def test_a_rule_changed_before_its_turn_is_not_run_in_its_old_form(
    engine: DetectionEngine,
    store: Store,
    rules_dir: Path,
    make_record: RecordFactory,
    make_delta: DeltaFactory,
) -> None:
    store.apply(make_delta(10.0, added=[make_record(100, 10.0, name="old-tool")]))
    (pending,) = engine.load_live()
    (rules_dir / "mine.toml").write_text(RULE.format(name="new-tool"))
    engine.load()  # the edit's own swap evaluates the new text over the store
    assert engine.evaluate_in_full(pending) == []
    assert alerted_pids(store) == []


def test_a_new_title_or_severity_before_its_turn_still_runs_the_rule_over_history(
    engine: DetectionEngine,
    store: Store,
    rules_dir: Path,
    make_record: RecordFactory,
    make_delta: DeltaFactory,
) -> None:
    """An edit that keeps the query (a new severity, a comment line above the rule: its place
    in the file) does not make the reload run it over the store; its queued turn still does,
    as the rule now reads."""
    store.apply(make_delta(10.0, added=[make_record(100, 10.0, name="old-tool")]))
    (pending,) = engine.load_live()
    edited = "# reviewed\n" + RULE.format(name="old-tool").replace('"high"', '"critical"')
    (rules_dir / "mine.toml").write_text(edited)
    assert engine.load().changed == ()  # the same query: no evaluation of its own
    (change,) = engine.evaluate_in_full(pending)
    assert change.alert.pid == 100 and change.alert.severity == "critical"
