"""The SQL line: an Input that walks its history with ↑ and ↓."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input

from daemoneye.tui.logic.query_history import QueryHistory


class SqlInput(Input):
    """An Input with a `QueryHistory`; Escape hands the keys back to the screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "older", "Older", show=False),
        Binding("down", "newer", "Newer", show=False),
        Binding("escape", "leave", "Leave", show=False),
    ]

    def __init__(self, *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(placeholder=placeholder, id=id)
        self.history = QueryHistory()

    def action_older(self) -> None:
        self.value = self.history.older(self.value)
        self.cursor_position = len(self.value)

    def action_newer(self) -> None:
        self.value = self.history.newer()
        self.cursor_position = len(self.value)

    def action_leave(self) -> None:
        self.screen.focus_next()
