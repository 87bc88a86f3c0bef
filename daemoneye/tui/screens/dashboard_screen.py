"""What every dashboard screen shares: the header, the screen switcher, the footer, and the
palette commands it offers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult, SystemCommand
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer

from daemoneye.tui.logic.connection import Part
from daemoneye.tui.widgets.nav_bar import NavBar, NavItem
from daemoneye.tui.widgets.status_header import StatusHeader

if TYPE_CHECKING:
    from daemoneye.tui.app import DaemonEyeApp

# (title, help, action on the screen)
PaletteEntry = tuple[str, str, str]
__all__ = ["DashboardScreen", "NavItem", "PaletteEntry"]
WIDE = 120  # from this many columns a screen uses its wide layout


class DashboardScreen(Screen[None]):
    """A screen of the dashboard; subclasses yield their body from `compose_body`."""

    MODE: ClassVar[str] = ""
    PALETTE: ClassVar[tuple[PaletteEntry, ...]] = ()
    # (keys, what they do) for the help screen; a test checks it names every binding.
    HELP_KEYS: ClassVar[tuple[tuple[str, str], ...]] = ()

    @property
    def dashboard(self) -> DaemonEyeApp:
        return cast("DaemonEyeApp", self.app)

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        yield NavBar(self.dashboard.nav_items, id="nav")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    # From how many columns this screen uses its wide layout (a screen may need more).
    WIDE_FROM: ClassVar[int] = WIDE

    def on_resize(self, event: Resize) -> None:
        narrow = event.size.width < self.WIDE_FROM
        if narrow != self.has_class("-narrow"):
            self.set_class(narrow, "-narrow")
            self.layout_changed()

    def layout_changed(self) -> None:
        """Called when the screen switches between its narrow and wide layouts."""

    def on_mount(self) -> None:
        self.query_one(NavBar).current = self.MODE
        self.watch(self.app, "header_parts", self._header_changed)

    def _header_changed(self, parts: tuple[Part, ...]) -> None:
        self.query_one(StatusHeader).parts = parts

    def palette_commands(self) -> Iterator[SystemCommand]:
        for title, help_text, action in self.PALETTE:
            yield SystemCommand(title, help_text, self._action_runner(action))

    def _action_runner(self, action: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await self.run_action(action)

        return run
