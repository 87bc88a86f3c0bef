"""Keys before refreshes: a cursor step pressed right behind a refresh of the process table
is painted first, and the refresh right after it."""

from __future__ import annotations

from typing import Any

import pytest
from textual import events
from textual.app import App

from daemoneye.models import ProcessChange, ProcessesDelta
from daemoneye.tui.app import DaemonEyeApp
from daemoneye.tui.logic.live import ProcessSet
from daemoneye.tui.screens.processes import ProcessesScreen
from tests.fakes.dashboard_source import FAKE_NOW, FakeSource
from tests.tui.conftest import AppFactory
from tests.tui.helpers import settle

pytestmark = pytest.mark.anyio


def send_key(app: App[Any], key: str) -> None:
    """As Textual's input thread sends a key: through the driver, run_coroutine_threadsafe."""
    event = events.Key(key, None)
    event.set_sender(app)
    assert app._driver is not None
    app._driver.send_message(event)


def record_order(
    app: App[Any], screen: ProcessesScreen, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """What happens from now on, in order: "frame" for each frame written, "detail" when the
    detail pane is shown before a refresh is taken in, "refresh taken"."""
    happened: list[str] = []
    display, take, show_detail = app._display, screen._take_now, screen._show_detail

    def displayed(on: object, renderable: object) -> None:
        display(on, renderable)  # type: ignore[arg-type]
        if renderable is not None:
            happened.append("frame")

    def taken() -> None:
        happened.append("refresh taken")
        take()

    def detail_shown() -> None:
        if "refresh taken" not in happened:
            happened.append("detail")
        show_detail()

    monkeypatch.setattr(app, "_display", displayed)
    monkeypatch.setattr(screen, "_take_now", taken)
    monkeypatch.setattr(screen, "_show_detail", detail_shown)
    return happened


async def test_a_cursor_step_right_behind_a_refresh_is_painted_before_it(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking a refresh of 10,000 processes in costs milliseconds. A cursor step already on
    its way must not wait for it: the step and the detail of the newly selected process are
    painted, then the refresh is taken in and painted in a frame of its own."""
    source = FakeSource()
    async with make_app(source).run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        app, screen = pilot.app, pilot.app.screen
        assert isinstance(screen, ProcessesScreen)
        happened = record_order(app, screen, monkeypatch)

        first, second = screen.table.shown_keys[:2]
        assert screen.table.cursor_key == first
        source.push(
            ProcessesDelta(
                1, (), (ProcessChange(2590, FAKE_NOW - 600, (("cpu_percent", 55.5),)),), ()
            )
        )
        send_key(app, "down")
        await settle(pilot)
        assert screen.table.cursor_key == second
        assert "refresh taken" in happened, happened
        taken_at = happened.index("refresh taken")
        assert "detail" in happened[:taken_at], happened
        assert "frame" in happened[happened.index("detail") : taken_at], happened
        assert "frame" in happened[taken_at:], "the refresh is painted too"
        python3 = next(key for key in screen.table.shown_keys if key.startswith("2590:"))
        cells = screen.table.cells_of(python3)
        assert cells is not None and any(cell.text == "55.5" for cell in cells)


async def test_the_heap_is_frozen_once_the_screen_has_taken_a_refresh_in(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection policy freezes what is alive after each refresh, so that Python's
    collector does not walk it in front of a key (gc_policy.py). The screen takes a refresh
    in after the next frame; freezing before that left the rows and cells it builds to the
    collector."""
    source = FakeSource()
    async with make_app(source).run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app, screen = pilot.app, pilot.app.screen
        assert isinstance(app, DaemonEyeApp) and isinstance(screen, ProcessesScreen)
        happened: list[str] = []
        take = screen._take_now

        def taken() -> None:
            happened.append("taken")
            take()

        monkeypatch.setattr(screen, "_take_now", taken)
        monkeypatch.setattr(app.gc_policy, "set_applied", lambda: happened.append("frozen"))
        source.push(
            ProcessesDelta(
                1, (), (ProcessChange(2590, FAKE_NOW - 600, (("cpu_percent", 7.0),)),), ()
            )
        )
        await settle(pilot)
        assert happened == ["taken", "frozen"]


async def test_a_key_that_comes_while_a_refresh_waits_is_painted_before_it(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key sent after the refresh reached the screen, but before the screen took it in:
    the key reaches the table through the app's and the screen's queues; the waiting refresh
    must notice it and let its cursor step and detail be painted first."""
    source = FakeSource()
    async with make_app(source).run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        app, screen = pilot.app, pilot.app.screen
        assert isinstance(screen, ProcessesScreen)
        happened = record_order(app, screen, monkeypatch)

        def arrived(process_set: ProcessSet) -> None:  # watches after the screen's own watcher
            happened.append("refresh waiting")
            send_key(app, "down")  # lands after this handler, before the take

        screen.watch(app, "process_set", arrived, init=False)
        second = screen.table.shown_keys[1]
        source.push(
            ProcessesDelta(
                1, (), (ProcessChange(2590, FAKE_NOW - 600, (("cpu_percent", 55.5),)),), ()
            )
        )
        await settle(pilot)
        assert screen.table.cursor_key == second
        assert "refresh taken" in happened, happened
        waiting, taken_at = happened.index("refresh waiting"), happened.index("refresh taken")
        assert "detail" in happened[waiting:taken_at], happened
        assert "frame" in happened[happened.index("detail") : taken_at], happened
