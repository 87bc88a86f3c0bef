"""At the daemon's start the rules go live first and run over the whole store after, one at a
time (`load_live`, then `evaluate_in_full` per rule): what history matches is alerted on then,
once, and a rule a later swap changed is left to that swap's own evaluation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from daemoneye import cli
from daemoneye.config.loading import load_config
from daemoneye.config.schema import Config
from daemoneye.daemon.collection import Collection
from daemoneye.daemon.service import DaemonService
from daemoneye.daemon.startup_evaluation import StartupProgress, start_in_full
from daemoneye.engine.detection import DetectionEngine
from daemoneye.errors import StoreError
from daemoneye.ipc.codec import from_wire, to_wire
from daemoneye.models import DaemonStatus, HealthReport, Rule
from daemoneye.paths import Mode
from daemoneye.store import Store
from tests.unit.conftest import DeltaFactory, RecordFactory, own_user_env

T = TypeVar("T")

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


# -- what `health` says meanwhile --------------------------------------------------------------

TWO_MORE = """
[[rule]]
id = "second"
name = "Second"
severity = "low"
query = "SELECT pid, start_time FROM processes WHERE name = 'second-tool'"

[[rule]]
id = "third"
name = "Third"
severity = "low"
query = "SELECT pid, start_time FROM processes WHERE name = 'old-tool'"
"""


class OnThisThread(Executor):
    """The daemon's single worker, as the calling thread: each job runs when it is submitted,
    so the store keeps its one thread and the test sees the jobs in order."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the job's own error, handed to its awaiter
            future.set_exception(exc)
        return future


@pytest.fixture
def collection(store: Store) -> Collection:
    return Collection(store, Config(), mode="user", event_source="starting")


def shown(collection: Collection) -> tuple[str, int, int, int] | None:
    """What the collector's health report says of the startup's evaluation."""
    evaluation = collection.health().startup_evaluation
    if evaluation is None:
        return None
    return evaluation.state, evaluation.rules_done, evaluation.rules_total, evaluation.rules_failed


def run_at_start(
    collection: Collection,
    rules: Sequence[Rule],
    evaluate: Callable[[Rule], object],
    stopping: Callable[[], bool] = lambda: False,
) -> StartupProgress:
    """What the daemon's startup does with the rules `load_live` left to run in full."""
    progress = StartupProgress(len(rules))
    collection.startup_evaluation = progress

    async def started() -> None:
        await start_in_full(rules, evaluate, OnThisThread(), progress, stopping)

    asyncio.run(started())
    return progress


def test_health_says_how_many_rules_have_run_over_history_and_then_when_it_was_done(
    engine: DetectionEngine,
    store: Store,
    rules_dir: Path,
    collection: Collection,
    make_record: RecordFactory,
    make_delta: DeltaFactory,
) -> None:
    """Each rule is counted when its run ends, the one an edit switched off meanwhile too
    (it is skipped, not left uncounted); retention waits until the last has run."""
    (rules_dir / "more.toml").write_text(TWO_MORE)
    store.apply(make_delta(10.0, added=[make_record(100, 10.0, name="old-tool")]))
    pending = engine.load_live()
    assert [rule.id for rule in pending] == ["marker", "second", "third"]
    assert shown(collection) is None  # nothing to say before it starts
    seen_at_each_turn = []

    def evaluate(rule: Rule) -> object:
        seen_at_each_turn.append((shown(collection), collection.retention_held))
        if rule.id == "second":  # an operator switches "third" off before its turn
            (rules_dir / "more.toml").write_text(TWO_MORE + "enabled = false\n")
            engine.load()
        return engine.evaluate_in_full(rule)

    progress = run_at_start(collection, pending, evaluate)

    assert seen_at_each_turn == [
        (("running", 0, 3, 0), True),
        (("running", 1, 3, 0), True),
        (("running", 2, 3, 0), True),
    ]
    assert shown(collection) == ("done", 3, 3, 0)
    assert not collection.retention_held
    assert alerted_pids(store) == [100]  # "marker" alerted on history; "third" was skipped
    report = collection.health().startup_evaluation
    assert report is not None and report.ended_at is not None
    assert report.elapsed_s == progress.snapshot().elapsed_s >= 0.0  # it stops counting


def test_a_rule_whose_run_fails_is_counted_as_failed_and_the_others_still_run(
    engine: DetectionEngine, rules_dir: Path, collection: Collection
) -> None:
    (rules_dir / "more.toml").write_text(TWO_MORE)
    pending = engine.load_live()
    ran = []

    def evaluate(rule: Rule) -> object:
        if rule.id == "second":
            raise StoreError("database disk image is malformed")
        ran.append(rule.id)
        return engine.evaluate_in_full(rule)

    run_at_start(collection, pending, evaluate)
    assert ran == ["marker", "third"]
    assert shown(collection) == ("done", 3, 3, 1)


def test_a_stop_in_the_middle_leaves_it_stopped_not_running_and_releases_retention(
    engine: DetectionEngine, rules_dir: Path, collection: Collection
) -> None:
    """The daemon stops between two rules: the last report it writes says how far it got."""
    (rules_dir / "more.toml").write_text(TWO_MORE)
    pending = engine.load_live()
    ran: list[str] = []

    def evaluate(rule: Rule) -> object:
        ran.append(rule.id)
        return engine.evaluate_in_full(rule)

    run_at_start(collection, pending, evaluate, stopping=lambda: len(ran) == 1)
    assert ran == ["marker"]
    assert shown(collection) == ("stopped", 1, 3, 0)
    assert not collection.retention_held
    collection.close()  # the daemon's last report, in the store for `daemoneye health`
    raw = collection.store.get_meta("health")
    assert raw is not None
    last = from_wire(HealthReport, json.loads(raw)).startup_evaluation
    assert last is not None and (last.state, last.rules_done) == ("stopped", 1)


def test_cancelled_before_its_first_rule_it_ends_stopped_and_releases_retention(
    engine: DetectionEngine, rules_dir: Path, collection: Collection
) -> None:
    """However its task ends, the run ends: a cancel before its first step (the loop closing
    under it) must not leave health saying "running" and retention waiting for ever."""
    pending = engine.load_live()
    progress = StartupProgress(len(pending))
    collection.startup_evaluation = progress

    async def cancelled_at_once() -> None:
        task = start_in_full(
            pending, engine.evaluate_in_full, OnThisThread(), progress, lambda: False
        )
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(cancelled_at_once())
    assert shown(collection) == ("stopped", 0, len(pending), 0)
    assert not collection.retention_held
    progress.rule_ended()  # a job that finished after the end is not counted
    assert shown(collection) == ("stopped", 0, len(pending), 0)


def test_the_health_answer_counts_a_rule_that_ended_since_the_last_tick(
    collection: Collection, cli_env: None
) -> None:
    """IPC's `health` carries the evaluation as it is when asked, not as of the last tick's
    report (a tick may be seconds away), and a client decodes it whole."""
    progress = StartupProgress(3)
    collection.startup_evaluation = progress
    loaded = load_config(mode=Mode.USER, config_file=None, flags={})

    async def ask() -> DaemonStatus:
        service = DaemonService(lambda: loaded, collection, OnThisThread())
        service.feed.health_report = collection.health()  # the last tick's report
        progress.rule_ended()
        try:
            return from_wire(DaemonStatus, to_wire(service.status()))
        finally:
            service.close()

    evaluation = asyncio.run(ask()).report.startup_evaluation
    assert evaluation is not None
    assert (evaluation.state, evaluation.rules_done, evaluation.rules_total) == ("running", 1, 3)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`daemoneye` run here finds no daemon and no config of the user's."""
    own_user_env(tmp_path, monkeypatch, state="xstate")


def health_cli(capsys: pytest.CaptureFixture[str], db: Path, *more: str) -> tuple[int, str]:
    code = cli.main(["health", "--db", str(db), *more])
    return code, capsys.readouterr().out


def assert_startup_row(capsys: pytest.CaptureFixture[str], db: Path, pattern: str) -> None:
    """`daemoneye health` says healthy (exit 0), and its startup evaluation row is `pattern`."""
    code, out = health_cli(capsys, db)
    assert code == 0
    [row] = [line for line in out.splitlines() if line.startswith("startup evaluation")]
    assert re.fullmatch(r"startup evaluation +" + pattern, row), row


def test_daemoneye_health_shows_the_startup_evaluation_running_and_then_done(
    collection: Collection, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """While it runs the daemon is healthy all the same (exit 0), and says what it means:
    alerts about the past may still come."""
    db = collection.store.path
    progress = StartupProgress(3)
    collection.startup_evaluation = progress
    progress.rule_ended()
    collection.write_health()
    assert_startup_row(
        capsys,
        db,
        r"running: 1 of 3 rules over the whole store, \d+\.\ds so far; "
        r"alerts about past processes may still come, retention waits",
    )
    _, out = health_cli(capsys, db, "-o", "json")
    assert json.loads(out)[0]["startup_evaluation"]["state"] == "running"

    progress.rule_ended()
    progress.rule_ended(failed=True)
    progress.end()
    collection.write_health()
    assert_startup_row(
        capsys,
        db,
        r"done at \d\d:\d\d:\d\d: 3 rules over the whole store in "
        r"\d+\.\ds, 1 failed \(the daemon's log says why\)",
    )
