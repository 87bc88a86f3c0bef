"""The screen switcher under the header: one clickable label per screen."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

from textual.content import Content
from textual.events import Click
from textual.reactive import reactive
from textual.style import Style
from textual.widget import Widget

from daemoneye.tui.widgets.component_style import component_style

GAP = 1


class NavItem(NamedTuple):
    """One label of the bar: the key that shows the screen, its mode, its title."""

    key: str
    mode: str
    title: str


def label(key: str, title: str) -> str:
    return f" {key} {title} "


class NavBar(Widget):
    """Shows the screens with their keys; the current one is marked, each is clickable."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"nav-bar--current", "nav-bar--other"}

    current: reactive[str] = reactive("processes")

    def __init__(self, items: tuple[NavItem, ...], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.items = items

    def render(self) -> Content:
        current = Style.from_rich_style(component_style(self, "nav-bar--current"))
        other = Style.from_rich_style(component_style(self, "nav-bar--other"))
        return Content(" " * GAP).join(
            Content(label(key, title)).stylize(current if mode == self.current else other)
            for key, mode, title in self.items
        )

    async def on_click(self, event: Click) -> None:
        start = 0
        for key, mode, title in self.items:
            end = start + len(label(key, title))
            if start <= event.x < end:
                await self.app.run_action(f"switch_mode('{mode}')")
                return
            start = end + GAP
