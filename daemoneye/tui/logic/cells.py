"""Rows as plain data, and the diff that turns a wanted table into a few table operations.

Every live table (processes, alerts, rules) is described as an ordered list of `RowView`s; the
widget keeps what it shows and applies only the difference (STYLE.md 6): stale keys removed,
changed cells updated, new rows added, and the order fixed when it differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class TableOps:
    """What must change in a table to show the wanted rows."""

    removed: list[str] = field(default_factory=list)
    updated: list[tuple[str, int, Cell]] = field(default_factory=list)  # key, column, cell
    added: list[RowView] = field(default_factory=list)
    order: list[str] | None = None  # the full wanted order, when appending is not enough

    @property
    def empty(self) -> bool:
        return not (self.removed or self.updated or self.added or self.order is not None)


def diff_rows(shown: Mapping[str, tuple[Cell, ...]], shown_order: Sequence[str],
              rows: Sequence[RowView],
              changed: Mapping[str, RowView | None] | None = None) -> TableOps:
    """The operations that turn the table (`shown` cells in `shown_order`) into `rows`.

    `changed`, when the caller knows it, names every row that may differ (None: gone); the
    other rows are then taken as they are, so the cost is that of the changes plus the order.
    """
    if changed is not None:
        return _diff_changed(shown, shown_order, rows, changed)
    wanted = {row.key for row in rows}
    ops = TableOps(removed=[key for key in shown_order if key not in wanted])
    for row in rows:
        old = shown.get(row.key)
        if old is row.cells:  # the usual case: an unchanged, cached row
            continue
        if old is None:
            ops.added.append(row)
        elif old != row.cells:
            ops.updated.extend((row.key, index, new) for index, (before, new)
                               in enumerate(zip(old, row.cells, strict=True)) if before != new)
    desired = [row.key for row in rows]
    after = [key for key in shown_order if key in wanted]
    after.extend(row.key for row in ops.added)
    if after != desired:
        ops.order = desired
    return ops


def _diff_changed(shown: Mapping[str, tuple[Cell, ...]], shown_order: Sequence[str],
                  rows: Sequence[RowView], changed: Mapping[str, RowView | None]) -> TableOps:
    ops = TableOps()
    for key, row in changed.items():
        old = shown.get(key)
        if row is None:
            if old is not None:
                ops.removed.append(key)
        elif old is None:
            ops.added.append(row)
        elif old is not row.cells and old != row.cells:
            ops.updated.extend((key, index, new) for index, (before, new)
                               in enumerate(zip(old, row.cells, strict=True)) if before != new)
    gone = set(ops.removed)
    after = [key for key in shown_order if key not in gone] if gone else list(shown_order)
    after.extend(row.key for row in ops.added)
    desired = [row.key for row in rows]
    if after != desired:
        ops.order = desired
    return ops
