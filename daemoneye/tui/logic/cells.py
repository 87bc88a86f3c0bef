"""Rows as plain data: cells, rows, and which rows of a table changed.

A live table is told its order of row keys and which keys changed since the last time; it pulls
the cells of a row when it draws it (see `widgets/live_table.py`). The small tables (alerts,
rules) hand over whole `RowView` lists and `changed_keys` finds what differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from rich.cells import cell_len


class Cell(NamedTuple):
    """One table cell: literal text, a semantic tone (a theme variable's role) and alignment."""

    text: str
    tone: str = ""  # "", "dim", "new", "ended", "alert", or a severity name
    right: bool = False


class RowView(NamedTuple):
    """One row: a stable key (for processes f"{pid}:{start_time}") and its cells."""

    key: str
    cells: tuple[Cell, ...]


def changed_keys(shown: Mapping[str, tuple[Cell, ...]], rows: Sequence[RowView]) -> list[str]:
    """The keys whose cells differ between what a table shows and the wanted `rows`: changed,
    new, and no longer wanted. Unchanged rows usually share their cells tuple, which makes the
    comparison an identity check."""
    wanted = {row.key for row in rows}
    changed = [key for key in shown if key not in wanted]
    get = shown.get
    for key, cells in rows:
        old = get(key)
        if old is not cells and old != cells:
            changed.append(key)
    return changed


def content_widths(
    labels: Sequence[str],
    limits: Sequence[int],
    rows: Sequence[RowView],
    room: int | None = None,
    rest_min: int = 16,
) -> tuple[int, ...]:
    """The width of each column from what it holds: its widest cell or its label, at most
    its limit. A limit of 0 marks the column that takes what the others leave: it stays 0.
    With `room` (the cells all columns share), the widest columns give way, down to their
    label, until that column has `rest_min` cells."""
    widths = [cell_len(label) if limit else 0 for label, limit in zip(labels, limits, strict=True)]
    for index, limit in enumerate(limits):  # a column at a time: C loops over the rows
        if limit and widths[index] < limit:
            texts = [cells[index].text for _, cells in rows if len(cells) > index]
            # ASCII text is one cell a character; anything else is measured (wide characters
            # take two cells, combining ones none)
            measure = len if all(map(str.isascii, texts)) else cell_len
            widest = max(map(measure, texts), default=0)
            widths[index] = min(limit, max(widths[index], widest))
    if room is not None:
        floors = [cell_len(label) for label in labels]
        excess = sum(widths) + rest_min - room
        while excess > 0:
            index = max(range(len(widths)), key=lambda i: widths[i] - floors[i])
            if widths[index] <= floors[index]:
                break
            widths[index] -= 1
            excess -= 1
    return tuple(widths)
