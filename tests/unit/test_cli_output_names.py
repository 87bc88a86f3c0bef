"""The machine formats speak the store's names in every command: `cpu_percent`, `start_time`
(epoch seconds), `argv` as a list (docs/cli.md, issue 18)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemoneye import cli
from daemoneye.output import render, set_wide
from daemoneye.store import Store

from .conftest import DeltaFactory, RecordFactory, own_user_env

ARGV = ("/bin/sh", "-c", "echo 'a b'", "")


@pytest.fixture(autouse=True)
def _not_wide_after() -> Iterator[None]:
    """`--wide` is process-wide, set by the entry point: what a test's CLI run set must not
    reach the next test in this process."""
    yield
    set_wide(False)


@pytest.fixture
def db(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_record: RecordFactory,
    make_delta: DeltaFactory,
) -> Path:
    """A user-mode environment whose store holds one live process with a tricky argv."""
    own_user_env(tmp_path, monkeypatch)
    path = tmp_path / "state" / "d.db"
    record = make_record(4242, 1700000000.5, name="sh", cmdline=ARGV, cpu_percent=12.5)
    with Store.open(path) as store:
        store.apply(make_delta(1700000001.0, added=[record]))
    return path


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert cli.main(argv) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_processes_list_json_uses_the_store_names_and_argv_as_a_list(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _json(["processes", "--db", str(db), "-o", "json"], capsys)
    (row,) = rows
    assert row["cpu_percent"] == 12.5
    assert row["start_time"] == 1700000000.5
    assert row["argv"] == list(ARGV)
    assert row["cmdline"] == " ".join(ARGV)
    assert "cpu" not in row and "started" not in row


def test_processes_list_table_keeps_short_headings(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["processes", "--db", str(db)]) == 0
    heading = capsys.readouterr().out.splitlines()[0].split()
    assert heading == ["PID", "USER", "CPU%", "RSS", "STARTED", "NAME", "CMDLINE"]


def test_processes_show_json_has_cmdline_text_and_argv_list(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (row,) = _json(["processes", "show", "4242", "--db", str(db), "-o", "json"], capsys)
    assert row["cmdline"] == " ".join(ARGV)
    assert row["argv"] == list(ARGV)
    assert row["start_time"] == 1700000000.5


def test_query_json_prints_the_argv_column_as_a_list(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = "SELECT argv, cmdline AS cmd, 'x' AS argv2 FROM processes"
    (row,) = _json(["query", sql, "--db", str(db), "-o", "json"], capsys)
    assert row == {"argv": list(ARGV), "cmd": " ".join(ARGV), "argv2": "x"}


def test_query_leaves_a_column_merely_named_argv_alone(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = "SELECT '[1, 2]' AS argv UNION ALL SELECT 'not json' UNION ALL SELECT NULL"
    rows = _json(["query", sql, "--db", str(db), "-o", "json"], capsys)
    assert [r["argv"] for r in rows] == ["[1, 2]", "not json", None]


def test_a_list_is_one_csv_cell_of_json_and_a_json_array() -> None:
    out = io.StringIO()
    render(("pid", "argv"), [(1, ("=cmd|' /C calc'!A0", "x"))], "csv", out)
    cells = list(csv.reader(io.StringIO(out.getvalue())))[1]
    assert json.loads(cells[1]) == ["=cmd|' /C calc'!A0", "x"]
    assert not cells[1].startswith(("=", "+", "-", "@"))
    out = io.StringIO()
    render(("pid", "argv"), [(1, ("a", "b"))], "ndjson", out)
    assert json.loads(out.getvalue()) == {"pid": 1, "argv": ["a", "b"]}


def test_rules_show_json_tags_are_a_list_and_last_hit_a_number_or_null(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (row,) = _json(["rules", "show", "reverse-shell-netcat", "--db", str(db), "-o", "json"], capsys)
    assert row["tags"] == ["T1059.004", "T1095"]
    assert row["last_hit"] is None
    assert row["source"].endswith("command_and_control.toml:22")


def test_a_terminal_table_fits_columns_and_wide_or_a_pipe_does_not_cut(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "45")
    assert cli.main(["processes", "--db", str(db)]) == 0  # capsys: not a terminal
    assert capsys.readouterr().out.splitlines()[1].endswith(" ".join(ARGV).rstrip())
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    assert cli.main(["processes", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 45 and lines[1].endswith("…")
    assert cli.main(["processes", "--db", str(db), "--wide"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(" ".join(ARGV).rstrip())
