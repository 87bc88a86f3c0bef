"""The live process table: one row per instance, keyed f"{pid}:{start_time}"."""

from __future__ import annotations

from daemoneye.tui.logic.process_row import PROCESS_COLUMNS, process_columns
from daemoneye.tui.widgets.live_table import ColumnSpec, LiveTable


class ProcessTable(LiveTable):
    """Processes as `ProcessView` orders them; clicking a header sorts by that column."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__([(c.key, c.label, c.width, c.right) for c in PROCESS_COLUMNS], id=id)

    def show_container(self, show: bool) -> None:
        """Add or remove the CONTAINER column (the rows' cells follow ProcessView's)."""
        columns = tuple(ColumnSpec(c.key, c.label, c.width, c.right) for c in process_columns(show))
        if columns != self.columns:
            self.set_columns(columns)
