"""Rows as plain data: cells, rows, and which rows of a table changed.

A live table is told its order of row keys and which keys changed since the last time; it pulls
the cells of a row when it draws it (see `widgets/live_table.py`). The small tables (alerts,
rules) hand over whole `RowView` lists and `changed_keys` finds what differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple


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
