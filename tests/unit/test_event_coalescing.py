"""When the daemon takes a batch of kernel events: a window after the batch's first event."""

from __future__ import annotations

import pytest

from daemoneye.daemon.lifecycle import (
    EVENT_COALESCE_BUSY_S,
    EVENT_COALESCE_S,
    coalesce_wait,
)


def test_a_quiet_batch_waits_out_the_rest_of_its_window() -> None:
    assert coalesce_wait(100.0, 100.004, EVENT_COALESCE_S) == pytest.approx(0.006)


def test_a_batch_that_filled_while_the_last_one_was_written_is_taken_at_once() -> None:
    """Under a storm the next batch starts filling as the previous one is taken; a write that
    outlasts the window must not be followed by another whole window."""
    first_event, write_done = 100.0, 100.0 + EVENT_COALESCE_BUSY_S + 0.02
    assert coalesce_wait(first_event, write_done, EVENT_COALESCE_BUSY_S) == 0.0
    assert coalesce_wait(first_event, 100.03, EVENT_COALESCE_BUSY_S) == pytest.approx(0.02)


def test_without_a_known_first_event_a_whole_window_is_waited() -> None:
    assert coalesce_wait(None, 100.0, EVENT_COALESCE_BUSY_S) == EVENT_COALESCE_BUSY_S
