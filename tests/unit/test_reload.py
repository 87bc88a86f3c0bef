"""Hot reload: a good edit goes live, a broken one is refused (the last good version keeps
running) and reported; the watcher sees saves, rename-saves, files moved in and directories
created after it started."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from daemoneye.engine.reload import ReloadOutcome, RuleRegistry, watch_rules, watch_targets
from daemoneye.engine.rule_loader import RuleValidator
from tests.unit.rule_text import rule_toml


@pytest.fixture
def registry(rules_dir: Path, validator: RuleValidator) -> RuleRegistry:
    return RuleRegistry([rules_dir], validator=validator)


def queries(registry: RuleRegistry) -> dict[str, str]:
    return {rule.id: rule.query for rule in registry.current.rules}


def test_a_valid_file_loads_and_a_good_edit_swaps_in(
    rules_dir: Path, registry: RuleRegistry
) -> None:
    path = rules_dir / "a.toml"
    path.write_text(rule_toml("one", "a") + rule_toml("two", "b"))
    first = registry.reload_now()
    assert (first.generation, first.swapped, first.problems) == (1, True, ())
    assert {rule.id for rule in first.changed} == {"one", "two"}

    path.write_text(rule_toml("one", "a") + rule_toml("two", "c"))
    second = registry.reload_now()
    assert (second.generation, [r.id for r in second.changed]) == (2, ["two"])
    assert "'c'" in queries(registry)["two"]

    unchanged = registry.reload_now()
    assert (unchanged.swapped, unchanged.generation, unchanged.changed) == (False, 2, ())


def test_an_invalid_rule_keeps_its_last_good_version(
    rules_dir: Path, registry: RuleRegistry
) -> None:
    path = rules_dir / "a.toml"
    path.write_text(rule_toml("one", "a") + rule_toml("two", "b"))
    registry.reload_now()
    path.write_text(rule_toml("one", "z") + rule_toml("two", query="SELECT pid FROM nowhere"))
    outcome = registry.reload_now()
    assert "'z'" in queries(registry)["one"]  # the good edit in the same file went live
    assert "'b'" in queries(registry)["two"]  # the broken one did not
    (problem,) = outcome.problems
    assert (problem.file, problem.rule_id) == (str(path), "two")
    assert "no such table: nowhere" in problem.message
    assert problem.message.endswith("(its last good version stays active)")
    assert [r.id for r in outcome.changed] == ["one"]


def test_a_half_written_file_keeps_the_files_last_good_rules(
    rules_dir: Path, registry: RuleRegistry
) -> None:
    path = rules_dir / "a.toml"
    other = rules_dir / "b.toml"
    path.write_text(rule_toml("one") + rule_toml("two"))
    other.write_text(rule_toml("three"))
    registry.reload_now()
    before = registry.current.rules
    text = rule_toml("one") + rule_toml("two", "new")
    path.write_text(text[: text.index("severity", 60)] + 'severity = "hi')  # cut mid-write
    other.write_text(rule_toml("three", "changed"))
    outcome = registry.reload_now()
    assert [r for r in registry.current.rules if r.id != "three"] == [
        r for r in before if r.id != "three"
    ]
    assert "'changed'" in queries(registry)["three"]
    (problem,) = outcome.problems
    assert problem.file == str(path) and problem.line > 0
    assert "TOML syntax" in problem.message
    assert "(the last good 2 rules of this file stay active)" in problem.message
    # the file is finished: everything is current again and the problem is gone
    path.write_text(text)
    done = registry.reload_now()
    assert done.problems == () and "'new'" in queries(registry)["two"]


def test_a_new_invalid_rule_is_reported_not_loaded(rules_dir: Path, registry: RuleRegistry) -> None:
    (rules_dir / "a.toml").write_text(rule_toml("good") + rule_toml("bad", query="SELECT 1"))
    outcome = registry.reload_now()
    assert list(queries(registry)) == ["good"]
    assert [(p.rule_id, "missing: pid, start_time" in p.message) for p in outcome.problems] == [
        ("bad", True)
    ]


def test_deleting_a_file_removes_its_rules(rules_dir: Path, registry: RuleRegistry) -> None:
    (rules_dir / "a.toml").write_text(rule_toml("one"))
    (rules_dir / "b.toml").write_text(rule_toml("two"))
    registry.reload_now()
    (rules_dir / "b.toml").unlink()
    outcome = registry.reload_now()
    assert (list(queries(registry)), outcome.removed) == (["one"], ("two",))


def test_enable_switches_survive_reloads(rules_dir: Path, registry: RuleRegistry) -> None:
    (rules_dir / "a.toml").write_text(rule_toml("one"))
    registry.reload_now()
    assert registry.set_enabled("nope", False) is None
    off = registry.set_enabled("one", False)
    assert off is not None and off.ruleset.enabled == ()
    (rules_dir / "a.toml").write_text(rule_toml("one", "edited"))
    assert registry.reload_now().ruleset.enabled == ()
    on = registry.set_enabled("one", True)
    assert on is not None and [r.id for r in on.changed] == ["one"]


def test_only_existing_rule_directories_are_watched(tmp_path: Path) -> None:
    """Never an ancestor: for a missing /etc/daemoneye that would be /etc itself, where every
    program start is an event. Missing directories are looked for at each recheck."""
    existing = tmp_path / "etc" / "rules.d"
    existing.mkdir(parents=True)
    missing = tmp_path / "home" / "config" / "daemoneye" / "rules.d"
    assert watch_targets([existing, missing, existing]) == (existing,)
    assert watch_targets([missing]) == ()


# -- the watcher, for real --------------------------------------------------------------------


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> float:
    """Seconds until `predicate` holds (polling); fails the test after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def run_watching(
    dirs: list[Path],
    validator: RuleValidator,
    scenario: Callable[[RuleRegistry, list[ReloadOutcome]], Awaitable[None]],
) -> None:
    """Run `scenario` against a registry whose watcher runs on the same event loop."""
    registry = RuleRegistry(dirs, validator=validator)
    registry.reload_now()
    outcomes: list[ReloadOutcome] = []

    async def main() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_rules(registry, outcomes.append, stop_event=stop))
        await asyncio.sleep(0.3)  # let the watch start
        try:
            await scenario(registry, outcomes)
        finally:
            stop.set()
            await asyncio.wait_for(watcher, 10)

    asyncio.run(main())


def test_watcher_reloads_saves_and_measures_latency(
    rules_dir: Path, validator: RuleValidator
) -> None:
    latencies: list[float] = []

    async def scenario(registry: RuleRegistry, outcomes: list[ReloadOutcome]) -> None:
        def has(version: str) -> Callable[[], bool]:
            return lambda: version in queries(registry).get("one", "")

        for n in range(5):
            (rules_dir / "a.toml").write_text(rule_toml("one", f"v{n}"))
            latencies.append(await _until(has(f"'v{n}'"), f"version {n}"))
            await asyncio.sleep(0.3)

    run_watching([rules_dir], validator, scenario)
    print(
        f"\nrule file saved -> rule active: {[round(s * 1000) for s in latencies]} ms "
        "(target 1000 ms)"
    )


def test_watcher_sees_rename_saves_and_files_moved_in(
    rules_dir: Path, tmp_path: Path, validator: RuleValidator
) -> None:
    async def scenario(registry: RuleRegistry, outcomes: list[ReloadOutcome]) -> None:
        swap = rules_dir / ".a.toml.swp"  # the editor's temp file is ignored …
        swap.write_text(rule_toml("renamed"))
        os.replace(swap, rules_dir / "a.toml")  # … the rename over the real name is not
        await _until(lambda: "renamed" in queries(registry), "the rename-save")
        outside = tmp_path / "incoming.toml"
        outside.write_text(rule_toml("moved"))
        os.replace(outside, rules_dir / "moved.toml")
        await _until(lambda: "moved" in queries(registry), "the file moved in")

    run_watching([rules_dir], validator, scenario)


def test_watcher_keeps_the_last_good_rules_on_broken_saves(
    rules_dir: Path, validator: RuleValidator
) -> None:
    async def scenario(registry: RuleRegistry, outcomes: list[ReloadOutcome]) -> None:
        (rules_dir / "a.toml").write_text(rule_toml("one", "good"))
        await _until(lambda: "one" in queries(registry), "the valid file")
        (rules_dir / "a.toml").write_text('[[rule]]\nid = "one"\nquery = """SELECT')
        await _until(lambda: bool(registry.current.problems), "the half-written file")
        assert "'good'" in queries(registry)["one"]
        (rules_dir / "a.toml").write_text(rule_toml("one", query="SELECT pid FROM processes"))
        await _until(
            lambda: "missing: start_time" in str(registry.current.problems), "the invalid rule"
        )
        assert "'good'" in queries(registry)["one"]
        # The registry swaps in the worker thread; the outcome reaches us on the loop after.
        await _until(
            lambda: bool(outcomes) and outcomes[-1].ruleset is registry.current,
            "the outcome of that reload",
        )

    run_watching([rules_dir], validator, scenario)


def test_watcher_sees_a_rules_directory_created_later(
    tmp_path: Path, validator: RuleValidator
) -> None:
    later = tmp_path / "config" / "daemoneye" / "rules.d"

    async def scenario(registry: RuleRegistry, outcomes: list[ReloadOutcome]) -> None:
        later.mkdir(parents=True)
        await asyncio.sleep(0.3)
        (later / "a.toml").write_text(rule_toml("late"))
        await _until(lambda: "late" in queries(registry), "a rule in the new directory")
        (later / "a.toml").write_text(rule_toml("later"))
        await _until(lambda: "later" in queries(registry), "an edit in the new directory")

    run_watching([later], validator, scenario)


def test_a_save_made_before_the_watch_starts_is_caught(
    rules_dir: Path, validator: RuleValidator
) -> None:
    """The daemon reads its rules, then starts watching: a file saved in between must not
    wait for the next edit."""
    registry = RuleRegistry([rules_dir], validator=validator)
    registry.reload_now()
    (rules_dir / "a.toml").write_text(rule_toml("early"))
    outcomes: list[ReloadOutcome] = []

    async def main() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_rules(registry, outcomes.append, stop_event=stop))
        try:
            await _until(lambda: "early" in queries(registry), "the save made before the watch")
        finally:
            stop.set()
            await asyncio.wait_for(watcher, 10)

    asyncio.run(main())
    assert [outcome.swapped for outcome in outcomes] == [True], "reported once, as a swap"


def test_a_rules_directory_deleted_and_made_again_is_followed(
    rules_dir: Path, validator: RuleValidator
) -> None:
    import shutil

    async def scenario(registry: RuleRegistry, outcomes: list[ReloadOutcome]) -> None:
        (rules_dir / "a.toml").write_text(rule_toml("kept"))
        await _until(lambda: "kept" in queries(registry), "the first rule")
        shutil.rmtree(rules_dir)
        await _until(lambda: "kept" not in queries(registry), "the directory's removal")
        rules_dir.mkdir()
        (rules_dir / "b.toml").write_text(rule_toml("back"))
        await _until(lambda: "back" in queries(registry), "a rule in the directory made again")
        (rules_dir / "b.toml").write_text(rule_toml("edited"))
        await _until(lambda: "edited" in queries(registry), "an edit after it came back")

    run_watching([rules_dir], validator, scenario)
