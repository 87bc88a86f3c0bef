"""The seed's program names are console scripts beside `daemoneye`, each doing its own job."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import pytest

from daemoneye import cli


def test_the_four_programs_are_console_scripts() -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["daemoneye"] == "daemoneye.cli:main"
    assert scripts["daemoneye-agent"] == "daemoneye.cli:agent_main"
    assert scripts["daemoneye-cli"] == "daemoneye.cli:cli_main"
    assert scripts["procmond"] == "daemoneye.procmond.main:main"


def test_daemoneye_cli_never_opens_the_dashboard(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["daemoneye-cli"])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(cli, "_dashboard", lambda args: pytest.fail("the dashboard opened"))
    assert cli.cli_main() == 2
    assert "COMMAND" in capsys.readouterr().err


def test_daemoneye_agent_is_the_daemon_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(sys, "argv", ["daemoneye-agent", "--interval", "0.5"])

    def fake_main(argv: list[str], **_: object) -> int:
        seen.append(list(argv))
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    assert cli.agent_main() == 0
    assert seen == [["daemon", "--interval", "0.5"]]
