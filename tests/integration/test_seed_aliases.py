"""The seed's `PROCMOND_COLLECTOR_EVENT_BUFFER_SIZE` reaches the kernel: the daemon's process
connector socket gets that receive buffer (the kernel reports it doubled, as `rb` in `ss -m`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.integration.conftest import DaemonHarness, wait_for
from tests.integration.test_procmond_faults import procmond_of


def _connector_receive_buffers(pid: int) -> list[int]:
    """`rb` of each process connector socket `pid` holds (the kernel names netlink sockets by
    their port, the pid; `ss` may prefix the program's name)."""
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("ss (iproute2) is not installed")
    listing = subprocess.run(
        [ss, "-f", "netlink", "-a", "-m"], capture_output=True, text=True, timeout=30
    ).stdout
    mine = re.compile(rf"connector:(?:\S+/)?{pid}\s.*?\brb(\d+)")
    return [int(match.group(1)) for match in mine.finditer(listing)]


def test_event_buffer_alias_sets_the_connector_receive_buffer(harness: DaemonHarness) -> None:
    if os.geteuid() != 0:
        pytest.skip("the kernel's process events need root (CAP_NET_ADMIN)")
    harness.env["PROCMOND_COLLECTOR_EVENT_BUFFER_SIZE"] = "12MiB"
    harness.start()
    assert harness.process is not None
    # The connector is procmond's (the agent's child): the alias reaches it through the agent.
    pid = procmond_of(harness)
    buffers = wait_for(lambda: _connector_receive_buffers(pid), "procmond's connector socket")
    assert 2 * (12 << 20) in buffers, buffers
    assert harness.stop() == 0
