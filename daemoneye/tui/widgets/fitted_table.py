"""A live table whose columns are as wide as what they hold."""

from __future__ import annotations

from collections.abc import Sequence

from daemoneye.tui.logic.cells import RowView, content_widths
from daemoneye.tui.widgets.live_table import LiveTable


class FittedTable(LiveTable):
    """Each column as wide as its widest cell, up to the width it was given (0: the column
    that takes the rest), measured again at every `sync`: a short time leaves its room to the
    columns beside it."""

    _rows: Sequence[RowView] = ()

    def __init__(
        self, columns: Sequence[tuple[str, str, int, bool]], *, id: str | None = None
    ) -> None:
        super().__init__(columns, id=id)
        # the widths given are limits: layout replaces the columns' widths with fitted ones
        self._labels = tuple(label for _, label, _, _ in columns)
        self._limits = tuple(limit for _, _, limit, _ in columns)

    def sync(self, rows: Sequence[RowView]) -> None:
        self._rows = rows
        self.refit()
        super().sync(rows)

    def fit_columns(self, room: int) -> Sequence[int]:
        return content_widths(self._labels, self._limits, self._rows, room if room > 0 else None)
