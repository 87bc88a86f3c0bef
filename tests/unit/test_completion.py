"""Shell completion and the man page come from the one parser: every command is in them, and
bash really completes (issue 18)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import pytest

from daemoneye import cli
from daemoneye.commands.completion import SHELLS, completion_script, man_page

# Spelled out as well as derived, so a parser that lost its commands cannot pass vacuously.
KNOWN_COMMANDS = {
    "daemon", "query", "processes", "health", "config", "rules", "alerts", "audit",
    "completion", "man", "timeline", "connections", "bridge",
}  # fmt: skip


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, list[str]]:
    """Every command path ('alerts', 'alerts list' …) with its subcommands."""
    found: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                found[prefix] = [*found.get(prefix, []), name]
                found.update(_commands(sub, path))
    return found


COMMANDS = _commands(cli.build_parser())


def test_the_parser_walk_finds_the_known_commands() -> None:
    assert set(COMMANDS[""]) == KNOWN_COMMANDS
    assert {"list", "show", "ack", "close"} <= set(COMMANDS["alerts"])


@pytest.mark.parametrize("shell", SHELLS)
def test_every_command_and_subcommand_is_in_the_completion_script(shell: str) -> None:
    script = completion_script(cli.build_parser(), shell)
    for names in COMMANDS.values():
        for name in names:
            assert name in script, f"{shell}: {name}"
    assert "output" in script and "wide" in script  # fish writes `-l wide`


def test_every_command_and_subcommand_is_in_the_man_page() -> None:
    page = man_page(cli.build_parser())
    assert page.startswith(".TH DAEMONEYE")
    for path, names in COMMANDS.items():
        for name in names:
            assert f"'daemoneye {path} {name}'".replace("  ", " ").replace("-", "\\-") in page, name


def test_completion_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "bash"]) == 0
    assert "_shtab_daemoneye" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["completion", "powershell"])


def _bash_complete(words: list[str]) -> list[str]:
    script = completion_script(cli.build_parser(), "bash")
    line = " ".join(words)
    program = (
        f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)}); "
        f"COMP_CWORD={len(words) - 1}; COMP_LINE={line!r}; COMP_POINT={len(line)}; "
        '_shtab_daemoneye; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_subcommands_and_choices() -> None:
    assert _bash_complete(["daemoneye", "al"]) == ["alerts"]
    assert set(_bash_complete(["daemoneye", "alerts", ""])) >= {"list", "show", "ack", "close"}
    assert set(_bash_complete(["daemoneye", "query", "-o", ""])) == {
        "table",
        "json",
        "ndjson",
        "csv",
    }


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man")
def test_man_renders_the_page() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daemoneye", "man"], capture_output=True, check=True, timeout=60
    )
    shown = subprocess.run(
        ["man", "-l", "-"],
        input=done.stdout,
        capture_output=True,
        check=True,
        timeout=60,
        env={**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100"},
    )
    text = shown.stdout.decode()
    assert "daemoneye alerts list" in text.replace("\u2010", "-")


@pytest.mark.parametrize(
    ("shell", "file_completion"),
    [
        ("bash", "_shtab_daemoneye_rules_validate_pos_0_COMPGEN=_shtab_compgen_files"),
        ("zsh", "_files"),
    ],
)
def test_file_arguments_complete_file_names(shell: str, file_completion: str) -> None:
    """cli.py marks file arguments without importing shtab; the marker becomes shtab's file
    completion in the script, down to a subcommand's positional argument."""
    script = completion_script(cli.build_parser(), shell)
    assert file_completion in script
    assert "daemoneye:file-path" not in script
