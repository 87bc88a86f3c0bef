"""Which user a root daemon drops to: `[daemon] user`, except that a user-mode daemon left at
the default keeps uid 0 (without capabilities) when no such user exists — the dashboard's
private daemon on a first try as root must start, not refuse."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from daemoneye.config.loading import load_config
from daemoneye.daemon.privilege_drop import effective_user
from daemoneye.paths import Mode


def _no_such_user(name: str) -> Any:
    raise KeyError(name)


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("daemoneye.daemon.privilege_drop.os.geteuid", lambda: 0)
    monkeypatch.setattr("daemoneye.daemon.privilege_drop.pwd.getpwnam", _no_such_user)


def _load(tmp_path: Path, mode: Mode, text: str = "") -> Any:
    config = tmp_path / "config.toml"
    config.write_text(text)
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    return load_config(mode=mode, config_file=config, env=env, euid=0)


@pytest.mark.usefixtures("as_root")
def test_a_user_mode_daemon_at_the_default_keeps_uid_0_when_the_user_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = effective_user(_load(tmp_path, Mode.USER))
    assert loaded.config.daemon.user == "root"
    assert "keeps uid 0 without capabilities" in caplog.text


@pytest.mark.usefixtures("as_root")
def test_a_named_user_must_exist(tmp_path: Path) -> None:
    loaded = _load(tmp_path, Mode.USER, '[daemon]\nuser = "daemoneye"\n')
    assert effective_user(loaded).config.daemon.user == "daemoneye"  # refused later, by name


@pytest.mark.usefixtures("as_root")
def test_a_system_daemon_never_falls_back(tmp_path: Path) -> None:
    assert effective_user(_load(tmp_path, Mode.SYSTEM)).config.daemon.user == "daemoneye"


def test_an_existing_default_user_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("daemoneye.daemon.privilege_drop.os.geteuid", lambda: 0)
    monkeypatch.setattr(
        "daemoneye.daemon.privilege_drop.pwd.getpwnam", lambda name: pwd.getpwuid(os.getuid())
    )
    assert effective_user(_load(tmp_path, Mode.USER)).config.daemon.user == "daemoneye"
