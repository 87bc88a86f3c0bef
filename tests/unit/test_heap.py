"""heap.burst: the cyclic collector paused for a burst and resumed as it was, then the heap
settled (what survived frozen)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from daemoneye import heap


@pytest.fixture(autouse=True)
def _collector_as_it_was() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_a_burst_pauses_the_collector_then_settles() -> None:
    gc.enable()
    gc.unfreeze()
    with heap.burst():
        assert not gc.isenabled()
        kept = [[index] for index in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)  # what survived left the generations


def test_the_collector_resumes_when_a_burst_raises() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), heap.burst():
        raise RuntimeError("the scan failed")
    assert gc.isenabled()


def test_a_collector_paused_before_stays_paused() -> None:
    gc.disable()
    with heap.burst():
        pass
    assert not gc.isenabled()
