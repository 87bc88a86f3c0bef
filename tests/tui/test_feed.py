"""The feed worker: a key pressed while a refresh is being folded in goes first."""

from __future__ import annotations

import asyncio

from textual.message import Message

from daemoneye.models import ProcessChange, ProcessesDelta
from daemoneye.tui.feed import Feed
from daemoneye.tui.messages import ProcessesChanged
from tests.fakes.dashboard_source import FAKE_NOW, FakeSource


def test_a_key_scheduled_during_a_refresh_reaches_the_app_before_it() -> None:
    """Textual's input thread hands each key to the event loop with
    run_coroutine_threadsafe, which takes two turns of the loop to post it. A key pressed
    while the feed folds a refresh in must still be posted before that refresh, so that the
    app handles it first and one frame paints both."""

    async def scenario() -> list[str]:
        posted: list[str] = []

        def post(message: Message) -> bool:
            posted.append(type(message).__name__)
            return True

        async def post_key() -> None:  # what Textual's driver schedules for a key
            posted.append("Key")

        feed = Feed(FakeSource(), post)
        # Pressed while the delta below is being applied (applying never yields).
        asyncio.run_coroutine_threadsafe(post_key(), asyncio.get_running_loop())
        await feed.handle(
            ProcessesDelta(
                1, (), (ProcessChange(2590, FAKE_NOW - 600, (("cpu_percent", 9.0),)),), ()
            )
        )
        return posted

    assert asyncio.run(scenario()) == ["Key", ProcessesChanged.__name__]
