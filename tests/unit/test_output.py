"""Command output: hostile process text never reaches the terminal as control sequences."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len

from daemoneye.output import fit_widths, render, set_wide, table_width
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


def test_the_widest_text_column_gives_way_first_and_numbers_keep_their_digits() -> None:
    out = io.StringIO()
    rows = [(123456789, "name-of-thirty-characters-long", "c" * 200, "root")]
    render(("pid", "name", "cmdline", "user"), rows, "table", out, max_width=80)
    heading, line = out.getvalue().splitlines()
    assert heading.split() == ["PID", "NAME", "CMDLINE", "USER"]
    assert line.split() == ["123456789", "name-of-thirty-characters-long", "c" * 30 + "…", "root"]
    assert len(line) == 80


def test_wide_characters_are_measured_in_terminal_cells() -> None:
    out = io.StringIO()
    render(("pid", "name"), [(1, "日本語" * 20)], "table", out, max_width=30)
    lines = out.getvalue().splitlines()
    assert all(cell_len(line) <= 30 for line in lines)
    assert lines[1].endswith("…")


def test_a_huge_cell_costs_no_more_than_the_width() -> None:
    out = io.StringIO()
    render(("pid", "cmdline"), [(1, "\x1b" * 2_000_000)], "table", out, max_width=50)
    assert len(out.getvalue()) < 200


@given(
    st.lists(st.tuples(st.integers(1, 300), st.booleans(), st.integers(0, 20)), min_size=1),
    st.integers(0, 400),
)
def test_fit_widths_fits_when_it_can_and_never_touches_numbers(
    columns: list[tuple[int, bool, int]], limit: int
) -> None:
    widths = [w for w, _, _ in columns]
    shrinkable = [s for _, s, _ in columns]
    floors = [min(f, w) for w, _, f in columns]
    fitted = fit_widths(widths, shrinkable, floors, limit)
    assert all(f <= w for f, w in zip(fitted, widths, strict=True))
    assert all(f >= floor for f, floor in zip(fitted, floors, strict=True))
    assert all(f == w for f, w, s in zip(fitted, widths, shrinkable, strict=True) if not s)
    least = sum(floor if s else w for w, s, floor in zip(widths, shrinkable, floors, strict=True))
    assert sum(fitted) == max(least, min(limit, sum(widths)))


def test_table_width_is_the_terminals_unless_wide_and_never_cuts_a_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe = io.StringIO()
    monkeypatch.setenv("COLUMNS", "77")
    assert table_width(pipe) is None  # a file keeps everything, COLUMNS exported or not
    assert table_width(_Terminal()) == 77
    set_wide(True)
    try:
        assert table_width(_Terminal()) is None
    finally:
        set_wide(False)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


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


def test_a_kept_column_gives_way_only_after_the_others() -> None:
    out = io.StringIO()
    rows = [("a-rule-id-of-some-length", "Some long rule name " * 3, "built-in/x.toml:12")]
    render(("id", "name", "source"), rows, "table", out, max_width=50, keep=("id",))
    line = out.getvalue().splitlines()[1]
    assert line.startswith("a-rule-id-of-some-length  ")
    assert len(line) <= 50
