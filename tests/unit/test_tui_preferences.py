"""The dashboard's remembered theme: written into the user's config, comments kept."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from daemoneye.config.loading import load_config
from daemoneye.errors import ConfigError
from daemoneye.paths import Mode
from daemoneye.tui.preferences import (
    configured_hide_kernel_threads,
    configured_show_container,
    configured_theme,
    preference_file,
    remember_hide_kernel_threads,
    remember_show_container,
    remember_theme,
)


def test_the_theme_is_added_and_comments_survive(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('# my settings\n[cli]\noutput = "json"  # for jq\n')
    config.chmod(0o640)
    remember_theme(config, "daemoneye-light")
    text = config.read_text()
    assert "# my settings" in text and "# for jq" in text
    assert tomllib.loads(text)["tui"] == {"theme": "daemoneye-light"}
    assert config.stat().st_mode & 0o777 == 0o640
    remember_theme(config, "daemoneye-dark")
    assert tomllib.loads(config.read_text())["tui"]["theme"] == "daemoneye-dark"
    assert config.read_text().count("[tui]") == 1


def test_a_missing_file_is_created_private(tmp_path: Path) -> None:
    config = tmp_path / "new" / "config.toml"
    remember_theme(config, "daemoneye-high-contrast")
    assert tomllib.loads(config.read_text()) == {"tui": {"theme": "daemoneye-high-contrast"}}
    assert config.stat().st_mode & 0o777 == 0o600


def test_a_broken_file_is_left_alone(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[cli\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        remember_theme(config, "daemoneye-light")
    assert config.read_text() == "[cli\n"


def test_the_saved_theme_is_read_back_through_the_config(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    loaded = load_config(mode=Mode.USER, env=env)
    assert configured_theme(loaded) is None
    remember_theme(preference_file(loaded), "daemoneye-light")
    assert configured_theme(load_config(mode=Mode.USER, env=env)) == "daemoneye-light"
    with_env = {**env, "DAEMONEYE_TUI__THEME": "daemoneye-high-contrast"}
    assert configured_theme(load_config(mode=Mode.USER, env=with_env)) == (
        "daemoneye-high-contrast"
    )


def test_hiding_kernel_threads_is_saved_next_to_the_theme(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    loaded = load_config(mode=Mode.USER, env=env)
    assert configured_hide_kernel_threads(loaded) is False
    remember_theme(preference_file(loaded), "daemoneye-light")
    remember_hide_kernel_threads(preference_file(loaded), True)
    assert tomllib.loads(preference_file(loaded).read_text())["tui"] == {
        "theme": "daemoneye-light",
        "hide_kernel_threads": True,
    }
    assert configured_hide_kernel_threads(load_config(mode=Mode.USER, env=env)) is True
    remember_hide_kernel_threads(preference_file(loaded), False)
    assert configured_hide_kernel_threads(load_config(mode=Mode.USER, env=env)) is False


def test_the_container_column_choice_is_saved(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    loaded = load_config(mode=Mode.USER, env=env)
    assert configured_show_container(loaded) is False
    remember_show_container(preference_file(loaded), True)
    assert tomllib.loads(preference_file(loaded).read_text())["tui"] == {"show_container": True}
    assert configured_show_container(load_config(mode=Mode.USER, env=env)) is True
