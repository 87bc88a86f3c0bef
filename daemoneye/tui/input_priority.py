"""Keys before refreshes: the loop turns a key needs to reach the app.

Textual's input thread hands a key to the event loop with `run_coroutine_threadsafe`; the app
then forwards it to the focused widget's queue, and what that widget does in turn (a cursor
step posts RowHighlighted, which shows the next process in the detail pane) is one more
message. Each hop is a turn of the loop. Taking in a refresh of 10,000 processes costs
milliseconds of the same loop, so a key already on its way when a refresh arrives would wait
for it. Two places turn the loop first: the feed, before it posts a refresh (every queue
runs meanwhile, so the key is handled first); and the processes screen, before it takes one
in (its own queue waits while it does, so there the turns only let the key reach the app,
which counts it, and the screen waits a frame when the count moved)."""

from __future__ import annotations

import asyncio

INPUT_TURNS = 6  # driver → task → app queue → focused widget → its message → the screen


async def let_input_in() -> None:
    """Turn the event loop INPUT_TURNS times (nothing else: it costs microseconds)."""
    for _ in range(INPUT_TURNS):
        await asyncio.sleep(0)
