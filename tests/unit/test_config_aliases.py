"""The seed's environment names are documented aliases: each sets one of our keys (and
`config show` names it as the source) or is accepted with a warning that says why it has no
effect here; none is refused as unknown, none is silently ignored."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from daemoneye import cli
from daemoneye.config.loading import load_config
from daemoneye.config.schema import LoadedConfig
from daemoneye.errors import ConfigError
from daemoneye.paths import Mode


def _load(tmp_path: Path, **env: str) -> LoadedConfig:
    base = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "none")}
    return load_config(mode=Mode.USER, env={**base, **env})


def _origin(loaded: LoadedConfig, key: str) -> str:
    return next(s.origin for s in loaded.settings if s.key == key)


def test_scan_interval_in_milliseconds_sets_the_interval(tmp_path: Path) -> None:
    loaded = _load(tmp_path, PROCMOND_APP__SCAN_INTERVAL_MS="15000")
    assert loaded.config.collector.interval == 15.0
    assert "PROCMOND_APP__SCAN_INTERVAL_MS=15000 (alias)" in _origin(loaded, "collector.interval")


def test_our_own_variable_wins_over_an_alias(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path, PROCMOND_APP__SCAN_INTERVAL_MS="15000", DAEMONEYE_COLLECTOR__INTERVAL="2s"
    )
    assert loaded.config.collector.interval == 2.0
    assert _origin(loaded, "collector.interval") == "env DAEMONEYE_COLLECTOR__INTERVAL"


@pytest.mark.parametrize("raw", ["15s", "-5", "1.5", ""])
def test_a_scan_interval_that_is_not_milliseconds_is_refused(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ConfigError, match=r"PROCMOND_APP__SCAN_INTERVAL_MS.*milliseconds"):
        _load(tmp_path, PROCMOND_APP__SCAN_INTERVAL_MS=raw)


def test_a_scan_interval_out_of_range_names_the_alias_and_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"PROCMOND_APP__SCAN_INTERVAL_MS \(collector.interval\)"):
        _load(tmp_path, PROCMOND_APP__SCAN_INTERVAL_MS="5")


def test_event_buffer_size_sets_the_connector_receive_buffer(tmp_path: Path) -> None:
    assert _load(tmp_path).config.collector.event_buffer == 4 << 20
    loaded = _load(tmp_path, PROCMOND_COLLECTOR_EVENT_BUFFER_SIZE="8MiB")
    assert loaded.config.collector.event_buffer == 8 << 20
    assert "PROCMOND_COLLECTOR_EVENT_BUFFER_SIZE=8MiB" in _origin(loaded, "collector.event_buffer")
    with pytest.raises(ConfigError, match="PROCMOND_COLLECTOR_EVENT_BUFFER_SIZE"):
        _load(tmp_path, PROCMOND_COLLECTOR_EVENT_BUFFER_SIZE="1000")  # below 64KiB


def test_debug_logging_sets_the_log_level(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loaded = _load(tmp_path, PROCMOND_COLLECTOR_DEBUG_LOGGING="1")
    assert loaded.config.daemon.log_level == "debug"
    assert "PROCMOND_COLLECTOR_DEBUG_LOGGING=1" in _origin(loaded, "daemon.log_level")
    with caplog.at_level(logging.WARNING, logger="daemoneye.config"):
        off = _load(tmp_path, PROCMOND_COLLECTOR_DEBUG_LOGGING="false")
    assert off.config.daemon.log_level == "info"
    assert "PROCMOND_COLLECTOR_DEBUG_LOGGING=false is accepted" in caplog.text


@pytest.mark.parametrize(
    ("name", "raw", "why"),
    [
        ("PROCMOND_COLLECTOR_MAX_EVENT_SOURCES", "4", "one kernel event source"),
        ("PROCMOND_COLLECTOR_ENABLE_TELEMETRY", "true", "daemoneye health"),
        ("DAEMONEYE_AGENT_TEST_MODE", "1", "--mode user"),
    ],
)
def test_names_without_a_meaning_here_are_accepted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, raw: str, why: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="daemoneye.config"):
        loaded = _load(tmp_path, **{name: raw})
    assert loaded.config == _load(tmp_path).config
    (warning,) = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert f"{name}={raw} is accepted for compatibility and has no effect here" in warning
    assert why in warning


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("PROCMOND_COLLECTOR_MAX_EVENT_SOURCES", "many"),
        ("PROCMOND_COLLECTOR_ENABLE_TELEMETRY", "maybe"),
        ("DAEMONEYE_AGENT_TEST_MODE", "2"),
    ],
)
def test_a_bad_value_for_an_alias_is_still_an_error(tmp_path: Path, name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        _load(tmp_path, **{name: raw})


def test_config_show_names_the_alias_as_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("PROCMOND_APP__SCAN_INTERVAL_MS", "15000")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # no stale handlers of other tests
    assert cli.main(["--mode", "user", "-o", "json", "config", "show"]) == 0
    rows = {row["key"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["collector.interval"]["source"] == (
        "env PROCMOND_APP__SCAN_INTERVAL_MS=15000 (alias)"
    )
