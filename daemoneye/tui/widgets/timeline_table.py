"""The timeline's table: events newest first, keyed by event, columns as wide as they hold."""

from __future__ import annotations

from daemoneye.tui.logic.timeline import TIMELINE_COLUMNS
from daemoneye.tui.widgets.fitted_table import FittedTable


class TimelineTable(FittedTable):
    """exec, exit, alert and change events; the detail column takes the rest."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            [(key, label, limit, key in ("pid", "ppid")) for key, label, limit in TIMELINE_COLUMNS],
            id=id,
        )
