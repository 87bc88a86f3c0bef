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
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from daemoneye.text import csv_cell, json_text, shorten, visible

FORMATS = ("table", "json", "ndjson", "csv")


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
) -> None:
    """Print rows. `max_width` limits a table to the terminal; None means the terminal's width
    when stdout is a terminal and unlimited when it is a pipe (so nothing is lost in a file).
    `headings` renames columns in a table only (`cpu_percent` shown as `cpu%`)."""
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
        if max_width is None and out.isatty():
            max_width = shutil.get_terminal_size().columns
        shown = [headings.get(c, c) for c in columns] if headings else columns
        _table(shown, rows, out, max_width)
    else:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO, max_width: int | None
) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    if max_width is not None and widths:
        # The last column (usually a command line) gives way first.
        fixed = sum(widths[:-1]) + 2 * (len(widths) - 1)
        widths[-1] = max(len(columns[-1]), min(widths[-1], max_width - fixed))
    out.write(
        "  ".join(
            visible(c).upper().ljust(w) for c, w in zip(columns, widths, strict=True)
        ).rstrip()
        + "\n"
    )
    for row in cells:
        out.write(
            "  ".join(shorten(t, w).ljust(w) for t, w in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )
