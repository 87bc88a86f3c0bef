"""Command output: hostile process text never reaches the terminal as control sequences."""

from __future__ import annotations

import csv
import io
import json
import re

from hypothesis import given
from hypothesis import strategies as st

from daemoneye.output import render
from daemoneye.text import json_text, visible

# What a terminal, log viewer or spreadsheet would act on (newlines are checked separately).
RAW = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e"
    "\u2066-\u2069\ufeff\ud800-\udfff]"
)
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


def test_csv_keeps_commas_and_quotes_and_shows_newlines() -> None:
    out = io.StringIO()
    render(("pid", "cmdline"), [(7, 'a,b\n"c"')], "csv", out)
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["pid", "cmdline"], ["7", 'a,b\\n"c"']]
    assert out.getvalue().count("\n") == 2  # one record per line


def test_csv_escapes_control_characters_like_the_table() -> None:
    out = io.StringIO()
    render(("pid", "name"), [(1, HOSTILE + "\x9b\x7f")], "csv", out)
    text = out.getvalue()
    assert not RAW.search(text.replace("\n", "")), text
    assert list(csv.reader(io.StringIO(text)))[1] == ["1", visible(HOSTILE + "\x9b\x7f")]


def test_csv_neutralises_formulas_but_keeps_numbers_numeric() -> None:
    out = io.StringIO()
    rows = [
        (
            -5,
            '=HYPERLINK("http://x")',
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\r=1",
            -1.5,
            "plain",
            "a=b",
        )
    ]
    render(("n", "a", "b", "c", "d", "e", "f", "g", "h", "i"), rows, "csv", out)
    cells = list(csv.reader(io.StringIO(out.getvalue())))[1]
    assert cells == [
        "-5",
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\\tx",
        "'\\r=1",
        "-1.5",
        "plain",
        "a=b",
    ]


@given(st.lists(st.one_of(st.text(), st.integers(), st.none()), min_size=1, max_size=5))
def test_csv_cells_are_never_formulas_nor_raw_controls(values: list[str | int | None]) -> None:
    out = io.StringIO()
    columns = tuple(f"c{i}" for i in range(len(values)))
    render(columns, [tuple(values)], "csv", out)
    text = out.getvalue()
    assert not RAW.search(text.replace("\n", ""))
    assert text.count("\n") == 2
    (cells,) = list(csv.reader(io.StringIO(text)))[1:]
    for value, cell in zip(values, cells, strict=True):
        if isinstance(value, str):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
            assert cell in (visible(value), "'" + visible(value))
        else:
            assert cell == ("" if value is None else str(value))


def test_json_escapes_del_c1_and_bidi_and_still_round_trips() -> None:
    name = "a\x7fb\x9bc\u202ed\u2066e\x1bf\ud800"
    for fmt in ("json", "ndjson"):
        out = io.StringIO()
        render(("pid", "name"), [(1, name)], fmt, out)
        text = out.getvalue()
        assert not RAW.search(text.replace("\n", "")), text
        assert "\\u007f" in text and "\\u009b" in text and "\\u202e" in text
        loaded = json.loads(text)
        assert (loaded[0] if fmt == "json" else loaded)["name"] == name


@given(st.text())
def test_json_output_holds_no_raw_unsafe_character(name: str) -> None:
    out = io.StringIO()
    render(("name",), [(name,)], "ndjson", out)
    line = out.getvalue()
    assert not RAW.search(line.rstrip("\n"))
    assert json.loads(line) == {"name": name}


def test_table_fits_the_width_by_cutting_the_last_column() -> None:
    out = io.StringIO()
    render(("pid", "cmdline"), [(1, "x" * 500)], "table", out, max_width=40)
    assert all(len(line) <= 40 for line in out.getvalue().splitlines())
    assert out.getvalue().rstrip().endswith("…")


@given(st.text())
def test_visible_output_has_no_control_characters(text: str) -> None:
    shown = visible(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)


def test_table_headers_are_escaped_like_cells() -> None:
    out = io.StringIO()
    render(["na\x1b]0;x\x07me", "c"], [["a\x1bb", 1]], "table", out)
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()


def test_every_invisible_format_character_is_shown_and_json_round_trips_it() -> None:
    hidden = "a\u00adb\U000e0041c\u206ad\u0600e"
    assert visible(hidden) == "a\\xadb\\U000e0041c\\u206ad\\u0600e"
    encoded = json_text({"name": hidden})
    assert json.loads(encoded) == {"name": hidden}
    assert "\U000e0041" not in encoded and "\u00ad" not in encoded
