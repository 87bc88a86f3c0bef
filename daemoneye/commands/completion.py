"""`daemoneye completion SHELL` and `daemoneye man`: shell completion (shtab) and the manual
page (argparse-manpage), both generated from the one argparse parser in cli.py, so a new
command or option is completed and documented the moment it is parsed."""

from __future__ import annotations

import argparse
import sys

import shtab

from daemoneye import __version__

SHELLS = ("bash", "zsh", "fish")


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell`, for the parser's program name."""
    script: str = shtab.complete(parser, shell=shell)
    return script


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
