"""Alerts: dedup by (rule, process instance), throttle, dedup window, the state machine, and
that alerts, outbox rows and audit entries are written together."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from daemoneye.engine import audit
from daemoneye.engine.alert_queries import (
    AlertError,
    AlertFilter,
    alerted_instances,
    get_alert,
    list_alerts,
    open_alert_count,
    rule_alert_stats,
)
from daemoneye.engine.alerts import DEDUP_WINDOW_ACTOR, AlertBook, InvalidTransition, NoSuchAlert
from daemoneye.errors import StoreError
from daemoneye.models import Detection, ProcessKey, Rule
from daemoneye.store import Store

SINKS = ("stdout", "webhook")


def make_rule(rule_id: str = "exec-tmp", **overrides: Any) -> Rule:
    base = Rule(
        id=rule_id,
        name=f"Rule {rule_id}",
        description="what it finds",
        severity="high",
        enabled=True,
        tags=("T1059",),
        query="SELECT 1",
        title=None,
        dedup_window_s=None,
        throttle_s=None,
        source_file="rules.toml",
        source_line=1,
    )
    return dataclasses.replace(base, **overrides)


def detect(
    rule_id: str = "exec-tmp",
    pid: int = 4242,
    start_time: float = 1000.0,
    severity: str = "high",
    title: str = "Execution from /tmp",
    ts: float = 0.0,
    row: tuple[tuple[str, Any], ...] = (),
) -> Detection:
    return Detection(
        rule_id, severity, title, pid, start_time, ts, row or (("pid", pid), ("exe", "/tmp/x"))
    )


def outbox(store: Store) -> list[tuple[Any, ...]]:
    return store.fetch_rows("SELECT alert_id, sink, state FROM sink_outbox ORDER BY id")


def audit_kinds(store: Store) -> list[tuple[Any, ...]]:
    return store.fetch_rows("SELECT kind, actor FROM audit_log ORDER BY seq")


@pytest.fixture
def book(store: Store) -> AlertBook:
    return AlertBook(store, sinks=SINKS, host="testhost")


def test_same_detection_over_many_ticks_is_one_alert_whose_count_grows(
    book: AlertBook, store: Store
) -> None:
    rules = {"exec-tmp": make_rule()}
    kinds = [book.record([detect()], rules, now=100.0 + tick)[0].kind for tick in range(25)]
    assert kinds == ["raised"] + ["repeated"] * 24
    (alert,) = list_alerts(store)
    assert (alert.count, alert.first_seen, alert.last_seen) == (25, 100.0, 124.0)
    # Only the first detection goes to the sinks and the audit log.
    assert outbox(store) == [(alert.id, "stdout", "pending"), (alert.id, "webhook", "pending")]
    assert audit_kinds(store) == [("alert.raised", "daemon")]


def test_pid_reuse_makes_a_new_alert_but_another_rule_on_the_same_instance_too(
    book: AlertBook, store: Store
) -> None:
    rules = {"exec-tmp": make_rule(), "deleted-exe": make_rule("deleted-exe")}
    book.record([detect(start_time=1000.0)], rules, now=100.0)
    book.record([detect(start_time=2000.0)], rules, now=101.0)  # same pid, new instance
    book.record([detect("deleted-exe", start_time=2000.0)], rules, now=102.0)
    keys = sorted((a.rule_id, a.pid, a.start_time) for a in list_alerts(store))
    assert keys == [
        ("deleted-exe", 4242, 2000.0),
        ("exec-tmp", 4242, 1000.0),
        ("exec-tmp", 4242, 2000.0),
    ]


def test_duplicates_within_one_batch_count_as_repeats(book: AlertBook, store: Store) -> None:
    changes = book.record([detect(), detect(), detect()], {"exec-tmp": make_rule()}, now=5.0)
    assert [c.kind for c in changes] == ["raised", "repeated", "repeated"]
    assert list_alerts(store)[0].count == 3


def test_throttle_allows_one_new_alert_per_window_and_counts_the_rest(
    book: AlertBook, store: Store
) -> None:
    rules = {"exec-tmp": make_rule(throttle_s=60.0)}
    assert book.record([detect(pid=1)], rules, now=100.0)[0].kind == "raised"
    assert book.record([detect(pid=2)], rules, now=110.0) == []
    assert book.record([detect(pid=3)], rules, now=159.0) == []
    # A repeat of the alert that was raised is never throttled.
    assert book.record([detect(pid=1)], rules, now=120.0)[0].kind == "repeated"
    assert book.record([detect(pid=4)], rules, now=160.0)[0].kind == "raised"
    assert sorted(a.pid for a in list_alerts(store)) == [1, 4]
    stats = rule_alert_stats(store)["exec-tmp"]
    assert (stats.alerts_raised, stats.alerts_suppressed) == (2, 2)
    assert stats.last_suppressed_at == 159.0


def test_throttle_survives_a_restart(store: Store) -> None:
    rules = {"exec-tmp": make_rule(throttle_s=60.0)}
    AlertBook(store).record([detect(pid=1)], rules, now=100.0)
    assert AlertBook(store).record([detect(pid=2)], rules, now=130.0) == []


def test_closed_alert_reopens_only_after_a_quiet_dedup_window(
    book: AlertBook, store: Store
) -> None:
    rules = {"exec-tmp": make_rule(dedup_window_s=100.0)}
    (raised,) = book.record([detect()], rules, now=10.0)
    book.set_state(raised.alert.id, "closed", "uid 0 pid 1", now=20.0)
    # Within the window (measured from the later of last sighting and closing): just counted.
    (again,) = book.record([detect()], rules, now=119.0)
    assert (again.kind, again.alert.state, again.alert.count) == ("repeated", "closed", 2)
    # The sighting at 119 restarts the quiet period.
    (still,) = book.record([detect()], rules, now=218.0)
    assert still.kind == "repeated"
    (reopened,) = book.record([detect(title="Execution from /tmp, again")], rules, now=318.0)
    assert (reopened.kind, reopened.occurrence) == ("reopened", 2)
    alert = reopened.alert
    assert (alert.id, alert.state, alert.count) == (raised.alert.id, "open", 4)
    assert alert.state_changed_by == DEDUP_WINDOW_ACTOR
    assert alert.title == "Execution from /tmp, again"
    assert len(outbox(store)) == 2 * len(SINKS)  # the new occurrence is sent again
    assert [k for k, _ in audit_kinds(store)] == ["alert.raised", "alert.closed", "alert.reopened"]
    payloads = store.fetch_rows("SELECT payload FROM sink_outbox ORDER BY id DESC LIMIT 1")
    assert '"event_id":"testhost/1/2"' in str(payloads[0][0])


def test_without_a_dedup_window_closed_is_final(book: AlertBook, store: Store) -> None:
    rules = {"exec-tmp": make_rule()}
    (raised,) = book.record([detect()], rules, now=10.0)
    book.set_state(raised.alert.id, "closed", "uid 0 pid 1", now=20.0)
    (later,) = book.record([detect()], rules, now=1e9)
    assert (later.kind, later.alert.state, later.alert.count) == ("repeated", "closed", 2)
    assert len(outbox(store)) == len(SINKS)


def test_state_machine_audits_each_change_with_its_actor(book: AlertBook, store: Store) -> None:
    (raised,) = book.record([detect()], {}, now=10.0)
    alert_id = raised.alert.id
    acked = book.set_state(alert_id, "acknowledged", "uid 1000 pid 77", now=11.0)
    assert (acked.alert.state, acked.alert.state_changed_by) == ("acknowledged", "uid 1000 pid 77")
    closed = book.set_state(alert_id, "closed", "uid 0 pid 78", now=12.0)
    assert (closed.alert.state, closed.alert.state_changed_at) == ("closed", 12.0)
    assert audit_kinds(store) == [
        ("alert.raised", "daemon"),
        ("alert.acknowledged", "uid 1000 pid 77"),
        ("alert.closed", "uid 0 pid 78"),
    ]
    detail = audit.entries(store)[2].detail_dict()
    assert detail["from"] == "acknowledged" and detail["to"] == "closed"
    assert audit.verify(store).intact


def test_open_can_be_closed_directly(book: AlertBook) -> None:
    (raised,) = book.record([detect()], {}, now=10.0)
    assert book.set_state(raised.alert.id, "closed", "uid 0 pid 1", now=11.0).kind == "closed"


@pytest.mark.parametrize(
    ("path", "target", "message"),
    [
        (["closed"], "acknowledged", "is closed and cannot become acknowledged"),
        (["closed"], "closed", "is already closed"),
        (["acknowledged"], "acknowledged", "is already acknowledged"),
        ([], "open", "is already open"),
        (["acknowledged"], "open", "cannot become open"),
    ],
)
def test_invalid_transitions_are_refused_and_write_nothing(
    book: AlertBook, store: Store, path: list[str], target: str, message: str
) -> None:
    (raised,) = book.record([detect()], {}, now=10.0)
    for step in path:
        book.set_state(raised.alert.id, step, "uid 0 pid 1", now=11.0)
    before = audit_kinds(store)
    with pytest.raises(InvalidTransition, match=message):
        book.set_state(raised.alert.id, target, "uid 0 pid 2", now=12.0)
    assert audit_kinds(store) == before


def test_unknown_alert_and_unknown_state(book: AlertBook) -> None:
    with pytest.raises(NoSuchAlert, match="no alert with id 99"):
        book.set_state(99, "closed", "uid 0 pid 1", now=1.0)
    with pytest.raises(AlertError, match="unknown alert state 'gone'"):
        book.set_state(1, "gone", "uid 0 pid 1", now=1.0)


def test_alert_outbox_and_audit_roll_back_together(book: AlertBook, store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction("a tick"):
        assert book.record([detect()], {}, now=10.0)[0].kind == "raised"
        raise Boom
    assert list_alerts(store) == []
    assert outbox(store) == []
    assert audit_kinds(store) == []
    assert audit.verify(store).intact


def test_hostile_text_is_stored_not_fatal(book: AlertBook, store: Store) -> None:
    title = "evil \x1b[2J\udcff name\u202e"
    row = (("cmdline", "sh -c \udc80\x00"), ("ratio", float("nan")), ("blob", None))
    book.record([detect(title=title, row=row)], {}, now=1.0)
    (alert,) = list_alerts(store)
    assert alert.title == "evil \x1b[2J\\udcff name\u202e"
    assert dict(alert.row) == {"cmdline": "sh -c \\udc80\x00", "ratio": "nan", "blob": None}
    assert audit.verify(store).intact


def test_a_detection_with_an_unknown_severity_is_skipped(book: AlertBook, store: Store) -> None:
    changes = book.record([detect(severity="apocalyptic"), detect(pid=7)], {}, now=1.0)
    assert [c.alert.pid for c in changes] == [7]


def test_no_sinks_means_no_outbox_rows_but_still_audited(store: Store) -> None:
    AlertBook(store).record([detect()], {}, now=1.0)
    assert outbox(store) == []
    assert [k for k, _ in audit_kinds(store)] == ["alert.raised"]


def test_list_filters(book: AlertBook, store: Store) -> None:
    rules = {r: make_rule(r) for r in ("a", "b")}
    book.record([detect("a", pid=1, severity="info")], rules, now=100.0)
    book.record([detect("a", pid=2, severity="medium")], rules, now=200.0)
    book.record([detect("b", pid=3, severity="critical")], rules, now=300.0)
    book.set_state(2, "acknowledged", "uid 0 pid 1", now=301.0)

    def pids(**kwargs: Any) -> list[int]:
        return [a.pid for a in list_alerts(store, AlertFilter(**kwargs))]

    assert pids() == [3, 2, 1]  # most recently seen first
    assert pids(min_severity="medium") == [3, 2]
    assert pids(min_severity="critical") == [3]
    assert pids(rule_id="a") == [2, 1]
    assert pids(state="acknowledged") == [2]
    assert pids(since=200.0) == [3, 2]
    assert pids(limit=1) == [3]
    assert pids(before_id=3) == [2, 1]
    assert pids(min_severity="info", rule_id="a", state="open") == [1]
    with pytest.raises(AlertError, match="unknown severity"):
        pids(min_severity="severe")
    found = get_alert(store, 3)
    assert found is not None and found[0].severity == "critical" and found[1] == 1
    assert get_alert(store, 99) is None
    assert open_alert_count(store) == 2
    assert alerted_instances(store) == {
        ProcessKey(1, 1000.0),
        ProcessKey(2, 1000.0),
        ProcessKey(3, 1000.0),
    }


def test_the_store_refuses_a_write_after_close(store_path: Any) -> None:
    store = Store.open(store_path)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        AlertBook(store).record([detect()], {}, now=1.0)
