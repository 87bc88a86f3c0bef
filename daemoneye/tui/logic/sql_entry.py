"""What Enter and ↑/↓ do in the query screen's SQL editor, as sqlite3's shell has it: Enter
runs the text once it is a complete statement (ends in `;` outside quotes and comments) or a
dot command, and otherwise starts a new line; ↑ on the first line and ↓ on the last walk the
history, elsewhere they move between lines. Pure: the widget asks, these answer."""

from __future__ import annotations

import sqlite3
from enum import Enum

from daemoneye.text import visible
from daemoneye.tui.logic.query_commands import is_dot_command


class EnterAction(Enum):
    RUN = "run"
    NEWLINE = "newline"
    NOTHING = "nothing"  # blank text: no empty lines to run or to pile up


def on_enter(text: str) -> EnterAction:
    """sqlite3's own rule (`complete_statement` only tokenizes: no database is touched).
    Pasted text may hold NULs or lone surrogates, which `complete_statement` raises on: they
    are blanked for the check only, and the daemon judges the text itself."""
    if not text.strip():
        return EnterAction.NOTHING
    probe = text.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")
    if is_dot_command(text) or sqlite3.complete_statement(probe):
        return EnterAction.RUN
    return EnterAction.NEWLINE


def arrow_walks_history(key: str, *, on_first_line: bool, on_last_line: bool) -> bool:
    """↑ recalls an older query from the first line, ↓ a newer one from the last line; on the
    lines between they move the cursor, so a multi-line query can be edited."""
    if key == "up":
        return on_first_line
    if key == "down":
        return on_last_line
    return False


def editable(text: str) -> str:
    """Text for the editor: line ends as `\\n` (CRLF and CR too), tabs kept, and every other
    control or format character (`\\x1b` from a coloured terminal, `\\u202e`) as a visible
    escape, so a paste cannot drive the terminal or hide what will run. Linear in the text."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join("\t".join(visible(part) for part in line.split("\t")) for line in lines)
