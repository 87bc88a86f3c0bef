"""A titled block of label/value lines whose values carry a tone (severity colours)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.style import Style
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
        text = Text(end="")
        label_style = self._style("label")
        for index, (label, value, tone) in enumerate(facts):
            if index:
                text.append("\n")
            text.append(f"{label:<{label_width}}", label_style)
            text.append(value, self._style(tone))
        self.update(text)
