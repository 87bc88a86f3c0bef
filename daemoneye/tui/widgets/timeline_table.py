"""The timeline's table: events newest first, keyed by event, columns as wide as they hold."""

from __future__ import annotations

from collections.abc import Sequence

from daemoneye.tui.logic.cells import RowView, content_widths
from daemoneye.tui.logic.timeline import TIMELINE_COLUMNS
from daemoneye.tui.widgets.live_table import LiveTable


class TimelineTable(LiveTable):
    """exec, exit, alert and change events; the detail column takes the rest."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            [(key, label, limit, key in ("pid", "ppid")) for key, label, limit in TIMELINE_COLUMNS],
            id=id,
        )
        self._rows: Sequence[RowView] = ()

    def sync(self, rows: Sequence[RowView]) -> None:
        self._rows = rows
        self.refit()
        super().sync(rows)

    def fit_columns(self, room: int) -> Sequence[int]:
        labels = [label for _, label, _ in TIMELINE_COLUMNS]
        limits = [limit for _, _, limit in TIMELINE_COLUMNS]
        return content_widths(labels, limits, self._rows, room if room > 0 else None)
