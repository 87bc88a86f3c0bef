"""`alerts ack|close --filter`: count, ask (or --yes), then change and audit each alert."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from daemoneye.commands.alerts_bulk import (
    BulkFilterError,
    NotConfirmed,
    _apply,
    confirm,
    parse_selection,
)
from daemoneye.commands.common import Context
from daemoneye.config.loading import load_config, mode_from_flag
from daemoneye.engine import audit
from daemoneye.ipc.client import ErrorCode, RpcError
from daemoneye.models import Alert
from daemoneye.store import Store

from .test_alerts_cli import db, run

__all__ = ["db"]  # the fixture, shared with test_alerts_cli


def _states(path: Path) -> dict[int, str]:
    with Store.open_existing(path) as store:
        rows = store.fetch_rows("SELECT id, state FROM alerts")
    return {int(str(i)): str(s) for i, s in rows}


def _alert(**changes: object) -> Alert:
    values: dict[str, object] = {
        "id": 1, "rule_id": "r", "severity": "high", "title": "Shell From /tmp", "pid": 9,
        "start_time": 1.5, "first_seen": 10.0, "last_seen": 100.0, "count": 1,
        "state": "open", "state_changed_at": None, "state_changed_by": None, "row": (),
    }  # fmt: skip
    values.update(changes)
    return Alert(**values)  # type: ignore[arg-type]


def test_ack_by_filter_with_yes_changes_and_audits_each_matching_alert(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        db, capsys, "-o", "json", "alerts", "ack", "--filter", "rule:exec-tmp", "--yes"
    )
    assert code == 0, err
    assert sorted(row["id"] for row in json.loads(out)) == [1, 3]
    assert _states(db) == {1: "acknowledged", 2: "open", 3: "acknowledged"}
    assert "2 alerts acknowledged" in err
    with Store.open_existing(db) as store:
        entries = [e for e in audit.entries(store) if e.kind == "alert.acknowledged"]
    actor = f"uid {os.getuid()} pid {os.getpid()} (cli)"
    assert sorted(json.loads(e.detail)["alert_id"] for e in entries) == [1, 3]
    assert all(e.actor == actor for e in entries)


def test_without_yes_and_without_a_terminal_nothing_changes(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # a pipe saying yes does not count
    code, out, err = run(db, capsys, "alerts", "close", "--filter", "severity:>=high")
    assert code == 2
    assert "close 2 alerts" in err and "not without --yes" in err
    assert out == ""
    assert set(_states(db).values()) == {"open"}


def test_a_severity_term_is_exact_unless_it_says_at_least(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        db, capsys, "-o", "json", "alerts", "close", "--filter", "severity:high", "-y"
    )
    assert code == 0 and [row["id"] for row in json.loads(out)] == [1]
    code, out, _ = run(
        db, capsys, "-o", "json", "alerts", "close", "--filter", "severity:>=low not:pid:11", "-y"
    )
    assert code == 0 and [row["id"] for row in json.loads(out)] == [3]
    assert _states(db) == {1: "closed", 2: "open", 3: "closed"}


def test_nothing_matching_is_said_and_is_not_an_error(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(db, capsys, "alerts", "ack", "--filter", "rule:none", "--yes")
    assert code == 0 and out == "" and "nothing to acknowledge" in err


@pytest.mark.parametrize("args", [[], ["1", "--filter", "rule:x"]])
def test_an_id_or_a_filter_exactly(
    db: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, _, err = run(db, capsys, "alerts", "ack", *args)
    assert code == 2 and "--filter" in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_confirm_asks_on_a_terminal_and_only_yes_is_yes() -> None:
    asked = io.StringIO()
    assert confirm("close 3 alerts?", _Terminal("y\n"), asked)
    assert asked.getvalue() == "close 3 alerts? [y/N] "
    assert not confirm("close 3 alerts?", _Terminal("\n"), io.StringIO())
    assert not confirm("close 3 alerts?", _Terminal("no\n"), io.StringIO())
    with pytest.raises(NotConfirmed):
        confirm("close 3 alerts?", io.StringIO("y\n"), io.StringIO())


def test_selection_terms() -> None:
    now = time.time()
    assert parse_selection("rule:r severity:high", now).matches(_alert())
    assert not parse_selection("rule:r severity:critical", now).matches(_alert())
    assert parse_selection("severity:>=medium", now).matches(_alert())
    assert parse_selection("title:'shell from'", now).matches(_alert())
    assert not parse_selection("not:title:shell", now).matches(_alert())
    assert parse_selection("pid:9 state:open", now).matches(_alert())
    assert not parse_selection("since:1h", now).matches(_alert(last_seen=now - 7200))
    assert parse_selection("since:1h", now).matches(_alert(last_seen=now - 60))


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "at least one term"),
        ("rul:x", "did you mean 'rule'"),
        ("severity:hgh", "did you mean 'high'"),
        ("state:opne", "did you mean 'open'"),
        ("pid:x", "whole number"),
        ("since:soon", "duration"),
        ("rule", "TERM:VALUE"),
        ("rule:a rule:b", "given twice"),
        ("title:'unclosed", "--filter"),
    ],
)
def test_a_bad_filter_is_named(text: str, said: str) -> None:
    with pytest.raises(BulkFilterError, match=said):
        parse_selection(text, 0.0)


class _RefusingDaemon:
    """A daemon that answers like one refusing a non-admin peer."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def alert_ack(self, alert_id: int) -> Alert:
        self.asked.append(alert_id)
        raise RpcError(ErrorCode.FORBIDDEN, "alerts.ack needs an admin")


def test_a_refusal_stops_at_the_first_alert(monkeypatch: pytest.MonkeyPatch, db: Path) -> None:
    daemon = _RefusingDaemon()
    monkeypatch.setattr(Context, "client", lambda self: daemon)
    loaded = load_config(mode=mode_from_flag("user"), config_file=None, flags={})
    ctx = Context(loaded=loaded, output="table")
    with pytest.raises(RpcError, match="needs an admin"):
        _apply(ctx, [1, 2, 3], "acknowledged")
    assert daemon.asked == [1]
    assert set(_states(db).values()) == {"open"}  # and nothing went around the daemon
