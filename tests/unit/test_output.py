"""Command output: hostile process text never reaches the terminal as control sequences."""

from __future__ import annotations

import csv
import io
import json

from hypothesis import given
from hypothesis import strategies as st

from daemoneye.output import render
from daemoneye.text import visible

HOSTILE = "evil\x1b]0;owned\x07\x1b[2J[red]x[/red]\nline2\u202e"


def test_table_escapes_control_characters_and_keeps_markup_literal() -> None:
    out = io.StringIO()
    render(("pid", "name"), [(1, HOSTILE)], "table", out)
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b]0;owned\\x07\\x1b[2J[red]x[/red]\\nline2\\u202e" in text
    assert text.count("\n") == 2  # header + one row: the embedded newline did not split it


def test_json_and_ndjson_round_trip_exact_text() -> None:
    for fmt in ("json", "ndjson"):
        out = io.StringIO()
        render(("pid", "name"), [(1, HOSTILE), (2, None)], fmt, out)
        if fmt == "json":
            rows = json.loads(out.getvalue())
        else:
            rows = [json.loads(line) for line in out.getvalue().splitlines()]
        assert rows == [{"pid": 1, "name": HOSTILE}, {"pid": 2, "name": None}]


def test_csv_round_trips_newlines_and_commas() -> None:
    out = io.StringIO()
    render(("pid", "cmdline"), [(7, 'a,b\n"c"')], "csv", out)
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["pid", "cmdline"], ["7", 'a,b\n"c"']]


def test_table_fits_the_width_by_cutting_the_last_column() -> None:
    out = io.StringIO()
    render(("pid", "cmdline"), [(1, "x" * 500)], "table", out, max_width=40)
    assert all(len(line) <= 40 for line in out.getvalue().splitlines())
    assert out.getvalue().rstrip().endswith("…")


@given(st.text())
def test_visible_output_has_no_control_characters(text: str) -> None:
    shown = visible(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
