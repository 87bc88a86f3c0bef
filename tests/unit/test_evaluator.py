"""Evaluation: per tick a rule sees only the changed instances and this tick's events, yet can
join `all_processes` for context; a full evaluation sees everything."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from daemoneye.engine.evaluator import Evaluator, changed_keys, render_title
from daemoneye.models import ProcessEvent, ProcessKey, Rule
from daemoneye.store import Store, open_readonly
from daemoneye.store.sandbox import ReadOnlyAuthorizer
from tests.unit.conftest import DeltaFactory, RecordFactory

SHELL_UNDER_NGINX = """
SELECT p.pid, p.start_time, p.name, parent.name AS parent_name
FROM processes p
JOIN all_processes parent
  ON parent.pid = p.ppid AND parent.start_time <= p.start_time
 AND (parent.ended_at IS NULL OR parent.ended_at >= p.start_time)
WHERE p.name = 'sh' AND parent.name = 'nginx'
"""


def rule(rule_id: str, query: str, title: str | None = None) -> Rule:
    return Rule(
        rule_id, f"Rule {rule_id}", "", "high", True, (), query, title, None, None, "t.toml", 1
    )


@pytest.fixture
def evaluator(store: Store) -> Iterator[Evaluator]:
    opened = Evaluator(store.path)
    yield opened
    opened.close()


def test_a_tick_sees_only_changed_instances_but_reaches_the_parent_through_all_processes(
    store: Store, evaluator: Evaluator, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    nginx = make_record(10, 1.0, name="nginx")
    old_shell = make_record(11, 2.0, ppid=10, name="sh")
    store.apply(make_delta(2.0, added=[nginx, old_shell]))
    evaluator.set_rules(
        [
            rule("shell", SHELL_UNDER_NGINX, "{parent_name} spawned {name}"),
            rule("everything", "SELECT pid, start_time FROM processes"),
            rule("live", "SELECT pid, start_time FROM live_processes"),
            rule("history", "SELECT pid, start_time FROM all_processes"),
        ]
    )
    new_shell = make_record(12, 3.0, ppid=10, name="sh")
    store.apply(make_delta(3.0, added=[new_shell]))

    result = evaluator.evaluate_changes([new_shell.key])

    by_rule: dict[str, list[int]] = {}
    for detection in result.detections:
        by_rule.setdefault(detection.rule_id, []).append(detection.pid)
    assert by_rule == {"shell": [12], "everything": [12], "live": [12], "history": [10, 11, 12]}
    assert result.instances == 1
    (shell,) = [d for d in result.detections if d.rule_id == "shell"]
    assert (shell.title, shell.start_time, shell.severity) == ("nginx spawned sh", 3.0, "high")
    assert dict(shell.row)["parent_name"] == "nginx"

    full = evaluator.evaluate_full()
    assert sorted(d.pid for d in full.detections if d.rule_id == "shell") == [11, 12]
    assert sorted(d.pid for d in full.detections if d.rule_id == "everything") == [10, 11, 12]


def test_shadow_tables_are_refilled_every_tick(
    store: Store, evaluator: Evaluator, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    evaluator.set_rules([rule("all", "SELECT pid, start_time FROM processes")])
    first, second = make_record(20, 1.0), make_record(21, 2.0)
    store.apply(make_delta(1.0, added=[first]))
    assert [d.pid for d in evaluator.evaluate_changes([first.key]).detections] == [20]
    store.apply(make_delta(2.0, added=[second]))
    assert [d.pid for d in evaluator.evaluate_changes([second.key]).detections] == [21]
    nothing = evaluator.evaluate_changes([])
    assert (nothing.detections, nothing.instances, nothing.timings_ms) == ((), 0, ())


def test_a_tick_sees_only_its_new_events(
    store: Store, evaluator: Evaluator, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    evaluator.set_rules(
        [rule("execs", "SELECT pid, start_time FROM process_events WHERE kind = 'exec'")]
    )
    old = make_record(30, 1.0)
    store.apply(make_delta(1.0, added=[old], events=[ProcessEvent(1.0, "exec", 30, 1.0)]))
    first = evaluator.evaluate_changes([])
    assert [d.pid for d in first.detections] == [30]
    new = make_record(31, 2.0)
    store.apply(make_delta(2.0, added=[new], events=[ProcessEvent(2.0, "exec", 31, 2.0)]))
    second = evaluator.evaluate_changes([])
    assert [d.pid for d in second.detections] == [31]
    assert second.last_event_id == 2
    # an explicit starting point replays from there
    assert [d.pid for d in evaluator.evaluate_changes([], since_event_id=0).detections] == [30, 31]


def test_an_ended_instance_in_the_tick_is_visible_to_processes_not_live_processes(
    store: Store, evaluator: Evaluator, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    quick = make_record(40, 1.0, ended_at=1.5)
    store.apply(make_delta(2.0, added=[quick]))
    evaluator.set_rules(
        [
            rule("p", "SELECT pid, start_time FROM processes"),
            rule("l", "SELECT pid, start_time FROM live_processes"),
        ]
    )
    result = evaluator.evaluate_changes([quick.key])
    assert [(d.rule_id, d.pid) for d in result.detections] == [("p", 40)]


def test_one_detection_per_instance_and_rows_without_one_are_skipped(
    store: Store, evaluator: Evaluator, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    store.apply(make_delta(1.0, added=[make_record(50, 1.0), make_record(51, 1.0)]))
    evaluator.set_rules(
        [
            rule(
                "dup",
                """
        SELECT p.pid, p.start_time FROM processes p, json_each(p.argv)
        UNION ALL SELECT NULL, NULL
        UNION ALL SELECT 'x', 1.0
    """,
            )
        ]
    )
    result = evaluator.evaluate_full()
    assert sorted(d.pid for d in result.detections) == [50, 51]


def test_a_disabled_rule_does_not_run_unless_asked_for(
    store: Store, evaluator: Evaluator, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    store.apply(make_delta(1.0, added=[make_record(60, 1.0)]))
    off = Rule(
        "off",
        "Off",
        "",
        "low",
        False,
        (),
        "SELECT pid, start_time FROM processes",
        None,
        None,
        None,
        "t.toml",
        1,
    )
    evaluator.set_rules([off])
    assert evaluator.evaluate_full().detections == ()
    assert evaluator.evaluate_changes([ProcessKey(60, 1.0)]).detections == ()
    assert [d.pid for d in evaluator.evaluate_full([off]).detections] == [60]


def test_titles() -> None:
    templated = rule("t", "", "{name} ({pid}) from {exe}")
    row = (("pid", 7), ("start_time", 1.0), ("name", "nc"), ("exe", None))
    assert render_title(templated, row) == "nc (7) from "
    assert render_title(rule("n", ""), row) == "Rule n: nc (pid 7)"
    assert render_title(rule("n", ""), (("pid", 7), ("start_time", 1.0))) == "Rule n (pid 7)"


def test_query_command_sees_all_processes_as_the_whole_table(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    store.apply(make_delta(1.0, added=[make_record(70, 1.0), make_record(71, 1.0)]))
    with open_readonly(store.path) as reader:
        assert reader.query("SELECT count(*) FROM all_processes").rows == ((2,),)


def test_changed_keys_are_new_and_execed_instances(
    make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    a, b, c = make_record(1, 1.0), make_record(2, 1.0), make_record(3, 1.0)
    delta = make_delta(2.0, added=[a], execed=[b, a], updated=[c])
    assert changed_keys(delta) == (a.key, b.key)


def test_the_evaluator_reads_what_the_writer_committed_last(
    store: Store, evaluator: Evaluator, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    evaluator.set_rules([rule("sh", "SELECT pid, start_time FROM processes WHERE name = 'sh'")])
    record = make_record(80, 1.0, name="bash")
    store.apply(make_delta(1.0, added=[record]))
    assert evaluator.evaluate_changes([record.key]).detections == ()
    execed = make_record(80, 1.0, name="sh")
    store.apply(make_delta(2.0, execed=[execed]))
    assert [d.pid for d in evaluator.evaluate_changes([execed.key]).detections] == [80]


def test_a_tick_evaluates_exactly_the_instances_named_whatever_their_start_times(
    store: Store, evaluator: Evaluator, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    # Start times whose decimal form is long or awkward, and one pid reused: each instance
    # named is evaluated, the same pid's other instance is not.
    starts = [0.1 + 0.2, 1_765_143_035.07, 5e-324, 2.0**53 + 2.0, 1e-7]
    records = [make_record(100 + i, start) for i, start in enumerate(starts)]
    reused = make_record(100, 9.5)
    store.apply(make_delta(10.0, added=[*records, reused]))
    evaluator.set_rules([rule("all", "SELECT pid, start_time FROM processes")])

    result = evaluator.evaluate_changes([r.key for r in records])

    assert sorted((d.pid, d.start_time) for d in result.detections) == sorted(
        (r.pid, r.start_time) for r in records
    )
    assert result.instances == len(records)


def test_a_tick_of_many_instances_leaves_the_rules_prepared(
    store: Store, evaluator: Evaluator, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    # Preparing a rule's statement asks the sandbox's authorizer about every table and
    # function it reads; a prepared statement that is reused asks nothing.
    evaluator.set_rules(
        [rule(f"r{i}", f"SELECT pid, start_time FROM processes WHERE pid = {i}") for i in range(20)]
    )
    first = [make_record(1000 + i, 1.0) for i in range(2000)]
    store.apply(make_delta(1.0, added=first))
    evaluator.evaluate_changes([r.key for r in first])
    second = [make_record(5000 + i, 2.0) for i in range(2000)]
    store.apply(make_delta(2.0, added=second))
    asked: list[int] = []

    class Counting(ReadOnlyAuthorizer):
        def __call__(self, action: int, *names: str | None) -> int:
            asked.append(action)
            return super().__call__(action, *names)

    evaluator._delta.authorizer.policy = Counting()
    result = evaluator.evaluate_changes([r.key for r in second])

    assert result.instances == 2000
    assert asked == []


def test_a_failing_rule_is_logged_outside_the_stats_lock(
    store: Store, evaluator: Evaluator, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    # A log handler may be slow (a blocked stderr) or read the stats itself (the dashboard's
    # log panel): neither may hold up or deadlock a reader of the stats.
    record = make_record(90, 1.0)
    store.apply(make_delta(1.0, added=[record]))
    evaluator.set_rules([rule("bad", "SELECT pid, start_time FROM processes WHERE abs('x', 1)")])
    seen: list[int] = []

    class ReadsStats(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(len(evaluator.stats()))

    handler = ReadsStats()
    logger = logging.getLogger("daemoneye.engine.evaluator")
    logger.addHandler(handler)
    finished = threading.Event()

    def evaluate() -> None:
        evaluator.evaluate_changes([record.key])
        finished.set()

    worker = threading.Thread(target=evaluate, daemon=True)
    try:
        worker.start()
        worker.join(10)
    finally:
        logger.removeHandler(handler)
    assert finished.is_set(), "the evaluation deadlocked on its own stats lock"
    assert seen == [1] and evaluator.stats()["bad"].errors == 1
