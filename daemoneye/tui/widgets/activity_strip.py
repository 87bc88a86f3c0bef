"""The timeline's activity strip: one cell per bucket of history, drawn from the cells
`tui/logic/timeline.py` computes; colours from the theme only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.widget import Widget

from daemoneye.tui.logic.timeline import StripCell
from daemoneye.tui.widgets.component_style import component_style


class ActivityStrip(Widget):
    """New processes per bucket as bars, alerts marked, the cursor's bucket highlighted."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "activity-strip--bar",
        "activity-strip--alert",
        "activity-strip--cursor",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._cells: Sequence[StripCell] = ()

    def show(self, cells: Sequence[StripCell]) -> None:
        if list(cells) != list(self._cells):
            self._cells = tuple(cells)
            self.refresh()

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="crop", end="")
        styles = {
            "": component_style(self, "activity-strip--bar"),
            "alert": component_style(self, "activity-strip--alert"),
            "cursor": component_style(self, "activity-strip--cursor"),
        }
        for cell in self._cells:
            text.append(cell.char, styles.get(cell.tone, styles[""]))
        return text
