"""`daemoneye alerts list|show|ack|close` and `daemoneye audit verify` as a user runs them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import apsw
import pytest

from daemoneye import cli
from daemoneye.commands.alerts import AlertsUsageError, parse_since
from daemoneye.engine import audit
from daemoneye.engine.alerts import AlertBook
from daemoneye.models import Detection
from daemoneye.store import Store
from tests.unit.conftest import own_user_env


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    own_user_env(tmp_path, monkeypatch)
    monkeypatch.setenv("COLUMNS", "200")  # tables fit the terminal: make it wide and fixed
    path = tmp_path / "store" / "d.db"
    now = time.time()
    with Store.open(path) as store:
        book = AlertBook(store, sinks=("webhook",), host="h")
        book.record(
            [
                Detection(
                    "exec-tmp",
                    "high",
                    "Execution from /tmp \x1b[31m",
                    10,
                    1.0,
                    now,
                    (("exe", "/tmp/x"),),
                )
            ],
            {},
            now - 7200,
        )
        book.record(
            [Detection("miner", "critical", "Crypto miner", 11, 1.0, now, ())], {}, now - 60
        )
        book.record(
            [Detection("exec-tmp", "low", "Execution from /var/tmp", 12, 1.0, now, ())],
            {},
            now - 30,
        )
    return path


def run(db: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["--db", str(db), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_newest_first_with_control_characters_escaped(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(db, capsys, "alerts", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "SEVERITY",
        "STATE",
        "COUNT",
        "LAST_SEEN",
        "RULE_ID",
        "PID",
        "TITLE",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["3", "2", "1"]
    assert "\x1b" not in out and "\\x1b[31m" in out


@pytest.mark.parametrize(
    ("args", "ids"),
    [
        (["--severity", "high"], [2, 1]),
        (["--severity", "critical"], [2]),
        (["--rule", "exec-tmp"], [3, 1]),
        (["--state", "open"], [3, 2, 1]),
        (["--since", "5m"], [3, 2]),
        (["--since", "2000-01-01"], [3, 2, 1]),
        (["--limit", "1"], [3]),
    ],
)
def test_list_filters(
    db: Path, capsys: pytest.CaptureFixture[str], args: list[str], ids: list[int]
) -> None:
    code, out, _ = run(db, capsys, "-o", "json", "alerts", "list", *args)
    assert code == 0
    assert [row["id"] for row in json.loads(out)] == ids


def test_list_bad_values_are_usage_errors(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(db, capsys, "alerts", "list", "--since", "yesterday-ish")
    assert code == 2 and "--since: expected a duration" in err
    with pytest.raises(SystemExit) as raised:
        run(db, capsys, "alerts", "list", "--severity", "severe")
    assert raised.value.code == 2


def test_show_includes_row_and_deliveries(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(db, capsys, "-o", "json", "alerts", "show", "1")
    assert code == 0
    (shown,) = json.loads(out)
    assert shown["row"] == {"exe": "/tmp/x"} and shown["occurrence"] == 1
    assert shown["deliveries"][0]["sink"] == "webhook"
    assert shown["deliveries"][0]["state"] == "pending"
    code, out, _ = run(db, capsys, "alerts", "show", "1")
    assert "row.exe" in out and "sink.webhook" in out and "not yet attempted" in out
    code, _, err = run(db, capsys, "alerts", "show", "99")
    assert code == 1 and "no alert with id 99" in err


def test_ack_then_close_are_audited_as_the_cli_user(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(db, capsys, "-o", "json", "alerts", "ack", "2")
    assert code == 0
    (row,) = json.loads(out)
    assert row["state"] == "acknowledged"
    assert row["state_changed_by"] == f"uid {os.getuid()} pid {os.getpid()} (cli)"
    assert run(db, capsys, "alerts", "close", "2")[0] == 0
    code, _, err = run(db, capsys, "alerts", "ack", "2")
    assert code == 1 and "alert 2 is closed and cannot become acknowledged" in err
    code, _, err = run(db, capsys, "alerts", "close", "42")
    assert code == 1 and "no alert with id 42" in err
    with Store.open_existing(db) as store:
        kinds = [(e.kind, e.actor) for e in audit.entries(store)]
    assert kinds[-2:] == [
        ("alert.acknowledged", f"uid {os.getuid()} pid {os.getpid()} (cli)"),
        ("alert.closed", f"uid {os.getuid()} pid {os.getpid()} (cli)"),
    ]


def test_ack_refuses_clearly_when_the_store_is_not_writable(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root can write anything, so the refusal is exercised by denying the access check.
    monkeypatch.setattr("daemoneye.store.db.os.access", lambda path, mode: False)
    code, _, err = run(db, capsys, "alerts", "ack", "1")
    assert code == 1
    assert "cannot acknowledge alert 1: cannot write the store" in err
    assert "permission denied" in err


def test_audit_verify_intact_then_tampered(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(db, capsys, "audit", "verify")
    assert (code, out) == (0, "3 entries, intact\n")
    conn = apsw.Connection(str(db))
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET actor = 'someone else' WHERE seq = 2")
    conn.close()
    code, out, _ = run(db, capsys, "audit", "verify")
    assert code == 1
    assert out.startswith("3 entries, NOT intact: first bad entry: 2: entry 2 (alert.raised")
    code, out, _ = run(db, capsys, "-o", "json", "audit", "verify")
    (row,) = json.loads(out)
    assert (code, row["intact"], row["first_bad_seq"]) == (1, False, 2)


def test_commands_explain_a_store_from_before_alerts(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.db"
    conn = apsw.Connection(str(old))
    from daemoneye.store.schema import MIGRATIONS

    conn.execute(MIGRATIONS[0].sql)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    for args in (["alerts", "list"], ["audit", "verify"]):
        code, _, err = run(old, capsys, *args)
        assert code == 1 and "schema version 1" in err and "start the daemon" in err


def test_parse_since() -> None:
    assert parse_since("90s", 1000.0) == 910.0
    assert parse_since("2h", 10_000.0) == 2800.0
    assert parse_since("30", 100.0) == 70.0
    assert parse_since("1970-01-01T00:01:00+00:00", 0.0) == 60.0
    with pytest.raises(AlertsUsageError):
        parse_since("soon", 0.0)


def test_list_json_names_the_process_instance_whole(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(db, capsys, "-o", "json", "alerts", "list")
    assert code == 0
    rows = json.loads(out)
    assert {(row["pid"], row["start_time"]) for row in rows} == {(10, 1.0), (11, 1.0), (12, 1.0)}
    assert all(isinstance(row["last_seen"], float) for row in rows)
