"""Layered configuration: precedence, typing, validation and the messages a user sees."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemoneye.config.loading import coerce, env_key, load_config, read_config_file
from daemoneye.config.schema import KEYS
from daemoneye.errors import ConfigError
from daemoneye.paths import Mode, default_mode, resolve_paths


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        **extra,
    }


def write_user_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg" / "daemoneye" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def value_and_origin(loaded, key: str):  # type: ignore[no-untyped-def]
    (setting,) = [s for s in loaded.settings if s.key == key]
    return setting.value, setting.origin


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    loaded = load_config(mode=Mode.USER, env=user_env(tmp_path))
    assert loaded.config.collector.interval == 1.0
    assert loaded.config.store.retention == 7 * 86400
    assert loaded.config.store.max_bytes == 1024**3
    assert value_and_origin(loaded, "collector.interval") == (1.0, "default")


def test_precedence_file_then_env_then_flag(tmp_path: Path) -> None:
    path = write_user_config(tmp_path, "[collector]\ninterval = 5\n[cli]\noutput = 'csv'\n")
    env = user_env(tmp_path, DAEMONEYE_COLLECTOR__INTERVAL="3s")
    loaded = load_config(mode=Mode.USER, env=env)
    assert value_and_origin(loaded, "collector.interval") == (
        3.0,
        "env DAEMONEYE_COLLECTOR__INTERVAL",
    )
    assert value_and_origin(loaded, "cli.output") == ("csv", f"user file {path}")
    loaded = load_config(mode=Mode.USER, env=env, flags={"collector.interval": "2"})
    assert value_and_origin(loaded, "collector.interval") == (2.0, "flag")


def test_component_prefixes_map_to_their_sections(tmp_path: Path) -> None:
    env = user_env(
        tmp_path,
        PROCMOND_INTERVAL="250ms",
        DAEMONEYE_AGENT_LOG_LEVEL="debug",
        DAEMONEYE_CLI_OUTPUT="ndjson",
        DAEMONEYE_AGENT_STORE__MAX_BYTES="2GiB",
    )
    config = load_config(mode=Mode.USER, env=env).config
    assert config.collector.interval == 0.25
    assert config.daemon.log_level == "debug"
    assert config.cli.output == "ndjson"
    assert config.store.max_bytes == 2 * 1024**3


def test_generic_variable_beats_component_prefix(tmp_path: Path) -> None:
    env = user_env(tmp_path, PROCMOND_INTERVAL="4", DAEMONEYE_COLLECTOR__INTERVAL="6")
    assert load_config(mode=Mode.USER, env=env).config.collector.interval == 6.0


def test_unknown_env_key_names_variable_and_suggests(tmp_path: Path) -> None:
    env = user_env(tmp_path, DAEMONEYE_COLLECTOR__INTERVALL="2")
    with pytest.raises(ConfigError) as raised:
        load_config(mode=Mode.USER, env=env)
    message = str(raised.value)
    assert "DAEMONEYE_COLLECTOR__INTERVALL" in message
    assert "did you mean 'collector.interval'" in message


def test_unknown_file_key_names_file_line_and_suggests(tmp_path: Path) -> None:
    path = write_user_config(tmp_path, "# comment\n[store]\nretention = '3d'\nmax_byte = 5\n")
    with pytest.raises(ConfigError) as raised:
        load_config(mode=Mode.USER, env=user_env(tmp_path))
    assert str(raised.value).startswith(f"{path}:4: unknown key 'store.max_byte'")
    assert "did you mean 'store.max_bytes'" in str(raised.value)


def test_unknown_section_suggests_closest(tmp_path: Path) -> None:
    write_user_config(tmp_path, "[colector]\ninterval = 1\n")
    with pytest.raises(
        ConfigError,
        match=r"config.toml:1: unknown section 'colector' "
        r"\(did you mean 'collector'\?\)",
    ):
        load_config(mode=Mode.USER, env=user_env(tmp_path))


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write_user_config(tmp_path, "[collector]\ninterval = = 1\n")
    with pytest.raises(ConfigError) as raised:
        load_config(mode=Mode.USER, env=user_env(tmp_path))
    assert str(path) in str(raised.value)
    assert "line 2" in str(raised.value)


@pytest.mark.parametrize("raw", ["0.01", "2h", "-1", "fast", "nan"])
def test_interval_out_of_range_or_malformed_is_refused(tmp_path: Path, raw: str) -> None:
    env = user_env(tmp_path, PROCMOND_INTERVAL=raw)
    with pytest.raises(ConfigError, match=r"PROCMOND_INTERVAL: collector\.interval"):
        load_config(mode=Mode.USER, env=env)


def test_bad_value_in_file_names_key_and_line(tmp_path: Path) -> None:
    path = write_user_config(tmp_path, "[daemon]\nlog_level = 'loud'\n")
    with pytest.raises(ConfigError) as raised:
        load_config(mode=Mode.USER, env=user_env(tmp_path))
    assert str(raised.value) == (
        f"{path}:2: daemon.log_level: expected one of debug, info, warning, error, got 'loud'"
    )


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(mode=Mode.USER, env=user_env(tmp_path), config_file=tmp_path / "nope.toml")


def test_explicit_config_file_replaces_user_file(tmp_path: Path) -> None:
    write_user_config(tmp_path, "[collector]\ninterval = 5\n")
    other = tmp_path / "other.toml"
    other.write_text("[collector]\ninterval = 7\n")
    loaded = load_config(mode=Mode.USER, env=user_env(tmp_path), config_file=other)
    assert value_and_origin(loaded, "collector.interval") == (7.0, f"--config file {other}")


def test_store_path_flag_moves_the_database(tmp_path: Path) -> None:
    loaded = load_config(
        mode=Mode.USER, env=user_env(tmp_path), flags={"store.path": str(tmp_path / "x.db")}
    )
    assert loaded.paths.db == tmp_path / "x.db"


def test_modes_and_xdg_paths(tmp_path: Path) -> None:
    assert default_mode({}, euid=0) is Mode.SYSTEM
    assert default_mode({}, euid=1000) is Mode.USER
    assert default_mode({"DAEMONEYE_MODE": "user"}, euid=0) is Mode.USER
    with pytest.raises(ConfigError, match="DAEMONEYE_MODE"):
        default_mode({"DAEMONEYE_MODE": "root"}, euid=0)
    paths = resolve_paths(Mode.USER, user_env(tmp_path))
    assert paths.db == tmp_path / "state" / "daemoneye" / "daemoneye.db"
    assert paths.socket == tmp_path / "run" / "daemoneye.sock"
    assert paths.user_config_file == tmp_path / "cfg" / "daemoneye" / "config.toml"
    system = resolve_paths(Mode.SYSTEM, {})
    assert system.db == Path("/var/lib/daemoneye/daemoneye.db")
    assert system.socket == Path("/run/daemoneye/daemoneye.sock")
    assert system.config_files == (Path("/etc/daemoneye/config.toml"),)


def test_unrelated_environment_is_ignored() -> None:
    assert env_key("PATH") is None
    assert env_key("DAEMONEYE_MODE") is None
    with pytest.raises(ConfigError, match="DAEMONEYE_INTERVAL"):
        env_key("DAEMONEYE_INTERVAL")


# -- properties ---------------------------------------------------------------------------

durations = st.floats(min_value=0.1, max_value=3600, allow_nan=False)


@given(file_value=durations, env_value=st.none() | durations, flag_value=st.none() | durations)
def test_highest_layer_always_wins(
    tmp_path_factory: pytest.TempPathFactory,
    file_value: float,
    env_value: float | None,
    flag_value: float | None,
) -> None:
    tmp_path = tmp_path_factory.mktemp("cfg")
    write_user_config(tmp_path, f"[collector]\ninterval = {file_value!r}\n")
    env = user_env(tmp_path)
    if env_value is not None:
        env["PROCMOND_INTERVAL"] = repr(env_value)
    flags = {} if flag_value is None else {"collector.interval": flag_value}
    got = load_config(mode=Mode.USER, env=env, flags=flags).config.collector.interval
    expected = next(v for v in (flag_value, env_value, file_value) if v is not None)
    assert got == pytest.approx(expected)


@given(st.text(max_size=30))
def test_coerce_never_fails_with_anything_but_value_error(raw: str) -> None:
    for key in KEYS:
        with contextlib.suppress(ValueError):
            coerce(key, raw, from_text=True)


@given(st.integers(min_value=1, max_value=1024), st.sampled_from(["KiB", "MiB", "GiB", "M", "G"]))
def test_sizes_with_units(number: int, unit: str) -> None:
    factor = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "M": 1024**2, "G": 1024**3}[unit]
    expected = number * factor
    if 1024**2 <= expected <= 1024**4:
        assert coerce("store.max_bytes", f"{number}{unit}", from_text=True) == expected
    else:
        with pytest.raises(ValueError, match="out of range"):
            coerce("store.max_bytes", f"{number}{unit}", from_text=True)


def test_read_config_file_refuses_non_table_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("collector = 3\n")
    with pytest.raises(ConfigError, match="must be a table"):
        read_config_file(path)


def test_config_path_we_may_not_look_at_is_a_clear_error(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    config = blocked / "config.toml"

    def refuse(self: Path) -> bool:
        raise PermissionError(13, "Permission denied")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "exists", refuse)
        with pytest.raises(ConfigError, match="cannot access: Permission denied"):
            load_config(mode=Mode.USER, env=user_env(tmp_path), config_file=config)


def test_every_key_is_in_the_operations_guide() -> None:
    """docs/operations.md shows each key in its section's TOML block: a new key without a line
    there is a key users cannot find."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    shown: set[str] = set()
    section = ""
    for line in doc.splitlines():
        header = re.match(r"^\[([a-z_.]+)\]", line)
        if header:
            section = header.group(1)
        elif (key := re.match(r"^([a-z_]+)\s*=", line)) and section:
            shown.add(f"{section}.{key.group(1)}")
    assert sorted(set(KEYS) - shown) == []


def test_the_environment_allow_list_from_a_file_an_environment_variable_or_empty(
    tmp_path: Path,
) -> None:
    from daemoneye.commands.config_show import as_written
    from daemoneye.models import DEFAULT_ENVIRONMENT

    assert load_config(mode=Mode.USER, env=user_env(tmp_path)).config.collector.environment == (
        DEFAULT_ENVIRONMENT
    )
    write_user_config(tmp_path, '[collector]\nenvironment = ["LD_PRELOAD", "TERM"]\n')
    loaded = load_config(mode=Mode.USER, env=user_env(tmp_path))
    assert loaded.config.collector.environment == ("LD_PRELOAD", "TERM")
    assert as_written("collector.environment", ("LD_PRELOAD", "TERM")) == "LD_PRELOAD,TERM"
    env = user_env(tmp_path, PROCMOND_ENVIRONMENT="HISTFILE, SUDO_USER")
    assert load_config(mode=Mode.USER, env=env).config.collector.environment == (
        "HISTFILE",
        "SUDO_USER",
    )
    env = user_env(tmp_path, PROCMOND_ENVIRONMENT="")
    assert load_config(mode=Mode.USER, env=env).config.collector.environment == ()
    for bad in ('["LD_PRELOAD=x"]', '["A B"]', '"LD_PRELOAD"', "[1]"):
        write_user_config(tmp_path, f"[collector]\nenvironment = {bad}\n")
        with pytest.raises(ConfigError, match=r"environment"):
            load_config(mode=Mode.USER, env=user_env(tmp_path))
