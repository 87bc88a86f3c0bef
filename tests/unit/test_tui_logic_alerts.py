"""The alert feed as data: order, filters, severity ranking and per-process summaries."""

from __future__ import annotations

import dataclasses

import pytest

from daemoneye.models import ProcessKey
from daemoneye.tui.logic.alerts import (
    AlertFilter,
    AlertRows,
    alert_rows,
    alerts_for,
    cycle_min_severity,
    cycle_rule,
    cycle_states,
    newest_first,
    open_counts,
    worst_by_process,
)
from daemoneye.tui.logic.glyphs import TIMES
from daemoneye.tui.logic.keys import row_key
from daemoneye.tui.logic.severity import label, severity_rank, worst
from tests.fakes.dashboard_source import FAKE_NOW, sample_alerts

pytestmark = pytest.mark.usefixtures("utc")  # times are shown in local time


def test_severities_rank_critical_highest_and_unknown_lowest() -> None:
    ranked = sorted(["low", "critical", "bogus", "info", "high", "medium"], key=severity_rank)
    assert ranked == ["bogus", "info", "low", "medium", "high", "critical"]
    assert worst(["low", "high", "medium"]) == "high" and worst([]) is None
    assert label("critical") == "CRIT"


def test_the_feed_is_newest_first() -> None:
    assert [a.id for a in newest_first(sample_alerts())] == [7, 5, 8, 3, 1]


def test_the_default_filter_hides_closed_alerts() -> None:
    rows = alert_rows(sample_alerts(), AlertFilter(), FAKE_NOW)
    assert [r.key for r in rows] == ["/7", "/5", "/8", "/3"]  # host/id: "" is the one host


def test_filters_by_severity_rule_and_state() -> None:
    alerts = sample_alerts()
    assert [r.key for r in alert_rows(alerts, AlertFilter(min_severity="high"), FAKE_NOW)] == [
        "/7",
        "/8",
    ]
    only_rule = AlertFilter(rule_id="exec-from-tmp")
    assert [r.key for r in alert_rows(alerts, only_rule, FAKE_NOW)] == ["/5"]
    closed = AlertFilter(states=frozenset({"closed"}))
    assert [r.key for r in alert_rows(alerts, closed, FAKE_NOW)] == ["/1"]


def test_rows_carry_severity_in_words_and_repeats() -> None:
    row = alert_rows(sample_alerts(), AlertFilter(), FAKE_NOW)[0]
    assert row.cells[0].text == "CRIT" and row.cells[0].tone == "critical"
    assert row.cells[2].text == f"{TIMES}12 since 22:08:30"


def test_cycling_the_filters_comes_back_round() -> None:
    severity: str | None = None
    seen = []
    for _ in range(5):
        severity = cycle_min_severity(severity)
        seen.append(severity)
    assert seen == ["low", "medium", "high", "critical", None]
    states = AlertFilter().states
    for _ in range(5):
        states = cycle_states(states)
    assert states == AlertFilter().states
    assert cycle_rule(None, ["b", "a"]) == "a" and cycle_rule("b", ["a", "b"]) is None


def test_processes_are_summarised_by_their_worst_active_alert() -> None:
    alerts = list(sample_alerts())
    worst_for = worst_by_process(alerts)
    assert worst_for[row_key(ProcessKey(3100, FAKE_NOW - 300))] == "critical"
    assert row_key(ProcessKey(1999, FAKE_NOW - 7200)) not in worst_for, "closed do not count"
    assert open_counts(alerts) == {"critical": 1, "high": 1, "low": 1}
    acked = [dataclasses.replace(a, state="acknowledged") for a in alerts]
    assert open_counts(acked) == {}


def test_alerts_of_one_instance_only() -> None:
    key = row_key(ProcessKey(3100, FAKE_NOW - 300))
    assert [a.id for a in alerts_for(key, sample_alerts())] == [7, 5]
    assert alerts_for(row_key(ProcessKey(3100, FAKE_NOW)), sample_alerts()) == []


def test_kept_rows_are_rebuilt_only_for_alerts_that_changed() -> None:
    alerts = sample_alerts()
    feed = AlertRows()
    first = {row.key: row for row in feed.rows(alerts, AlertFilter(), FAKE_NOW)}
    changed = [
        dataclasses.replace(a, count=a.count + 1, last_seen=FAKE_NOW) if a.id == 3 else a
        for a in alerts
    ]
    again = {row.key: row for row in feed.rows(changed, AlertFilter(), FAKE_NOW)}
    assert again == {row.key: row for row in alert_rows(changed, AlertFilter(), FAKE_NOW)}
    assert again["/3"] is not first["/3"] and TIMES in again["/3"].cells[2].text
    assert all(again[key] is first[key] for key in first if key != "/3")
    # an equal alert (a reconnect sends new objects) keeps its row too
    copies = [dataclasses.replace(a) for a in changed]
    assert feed.rows(copies, AlertFilter(), FAKE_NOW)[0] is again[next(iter(again))]
    # a row whose "seen" text moves with the clock (another day) is built again
    later = {row.key: row for row in feed.rows(copies, AlertFilter(), FAKE_NOW + 3 * 86400)}
    assert later == {
        row.key: row for row in alert_rows(copies, AlertFilter(), FAKE_NOW + 3 * 86400)
    }


def test_rows_hidden_by_a_filter_are_kept_for_when_it_lets_them_in_again() -> None:
    alerts = sample_alerts()
    feed = AlertRows()
    everything = AlertFilter(states=frozenset({"open", "acknowledged", "closed"}))
    first = {row.key: row for row in feed.rows(alerts, everything, FAKE_NOW)}
    feed.rows(alerts, AlertFilter(min_severity="critical"), FAKE_NOW)
    again = {row.key: row for row in feed.rows(alerts, everything, FAKE_NOW)}
    assert again.keys() == first.keys() and all(again[k] is first[k] for k in first)
