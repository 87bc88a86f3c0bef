"""Command output: one result set printed as a table, JSON, NDJSON or CSV.

stdout carries results only. Process names and command lines are attacker-controlled, so every
format escapes them (daemoneye/text.py): table cells are made visible, JSON writes DEL, C1 and
bidi/format characters as \\u escapes, and CSV cells are made visible and a cell a spreadsheet
would run as a formula (text starting with =, +, -, @, tab or CR) gets a leading quote. Numbers
stay numbers: only text is quoted, so a negative pid or count is still numeric.

The machine formats (json, ndjson, csv) carry the store's names and values in every command:
`cpu_percent`, `start_time`, `last_seen` (times are epoch seconds, as the store holds them),
`rss` in bytes, booleans as true/false, and lists (`argv`, `tags`) as JSON arrays (in CSV as a
compact JSON array in one cell). Tables are for people: their headings may be shorter
(`headings`) and their cells formatted (`5m ago`, `12.0M`) by the command.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TextIO

from rich.cells import cell_len, set_cell_size

from daemoneye.text import csv_cell, json_text, visible

FORMATS = ("table", "json", "ndjson", "csv")
_wide = False


def set_wide(wide: bool) -> None:
    """`--wide`: tables are never cut to a width. Set once by the entry point, like logging."""
    global _wide
    _wide = wide


def table_width(out: TextIO) -> int | None:
    """The width a table must fit, None for no limit: none with `--wide`; on a terminal its
    width, or `COLUMNS` when set (shutil.get_terminal_size); into a pipe or file none, even
    when COLUMNS is exported (as shells, CI runners and pytest-xdist do): what goes to a file
    is never cut."""
    if _wide or not out.isatty():
        return None
    return shutil.get_terminal_size().columns


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple | list):
        return " ".join(_cell(part) for part in value)
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.0f}"
    if isinstance(value, bytes):
        return value.hex()
    return visible(str(value))


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [_json_value(part) for part in value]
    return value


def _csv_value(value: Any) -> Any:
    """A list in one CSV cell: its compact JSON text (then made safe like any text)."""
    if isinstance(value, tuple | list):
        return json_text(_json_value(value), compact=True)
    return value


def render(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str,
    out: TextIO,
    *,
    max_width: int | None = None,
    headings: Mapping[str, str] | None = None,
    keep: Collection[str] = (),
) -> None:
    """Print rows. A table fits `max_width`, by default `table_width(out)`: the terminal's
    width on a terminal, unlimited in a pipe (so nothing is lost in a file), see there.
    `headings` renames columns in a table only (`cpu_percent` shown as `cpu%`); the columns
    in `keep` are cut only when no other column can give way."""
    if fmt == "json":
        out.write(
            json_text(
                [{c: _json_value(v) for c, v in zip(columns, row, strict=True)} for row in rows],
                indent=2,
            )
        )
        out.write("\n")
    elif fmt == "ndjson":
        for row in rows:
            out.write(json_text({c: _json_value(v) for c, v in zip(columns, row, strict=True)}))
            out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([csv_cell(c) for c in columns])
        for row in rows:
            writer.writerow([csv_cell(_csv_value(v)) for v in row])
    elif fmt == "table":
        if max_width is None:
            max_width = table_width(out)
        shown = [headings.get(c, c) for c in columns] if headings else columns
        _table(shown, rows, out, max_width, [c in keep for c in columns])
    else:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")


def fit_widths(
    widths: Sequence[int],
    shrinkable: Sequence[bool],
    floors: Sequence[int],
    limit: int,
    late: Sequence[bool] = (),
) -> list[int]:
    """Column widths whose sum fits `limit` (gaps already taken off): the widest shrinkable
    column gives way first, down to the next widest, then those together, and so on, none
    below its floor (its heading). Columns marked `late` (a rule id: the key a reader needs)
    give way only when the others are at their floors. Numeric columns keep their digits.
    When even the floors do not fit, the floors are returned (the terminal wraps those
    lines)."""
    return _level(_level(list(widths), shrinkable, floors, limit, late), shrinkable, floors, limit)


def _level(
    fitted: list[int],
    shrinkable: Sequence[bool],
    floors: Sequence[int],
    limit: int,
    late: Sequence[bool] = (),
) -> list[int]:
    excess = sum(fitted) - limit
    while excess > 0:
        movable = [
            i
            for i, w in enumerate(fitted)
            if shrinkable[i] and w > floors[i] and not (late and late[i])
        ]
        if not movable:
            break
        widest = max(fitted[i] for i in movable)
        at_widest = [i for i in movable if fitted[i] == widest]
        below = [fitted[i] for i in movable if fitted[i] < widest]
        target = max([*below, *(floors[i] for i in at_widest)])
        step = min(widest - target, -(-excess // len(at_widest)))
        for i in at_widest:
            cut = min(step, excess)
            fitted[i] -= cut
            excess -= cut
    return fitted


def _fit(text: str, width: int, right: bool) -> str:
    """`text` in exactly `width` terminal cells: cut with an ellipsis, or padded."""
    size = cell_len(text)
    if size > width:
        return set_cell_size(text, width - 1) + "…" if width > 0 else ""
    padding = " " * (width - size)
    return padding + text if right else text + padding


def _table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    out: TextIO,
    max_width: int | None,
    late: Sequence[bool],
) -> None:
    """Columns two spaces apart, widths measured in terminal cells (rich.cells: a CJK
    character takes two). Over `max_width` the widest text column gives way first and its
    cells end in an ellipsis (fit_widths). Numbers are right-aligned. (A rich `Table` lays
    out the same but took seconds for the 10,000 rows `query` may print.)"""
    headings = [visible(c).upper() for c in columns]
    cells = [[_cell(v) for v in row] for row in rows]
    if max_width is not None:
        # Nothing wider than the terminal is ever shown: bound the cost of measuring.
        cells = [[text[: max_width + 1] for text in row] for row in cells]
    widths = [cell_len(h) for h in headings]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], cell_len(text))
    numeric = [
        bool(rows) and all(row[i] is None or isinstance(row[i], int | float) for row in rows)
        for i in range(len(columns))
    ]
    if max_width is not None:
        gaps = 2 * (len(columns) - 1)
        floors = [min(cell_len(h), w) for h, w in zip(headings, widths, strict=True)]
        shrinkable = [not n for n in numeric]
        widths = fit_widths(widths, shrinkable, floors, max_width - gaps, late)
    for line in (headings, *cells):
        out.write(
            "  ".join(
                _fit(text, width, right)
                for text, width, right in zip(line, widths, numeric, strict=True)
            ).rstrip()
            + "\n"
        )


_STREAM_LAST_MIN = 20  # the last column's room before the `flexible` columns give way


class RowStream:
    """Rows printed one at a time as they happen (`alerts follow`), each flushed at once so a
    pipe (`| grep`) sees it: table and csv print their heading first; json prints one indented
    object per row (a stream `jq` reads), ndjson one line per row. A table's columns have the
    fixed `widths` given, except the last, which takes the rest of the width (uncut when the
    width is unlimited); on a narrow terminal the `flexible` columns and the last give way
    together (fit_widths). Escaping is as in `render`."""

    def __init__(
        self,
        columns: Sequence[str],
        fmt: str,
        out: TextIO,
        *,
        widths: Sequence[int] = (),
        headings: Mapping[str, str] | None = None,
        max_width: int | None = None,
        flexible: Collection[str] = (),
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.columns = tuple(columns)
        self.fmt = fmt
        self.out = out
        self._csv = csv.writer(out, lineterminator="\n")
        self._widths: list[int | None] = []
        if fmt == "table":
            shown = [visible((headings or {}).get(c, c)).upper() for c in columns]
            limit = table_width(out) if max_width is None else max_width
            fixed = list(widths[: len(columns) - 1])
            if limit is None:
                self._widths = [*fixed, None]
            else:
                room = limit - 2 * (len(columns) - 1)
                wanted = [*fixed, max(_STREAM_LAST_MIN, room - sum(fixed))]
                shrinkable = [c in flexible for c in columns[:-1]] + [True]
                floors = [min(cell_len(h), w) for h, w in zip(shown, wanted, strict=True)]
                self._widths = list(fit_widths(wanted, shrinkable, floors, room))
            self._line(shown)
        elif fmt == "csv":
            self._csv.writerow([csv_cell(c) for c in columns])
            out.flush()

    def _line(self, cells: Sequence[str]) -> None:
        parts = [
            text if width is None else _fit(text, width, False)
            for text, width in zip(cells, self._widths, strict=True)
        ]
        self.out.write("  ".join(parts).rstrip() + "\n")
        self.out.flush()

    def write(self, row: Sequence[Any]) -> None:
        if self.fmt == "table":
            self._line([_cell(v) for v in row])
            return
        if self.fmt == "csv":
            self._csv.writerow([csv_cell(_csv_value(v)) for v in row])
        else:
            record = {c: _json_value(v) for c, v in zip(self.columns, row, strict=True)}
            self.out.write(json_text(record, indent=2 if self.fmt == "json" else None) + "\n")
        self.out.flush()
