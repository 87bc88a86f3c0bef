"""Command-line conventions users bring with them (issue 18, "The command line")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemoneye import cli
from daemoneye.commands.config_show import as_written
from daemoneye.config.loading import coerce
from daemoneye.config.schema import KEYS, Config
from daemoneye.store import Store
from tests.unit.conftest import own_user_env


@pytest.fixture
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user-mode environment of its own: no daemon answers on its socket."""
    own_user_env(tmp_path, monkeypatch)
    db = tmp_path / "state" / "d.db"
    with Store.open(db):
        pass
    return db


# -- global options before or after the command ---------------------------------------------------


def test_global_options_are_accepted_after_the_command(
    user_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["query", "select 1 as one", "--mode", "user", "--db", str(user_env), "-o", "json"]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == [{"one": 1}]


def test_a_global_option_before_the_command_is_not_overwritten_by_the_subcommand(
    user_env: Path,
) -> None:
    args = cli.build_parser().parse_args(["-o", "csv", "--db", str(user_env), "rules", "list"])
    assert args.output == "csv"
    assert args.db == str(user_env)
    args = cli.build_parser().parse_args(["rules", "list", "-o", "ndjson"])
    assert args.output == "ndjson"
    assert args.db is None


@pytest.mark.parametrize(
    "argv",
    [
        ["query"],
        ["processes"],
        ["health"],
        ["config", "show"],
        ["rules", "list"],
        ["rules", "validate"],
        ["alerts", "list"],
        ["alerts", "ack"],
        ["audit", "verify"],
        ["daemon"],
    ],
)
def test_every_subcommand_help_lists_the_global_options(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--config", "--socket", "--db", "--mode", "--output"):
        assert option in out, (argv, option)


def test_top_level_help_says_no_command_opens_the_dashboard() -> None:
    text = " ".join(cli.build_parser().format_help().split())
    assert "With no COMMAND, on a terminal, `daemoneye` opens the dashboard" in text


# -- filter terms the shell leaves alone ----------------------------------------------------------


def test_a_negated_filter_term_taken_for_an_option_says_to_use_not_or_double_dash(
    user_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["processes", "-name:kworker", "ssh"])
    assert exit_info.value.code == cli.EXIT_USAGE
    err = " ".join(capsys.readouterr().err.split())
    assert "not:name:kworker" in err
    assert "daemoneye processes -- -name:kworker" in err


def test_shell_safe_filter_terms_and_double_dash_negation_reach_the_filter() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["processes", "cpu:>1", "rss:>100M", "not:name:kworker", "-o", "json"])
    assert args.filter == ["cpu:>1", "rss:>100M", "not:name:kworker"]
    assert args.output == "json"
    assert parser.parse_args(["processes", "ssh", "--", "-name:kworker"]).filter == [
        "ssh",
        "-name:kworker",
    ]


def test_an_unknown_option_elsewhere_gets_no_filter_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["query", "select 1", "-z"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: -z" in err
    assert "negate" not in err


# -- --db means that store ------------------------------------------------------------------------


def test_an_explicit_db_is_read_without_asking_the_daemon(
    user_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --db the read-only commands read that file even when a daemon would answer."""
    from daemoneye.commands import common

    asked: list[object] = []

    async def daemon_answers(*args: object, **kwargs: object) -> object:
        asked.append(args)
        raise AssertionError("the daemon was asked although --db named a store")

    monkeypatch.setattr(common, "_ask", daemon_answers)
    code = cli.main(
        ["--mode", "user", "--db", str(user_env), "-o", "json", "query", "select 2 as two"]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == [{"two": 2}]
    assert asked == []


# -- bad numbers name the flag --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (
            ["query", "select 1", "--max-rows", "-1"],
            "argument --max-rows: must be a whole number 0",
        ),
        (
            ["query", "select 1", "--max-rows", "many"],
            "argument --max-rows: must be a whole number",
        ),
        (["alerts", "list", "--limit", "0"], "argument --limit: must be a whole number 1"),
    ],
)
def test_a_bad_count_is_a_usage_error_naming_the_flag(
    user_env: Path, argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--db", str(user_env), *argv])
    assert exit_info.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert flag in err
    assert "max_rows" not in err


# -- config show writes values as the config file does --------------------------------------------


def test_config_show_prints_values_as_the_config_file_writes_them(
    user_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--mode", "user", "config", "show"]) == 0
    shown = {
        line.split()[0]: line.split()[1]
        for line in capsys.readouterr().out.splitlines()[1:]
        if len(line.split()) >= 3
    }
    assert shown["collector.interval"] == "1s"
    assert shown["collector.hash_max_bytes"] == "64MiB"
    assert shown["collector.hash_executables"] == "true"
    assert shown["sinks.file.enabled"] == "false"
    assert shown["store.retention"] == "7d"


@pytest.mark.parametrize(
    "key", sorted(k for k, spec in KEYS.items() if spec["kind"] in ("duration", "size", "bool"))
)
def test_what_config_show_prints_reads_back_as_the_same_value(key: str) -> None:
    """Every default, and a few awkward values, printed as written and read back as text."""
    kind = KEYS[key]["kind"]
    default = getattr(getattr_path(Config(), key.rpartition(".")[0]), key.rpartition(".")[2])
    samples: list[Any] = [default]
    if kind == "duration":
        samples += [0.5, 1.25, 90.0, 5400.0, 604800.0, 0.001]
    elif kind == "size":
        samples += [1000, 1024, 1536, 64 * 1024**2, 3 * 1024**3]
    else:
        samples += [True, False]
    for value in samples:
        try:
            expected = coerce(key, value, from_text=False)
        except ValueError:
            continue  # out of this key's range
        assert coerce(key, as_written(key, expected), from_text=True) == pytest.approx(expected)


def getattr_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# -- one duration syntax --------------------------------------------------------------------------

DURATIONS = [
    ("1w", 604800.0),
    ("1h30m", 5400.0),
    ("90s", 90.0),
    ("500ms", 0.5),
    ("2d 12h", 216000.0),
    ("1.5h", 5400.0),
    ("1M", 60.0),  # case-insensitive
    ("30", 30.0),
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_config_rules_and_since_read_a_duration_the_same_way(text: str, seconds: float) -> None:
    from daemoneye.commands.alerts import parse_since
    from daemoneye.engine.rule_file import parse_duration as rule_duration
    from daemoneye.units import parse_duration

    key = next(  # a config key whose range holds this value
        k
        for k, spec in KEYS.items()
        if spec["kind"] == "duration" and spec["lo"] <= seconds <= spec["hi"]
    )
    assert parse_duration(text) == pytest.approx(seconds)
    assert coerce(key, text, from_text=True) == pytest.approx(seconds)
    assert coerce(key, text, from_text=False) == pytest.approx(seconds)  # from a TOML file
    assert rule_duration(text) == pytest.approx(seconds)
    assert parse_since(text, 10_000_000.0) == pytest.approx(10_000_000.0 - seconds)


@pytest.mark.parametrize("text", ["", "h", "1x", "1h 30", "-5s", "1h-30m", "ms", "1e3s"])
def test_config_rules_and_since_refuse_the_same_non_durations(text: str) -> None:
    from daemoneye.commands.alerts import AlertsUsageError, parse_since
    from daemoneye.engine.rule_file import parse_duration as rule_duration
    from daemoneye.units import parse_duration

    assert parse_duration(text) is None
    with pytest.raises(ValueError, match="expected a duration"):
        coerce("store.retention", text, from_text=True)
    with pytest.raises(ValueError, match="expected a duration"):
        rule_duration(text)
    with pytest.raises(AlertsUsageError):
        parse_since(text, 0.0)
