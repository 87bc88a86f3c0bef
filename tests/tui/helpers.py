"""Helpers for Pilot and snapshot tests."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from daemoneye.tui.app import DaemonEyeApp
from daemoneye.tui.screens.dashboard_screen import DashboardScreen


async def settle(pilot: Pilot[Any], rounds: int = 4) -> None:
    """Let the feed worker deliver what the source has queued and the screen repaint; stop
    input cursors blinking so screenshots are stable."""
    for _ in range(rounds):
        await pilot.pause()
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    for area in pilot.app.screen.query(TextArea):
        area.cursor_blink = False
    await pilot.pause()


def dashboard(pilot: Pilot[Any]) -> DaemonEyeApp:
    assert isinstance(pilot.app, DaemonEyeApp)
    return pilot.app


def current(pilot: Pilot[Any]) -> DashboardScreen:
    screen = pilot.app.screen
    assert isinstance(screen, DashboardScreen), type(screen)
    return screen
