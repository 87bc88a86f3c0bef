"""`daemoneye completion SHELL` and `daemoneye man`: shell completion (shtab) and the manual
page (argparse-manpage), both generated from the one argparse parser in cli.py, so a new
command or option is completed and documented the moment it is parsed."""

from __future__ import annotations

import argparse
import sys

from daemoneye import __version__

SHELLS = ("bash", "zsh", "fish")
# What cli.py sets as an argument's `complete`: "a file name", made shtab's FILE when a script
# is generated. shtab is imported by this command only: it loads importlib.metadata, 2.8 MiB
# of RSS in every process that parses a command line (the daemon's among them).
FILE_PATH = "daemoneye:file-path"


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell`, for the parser's program name."""
    import shtab

    _resolve_completions(parser, {FILE_PATH: shtab.FILE})
    script: str = shtab.complete(parser, shell=shell)
    return script


def _resolve_completions(parser: argparse.ArgumentParser, by_marker: dict[str, object]) -> None:
    """Replace the markers cli.py set as `complete` with shtab's values, in every subparser."""
    for action in parser._actions:
        marker = getattr(action, "complete", None)
        if isinstance(marker, str) and marker in by_marker:
            action.complete = by_marker[marker]  # type: ignore[attr-defined]
        if isinstance(action, argparse._SubParsersAction):
            for subparser in dict.fromkeys(action.choices.values()):  # aliases share one
                _resolve_completions(subparser, by_marker)


def man_page(parser: argparse.ArgumentParser) -> str:
    """The parser as a roff manual page, section 1 (`man -l -` reads it)."""
    from argparse_manpage.manpage import Manpage  # only this command needs it

    page = Manpage(parser)
    page.source = f"daemoneye {__version__}"
    page.manual = "DaemonEye Manual"
    return str(page)


def print_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    sys.stdout.write(completion_script(parser, shell))
    return 0


def print_man_page(parser: argparse.ArgumentParser) -> int:
    sys.stdout.write(man_page(parser))
    return 0
