"""`daemoneye` with no arguments: the dashboard on a terminal, the help text otherwise."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from daemoneye import cli
from daemoneye.config.loading import load_config
from daemoneye.config.schema import LoadedConfig
from daemoneye.paths import Mode
from daemoneye.tui import launcher


def test_without_a_terminal_it_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == cli.EXIT_USAGE
    assert "usage: daemoneye" in capsys.readouterr().err


def test_on_a_terminal_it_opens_the_dashboard(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    opened: list[dict[str, Any]] = []

    def run_dashboard(loaded: LoadedConfig, **options: Any) -> int:
        opened.append({"socket": loaded.paths.socket, **options})
        return 0

    monkeypatch.setattr(launcher, "run_dashboard", run_dashboard)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert cli.main(["--mode", "user"]) == 0
    assert opened == [
        {
            "socket": tmp_path / "daemoneye.sock",
            "config_file": None,
            "socket_given": False,
            "remotes": {},
        }
    ]
    assert cli.main(["--socket", str(tmp_path / "other.sock")]) == 0
    assert opened[-1]["socket"] == tmp_path / "other.sock" and opened[-1]["socket_given"]


def test_a_given_socket_without_a_daemon_is_an_error_not_a_private_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert cli.main(["--socket", str(tmp_path / "none.sock")]) == 1
    assert f"no daemon answers on {tmp_path / 'none.sock'}" in capsys.readouterr().err


def test_nobody_listening_on_a_socket_path_is_not_a_daemon(tmp_path: Path) -> None:
    loaded = load_config(
        mode=Mode.USER, env={"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    )
    assert not launcher.daemon_answers(loaded.paths.socket)
    (tmp_path / "daemoneye.sock").write_text("not a socket")
    assert not launcher.daemon_answers(loaded.paths.socket)
