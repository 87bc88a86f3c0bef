"""The dashboard's screens, listed once: the app's modes, its number keys, the command palette,
the nav bar and the help screen are all built from `SCREENS`."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

from daemoneye.tui.screens.alerts import AlertsScreen
from daemoneye.tui.screens.dashboard_screen import DashboardScreen, NavItem
from daemoneye.tui.screens.health import HealthScreen
from daemoneye.tui.screens.processes import ProcessesScreen
from daemoneye.tui.screens.query import QueryScreen
from daemoneye.tui.screens.rules import RulesScreen
from daemoneye.tui.screens.timeline import TimelineScreen


@dataclass(frozen=True, slots=True)
class ScreenEntry:
    """One screen of the dashboard: the key that shows it, its class, its title."""

    key: str
    screen: type[DashboardScreen]
    title: str

    @property
    def mode(self) -> str:
        return self.screen.MODE


SCREENS: tuple[ScreenEntry, ...] = (
    ScreenEntry("1", ProcessesScreen, "Processes"),
    ScreenEntry("2", AlertsScreen, "Alerts"),
    ScreenEntry("3", RulesScreen, "Rules"),
    ScreenEntry("4", QueryScreen, "Query"),
    ScreenEntry("5", HealthScreen, "Health"),
    ScreenEntry("6", TimelineScreen, "Timeline"),
)


def modes() -> dict[str, type[DashboardScreen]]:
    return {entry.mode: entry.screen for entry in SCREENS}


def switch_bindings() -> list[Binding]:
    """One key per screen, hidden from the footer (the nav bar shows them)."""
    return [
        Binding(entry.key, f"switch_mode('{entry.mode}')", entry.title, show=False)
        for entry in SCREENS
    ]


def nav_items() -> tuple[NavItem, ...]:
    return tuple(NavItem(entry.key, entry.mode, entry.title) for entry in SCREENS)


def help_sections() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """(title, (keys, what) pairs) per section of the help screen: what works everywhere, then
    each screen's own keys."""
    everywhere = (
        (f"{SCREENS[0].key} … {SCREENS[-1].key}", ", ".join(entry.mode for entry in SCREENS)),
        ("ctrl+p", "command palette: every action, themes"),
        ("? F1", "this help"),
        ("h", "next host (--host a --host b)"),
        ("q", "quit"),
    )
    return (
        ("Everywhere", everywhere),
        *((entry.title, entry.screen.HELP_KEYS) for entry in SCREENS),
    )
