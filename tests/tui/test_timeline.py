"""The timeline screen and the past view, driven by Pilot over the fake daemon's week of
history: jumping, stepping, filtering, Enter on an event, the past as the present (and nothing
live acting on it), returning to live, out-of-reach moments and a clock set back."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from daemoneye.models import ProcessChange, ProcessesDelta, ProcessKey
from daemoneye.timeparse import parse_time
from daemoneye.tui.logic.keys import row_key
from daemoneye.tui.screens.instance import InstanceScreen
from daemoneye.tui.screens.processes import ProcessesScreen
from daemoneye.tui.screens.signal import SignalScreen
from daemoneye.tui.screens.timeline import TimelineScreen
from daemoneye.tui.widgets.filter_bar import FilterBar
from daemoneye.tui.widgets.process_detail import ProcessDetail
from tests.fakes.dashboard_source import FAKE_NOW, FakeSource, FrozenClock
from tests.tui.conftest import AppFactory
from tests.tui.helpers import settle

pytestmark = pytest.mark.anyio
SIZE = (160, 48)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def notices(app: Any) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def wait(pilot: Pilot[Any]) -> None:
    """Settle, and let every request the screens started finish (not the feed: it runs on)."""
    await settle(pilot)
    for _ in range(3):
        busy = [worker for worker in pilot.app.workers if worker.group != "feed"]
        if busy:  # an empty list would mean every worker, the feed too
            await pilot.app.workers.wait_for_complete(busy)
        await settle(pilot)


async def open_timeline(pilot: Pilot[Any]) -> TimelineScreen:
    await settle(pilot)
    await pilot.press("6")
    await wait(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, TimelineScreen)
    return screen


def shown(screen: TimelineScreen) -> list[tuple[float, str, int]]:
    events = [screen.pages.event(key) for key in screen.table.shown_keys]
    return [(e.ts, e.kind, e.pid) for e in events if e is not None]


async def test_events_newest_first_from_now(make_app: AppFactory) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        rows = shown(screen)
        assert rows[0] == (FAKE_NOW - 118, "alert", 3101)
        assert [ts for ts, _, _ in rows] == sorted((ts for ts, _, _ in rows), reverse=True)
        assert {"exec", "exit", "alert"} <= {kind for _, kind, _ in rows}
        assert source.history.asked_until == [None]


async def test_jumping_to_a_time_shows_the_events_up_to_it(
    make_app: AppFactory, clock: FrozenClock
) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        await pilot.press("g", *"21:00", "enter")
        await wait(pilot)
        moment = parse_time("21:00", clock())
        assert source.history.asked_until[-1] == moment
        assert shown(screen) and all(ts <= moment for ts, _, _ in shown(screen))
        assert shown(screen)[0][:2] == (FAKE_NOW - 5390, "exec")  # alice's bash at 20:43:30
        await pilot.press("g", *"yesterday 23:40", "enter")
        await wait(pilot)
        assert source.history.asked_until[-1] == parse_time("yesterday 23:40", clock())


async def test_out_of_reach_times_say_what_the_window_is(make_app: AppFactory) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        await open_timeline(pilot)
        asked = len(source.history.asked_until)
        await pilot.press("g", *"2023-01-01 03:12", "enter")
        await wait(pilot)
        assert any(
            "before the history" in n and "history from Nov 07 22:13:20" in n
            for n in notices(pilot.app)
        )
        await pilot.press("g", *"23:59", "enter")  # later today: the future
        await wait(pilot)
        assert any("in the future" in n for n in notices(pilot.app))
        await pilot.press("g", *"not a time", "enter")
        await wait(pilot)
        assert any("cannot read 'not a time'" in n for n in notices(pilot.app))
        assert len(source.history.asked_until) == asked  # nothing was asked for


async def test_steps_move_by_a_minute_and_an_hour_from_the_cursor(make_app: AppFactory) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        top = shown(screen)[0][0]
        await pilot.press("left_square_bracket")
        await wait(pilot)
        assert source.history.asked_until[-1] == top - 60
        at = shown(screen)[0][0]
        await pilot.press("left_curly_bracket")
        await wait(pilot)
        assert source.history.asked_until[-1] == at - 3600
        await pilot.press("l")
        await wait(pilot)
        assert source.history.asked_until[-1] is None


async def test_the_filter_speaks_event_kinds_and_refuses_bad_terms(make_app: AppFactory) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        await pilot.press("slash", *"event:exit")
        await wait(pilot)
        assert shown(screen) and {kind for _, kind, _ in shown(screen)} == {"exit"}
        bar = screen.query_one(FilterBar)
        bar.input.value = "event:exit cpu>5"
        await wait(pilot)
        assert "events carry no cpu" in bar.error
        assert {kind for _, kind, _ in shown(screen)} == {"exit"}  # the last good one stays
        bar.input.value = "user:bob"
        await wait(pilot)
        assert {pid for _, _, pid in shown(screen)} == {3990}
        await pilot.press("enter", "escape")
        await wait(pilot)
        assert len({pid for _, _, pid in shown(screen)}) > 1


async def test_enter_opens_an_ended_instance_with_how_it_ended(make_app: AppFactory) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        await pilot.press("slash", *"name:kdevtmpfsi event:exit", "enter")
        await wait(pilot)
        assert [pid for _, _, pid in shown(screen)] == [3050]
        await pilot.press("enter")
        await wait(pilot)
        modal = pilot.app.screen
        assert isinstance(modal, InstanceScreen)
        assert modal.detail.record.pid == 3050
        facts = {label: value for label, value, _ in modal.query_one(ProcessDetail)._facts}
        assert facts["how"] == "killed by SIGKILL"
        assert facts["ended"].startswith("19:13:20 UTC")
        await pilot.press("escape")
        await wait(pilot)
        assert pilot.app.screen is screen


async def test_the_past_view_is_the_set_then_and_nothing_live_acts_on_it(
    make_app: AppFactory,
) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        await pilot.press("slash", *"name:tar event:exec", "enter")
        await wait(pilot)
        moment = shown(screen)[0][0]
        await pilot.press("p")
        await wait(pilot)
        past = pilot.app.screen
        assert isinstance(past, ProcessesScreen)
        assert past.past_at == moment
        keys = set(past.table.shown_keys)
        assert row_key(ProcessKey(4111, moment)) in keys  # tar, long ended
        assert row_key(ProcessKey(3100, FAKE_NOW - 300)) not in keys  # not started then
        assert past.table.cursor_key == row_key(ProcessKey(4111, moment))
        banner = str(past.query_one("#past-banner", Static).render())
        assert "AS OF 08:13:25 UTC, 13 h ago" in banner and "l: back to live" in banner
        # a live delta changes nothing shown, and signals refuse
        source.push(
            ProcessesDelta(1, (), (ProcessChange(1, FAKE_NOW - 3 * 86400, (("rss", 1),)),), ())
        )
        await wait(pilot)
        assert set(past.table.shown_keys) == keys
        await pilot.press("k")
        await wait(pilot)
        assert not isinstance(pilot.app.screen, SignalScreen)
        assert not source.calls
        assert any("past view" in n for n in notices(pilot.app))
        # the same sort, tree and filter work; then one key back to live
        await pilot.press("t")
        await wait(pilot)
        assert past.view.tree
        await pilot.press("l")
        await wait(pilot)
        assert past.past_at is None and past.view is past.live_view and past.view.tree
        assert row_key(ProcessKey(3100, FAKE_NOW - 300)) in past.table.shown_keys
        assert not past.has_class("-past")


async def test_the_processes_screen_asks_for_a_moment(
    make_app: AppFactory, clock: FrozenClock
) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, ProcessesScreen)
        await pilot.press("p", *"2023-01-01", "enter")
        await wait(pilot)
        assert screen.past_at is None
        assert any("before the store's history" in n for n in notices(pilot.app))
        await pilot.press("p", *"-15m", "enter")
        await wait(pilot)
        assert screen.past_at == clock() - 900
        assert source.history.asked_at[-1] == clock() - 900
        assert row_key(ProcessKey(3100, FAKE_NOW - 300)) not in screen.table.shown_keys


async def test_a_clock_set_back_leaves_the_banner_truthful(
    make_app: AppFactory, clock: FrozenClock
) -> None:
    source = FakeSource()
    async with make_app(source, tick_s=0.05).run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, ProcessesScreen)
        await pilot.press("p", *"-10m", "enter")
        await wait(pilot)
        banner = screen.query_one("#past-banner", Static)
        assert "10 min ago" in str(banner.render())
        clock.advance(-3600)  # the wall clock is set back an hour
        screen._show_banner()
        await settle(pilot)
        text = str(banner.render())
        assert "ago" not in text and "clock set back" in text
        assert "AS OF 22:03:20 UTC" in text  # the moment itself does not move
