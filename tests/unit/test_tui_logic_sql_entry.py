"""Enter and ↑/↓ in the SQL editor: sqlite3's shell rule, history only from the edges."""

from __future__ import annotations

import pytest

from daemoneye.tui.logic.query_history import QueryHistory
from daemoneye.tui.logic.sql_entry import EnterAction, arrow_walks_history, editable, on_enter


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("SELECT 1;", EnterAction.RUN),
        ("SELECT pid\nFROM live_processes;\n", EnterAction.RUN),
        ("SELECT 1", EnterAction.NEWLINE),
        ("SELECT pid,\n  name", EnterAction.NEWLINE),
        ("SELECT ';'", EnterAction.NEWLINE),  # the ; is inside a string
        ("SELECT 1 -- done;", EnterAction.NEWLINE),  # ... or a comment
        ("SELECT 1; SELECT 2", EnterAction.NEWLINE),  # the last statement is open
        ('SELECT "a;b" FROM x;', EnterAction.RUN),
        (".tables", EnterAction.RUN),
        ("  .schema processes", EnterAction.RUN),
        (".nope", EnterAction.RUN),  # runs, and says what there is
        ("", EnterAction.NOTHING),
        ("  \n\t", EnterAction.NOTHING),
    ],
)
def test_enter_runs_a_complete_statement_or_a_dot_command(text: str, action: EnterAction) -> None:
    assert on_enter(text) is action


def test_enter_on_huge_hostile_text_is_a_plain_answer() -> None:
    """Pasted text may be anything: NULs, a megabyte, an unclosed quote."""
    assert on_enter("SELECT '" + "\x00x" * 500_000) is EnterAction.NEWLINE
    assert on_enter("SELECT 1 /* " + "*" * 1_000_000 + " */;") is EnterAction.RUN
    assert on_enter("SELECT 1;\x00") is EnterAction.RUN
    assert on_enter("SELECT '\ud800';") is EnterAction.RUN


@pytest.mark.parametrize(
    ("key", "first", "last", "walks"),
    [
        ("up", True, True, True),  # one line: both edges
        ("down", True, True, True),
        ("up", True, False, True),
        ("down", True, False, False),  # first of two lines: ↓ moves to the second
        ("up", False, True, False),  # last of two: ↑ moves to the first
        ("down", False, True, True),
        ("up", False, False, False),
        ("down", False, False, False),
        ("left", True, True, False),
    ],
)
def test_arrows_walk_history_only_from_the_first_and_last_line(
    key: str, first: bool, last: bool, walks: bool
) -> None:
    assert arrow_walks_history(key, on_first_line=first, on_last_line=last) is walks


def test_history_keeps_a_multi_line_query_whole() -> None:
    history = QueryHistory()
    history.add("SELECT pid\nFROM live_processes;\n")
    history.add(".tables")
    assert history.older("draft\nline") == ".tables"
    assert history.older("") == "SELECT pid\nFROM live_processes;"
    assert history.newer() == ".tables"
    assert history.newer() == "draft\nline"


def test_editable_text_shows_control_characters_and_keeps_lines_and_tabs() -> None:
    """Copied from a coloured terminal: the escape must not reach the screen raw."""
    pasted = "SELECT\tpid\r\nFROM x\rWHERE name = '\x1b[31mred\x00\u202e';"
    assert editable(pasted) == "SELECT\tpid\nFROM x\nWHERE name = '\\x1b[31mred\\x00\\u202e';"
    assert editable("SELECT 1;") == "SELECT 1;"
    assert len(editable("\x1b" * 200_000)) == 4 * 200_000
