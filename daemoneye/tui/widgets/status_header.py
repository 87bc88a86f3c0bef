"""The top line: host, connection state and counts, each part styled by its tone."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from daemoneye.tui.logic.connection import Part
from daemoneye.tui.widgets.component_style import component_style

HEADER_TONES = ("title", "ok", "dim", "critical", "high", "medium", "low", "info")


class StatusHeader(Widget):
    """Host, connection state and counts; updated by the app, rendered as literal text."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"status-header--{tone}" for tone in HEADER_TONES}

    parts: reactive[tuple[Part, ...]] = reactive(())

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        for part, tone in self.parts:
            style = component_style(self, f"status-header--{tone}") if tone else ""
            text.append(part, style)
        return text
