"""A titled block of label/value lines whose values carry a tone (severity colours)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from daemoneye.tui.widgets.component_style import component_style

FACT_TONES = ("label", "dim", "critical", "high", "medium", "low", "info")


class FactPanel(Static):
    """Label/value lines; the values are literal text."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"fact-panel--{tone}" for tone in FACT_TONES}

    def _style(self, tone: str) -> Style:
        if not tone:
            return Style.null()
        return component_style(self, f"fact-panel--{tone}")

    def show(self, facts: Sequence[tuple[str, str, str]], label_width: int = 15) -> None:
        """One line per fact; a value too long for the panel wraps under the values, not
        under the labels."""
        grid = Table.grid()
        grid.add_column(width=label_width, no_wrap=True)
        grid.add_column(ratio=1, overflow="fold")
        label_style = self._style("label")
        for label, value, tone in facts:
            grid.add_row(Text(label, label_style, end=""), Text(value, self._style(tone), end=""))
        self.update(grid)
