"""A clean stop is not a problem: the last health report says the daemon stopped, and does not
blame the kernel event reader that the stop itself ended."""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.conftest import DaemonHarness


def test_clean_stop_leaves_no_event_reader_problem(harness: DaemonHarness) -> None:
    if os.geteuid() != 0:
        pytest.skip("the kernel's process events need root (CAP_NET_ADMIN)")
    harness.start()
    harness.wait_ticks(1)
    running = json.loads(harness.cli("-o", "json", "health", check=True).stdout)[0]
    if "netlink" not in str(running["event_source"]):
        pytest.skip(f"no kernel event reader here: {running['event_source']}")
    assert harness.stop() == 0
    stopped = json.loads(harness.cli("-o", "json", "health").stdout)[0]
    problems = list(stopped["problems"])
    assert any("the daemon stopped" in problem for problem in problems), problems
    assert not any("event reader" in problem for problem in problems), problems
