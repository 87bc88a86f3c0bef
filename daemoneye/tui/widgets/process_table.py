"""The live process table: one row per instance, keyed f"{pid}:{start_time}"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding, BindingType

from daemoneye.tui.logic.process_row import (
    PROCESS_COLUMNS,
    process_column_widths,
    process_columns,
)
from daemoneye.tui.widgets.live_table import ColumnSpec, LiveTable

SHIFT_STEP = 8  # characters the command line moves per key


class ProcessTable(LiveTable):
    """Processes as `ProcessView` orders them; clicking a header sorts by that column; → and
    ← (or > and <) scroll the command lines sideways."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right,greater_than_sign", "shift_command(1)", "Scroll right", show=False),
        Binding("left,less_than_sign", "shift_command(-1)", "Scroll left", show=False),
    ]
    SHIFTED_COLUMN = "cmd"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__([(c.key, c.label, c.width, c.right) for c in PROCESS_COLUMNS], id=id)
        self._container = False  # the CONTAINER column is shown (the C key)

    def show_container(self, show: bool) -> None:
        """Add or remove the CONTAINER column (the rows' cells follow ProcessView's)."""
        columns = tuple(ColumnSpec(c.key, c.label, c.width, c.right) for c in process_columns(show))
        self._container = show
        if columns != self.columns:
            self.set_columns(columns)

    def fit_columns(self, room: int) -> Sequence[int]:
        return process_column_widths(room, process_columns(self._container))

    def action_shift_command(self, direction: int) -> None:
        self.shift(direction * SHIFT_STEP)
