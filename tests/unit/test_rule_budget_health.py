"""A rule that hits its time budget is visible: counted per rule and in total, named in the
engine's health problems (so `daemoneye health` fails) and marked in the rules table."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar, cast

import pytest

from daemoneye.config.schema import Config, LoadedConfig
from daemoneye.daemon.engine_link import EngineLink
from daemoneye.engine.detection import DetectionEngine
from daemoneye.engine.evaluator import MAX_CONSECUTIVE_TIMEOUTS
from daemoneye.models import RuleStatus
from daemoneye.store import Store
from daemoneye.store.readonly import ReadOnlyStore, open_readonly
from daemoneye.tui.logic.rules import rule_facts, rule_row
from tests.unit.conftest import DeltaFactory, RecordFactory

T = TypeVar("T")

RULES = """
[[rule]]
id = "slow"
name = "Slow"
severity = "high"
query = '''
SELECT pid, start_time FROM processes WHERE cmdline REGEXP 'sleep'
'''

[[rule]]
id = "fine"
name = "Fine"
severity = "low"
query = "SELECT pid, start_time FROM processes WHERE name = 'nothing-is-called-this'"
"""


@pytest.fixture
def engine(store: Store, tmp_path: Path) -> Iterator[DetectionEngine]:
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir()
    (rules_dir / "mine.toml").write_text(RULES)
    running = DetectionEngine(store, store.path, Config(), [rules_dir])
    yield running
    running.close()
    running.registry.close()


def test_a_rule_that_times_out_is_named_in_health_and_then_suspended(
    engine: DetectionEngine, store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    engine.load()
    assert engine.status().rule_problems == ()
    # A budget no statement can meet: the REGEXP refuses to start, the rule times out.
    engine.evaluator.time_budget_s = 1e-9
    engine.evaluator.full_time_budget_s = 1e-9
    for tick in range(MAX_CONSECUTIVE_TIMEOUTS):
        delta = make_delta(20.0 + tick, added=[make_record(300 + tick, 20.0 + tick)])
        store.apply(delta)
        engine.on_delta(delta)
        status = engine.status()
        assert status.timeouts_total == tick + 1
        (problem,) = status.rule_problems
        assert "'slow'" in problem
    assert status.rules_suspended == 1
    assert "suspended" in problem
    stats = engine.rule_stats()
    assert (stats["slow"].timeouts, stats["slow"].suspended) == (MAX_CONSECUTIVE_TIMEOUTS, True)
    assert (stats["fine"].timeouts, stats["fine"].suspended) == (0, False)


def test_a_rule_that_recovers_leaves_the_problems_but_keeps_its_count(
    engine: DetectionEngine, store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    engine.load()
    engine.evaluator.time_budget_s = 1e-9
    delta = make_delta(20.0, added=[make_record(300, 20.0)])
    store.apply(delta)
    engine.on_delta(delta)
    assert len(engine.status().rule_problems) == 1
    engine.evaluator.time_budget_s = 10.0
    delta = make_delta(21.0, added=[make_record(301, 21.0)])
    store.apply(delta)
    engine.on_delta(delta)
    status = engine.status()
    assert status.rule_problems == () and status.timeouts_total == 1


def test_the_rules_table_marks_timed_out_and_suspended_rules(engine: DetectionEngine) -> None:
    engine.load()
    rule = engine.registry.current.get("slow")
    assert rule is not None
    quiet = RuleStatus(rule, 0, None, ())
    timed_out = RuleStatus(rule, 0, None, (), timeouts=2)
    suspended = RuleStatus(rule, 0, None, (), timeouts=3, suspended=True)
    assert rule_row(quiet, 0.0).cells[0].tone == ""
    assert rule_row(timed_out, 0.0).cells[0].tone == "medium"
    assert rule_row(suspended, 0.0).cells[0].tone == "critical"
    assert ("timeouts", "3 (hit its time budget): suspended until its query changes") in (
        rule_facts(suspended, 0.0)
    )


def test_switching_a_rule_never_waits_on_the_event_loop_for_a_reload(
    engine: DetectionEngine, store: Store
) -> None:
    """`rules.enable`/`disable` take the registry's lock, which a reload holds while it reads
    and validates every file: the event loop must keep turning meanwhile."""
    engine.load()
    worker = ThreadPoolExecutor(1)

    async def read(work: Callable[[ReadOnlyStore], T]) -> T:
        def run() -> T:
            with open_readonly(store.path) as reader:
                return work(reader)

        return await asyncio.to_thread(run)

    config = cast(LoadedConfig, SimpleNamespace(config=Config()))

    async def scenario() -> tuple[bool, bool]:
        link = EngineLink(engine, worker, read, lambda: config, lambda _: None, lambda _: None)
        lock = engine.registry._lock  # what a reload in the watcher thread holds
        lock.acquire()
        safety = threading.Timer(5.0, lock.release)  # so a broken build fails, not hangs
        safety.start()
        switching = asyncio.create_task(link.set_rule_enabled("fine", False, "test"))
        for _ in range(5):
            await asyncio.sleep(0)
        turned_while_locked = lock.locked() and not switching.done()
        safety.cancel()
        if lock.locked():
            lock.release()
        status = await switching
        await link.close()
        return turned_while_locked, status is not None and not status.rule.enabled

    try:
        assert asyncio.run(scenario()) == (True, True)
    finally:
        worker.shutdown()
