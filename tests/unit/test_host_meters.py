"""Host meters: sampled by the daemon from psutil, sent in `health`, laid out in two lines."""

from __future__ import annotations

from collections import namedtuple

from hypothesis import given
from hypothesis import strategies as st

from daemoneye.daemon.host_meters import HostSampler, busy_percent
from daemoneye.ipc.codec import from_wire, to_wire
from daemoneye.models import DaemonStatus, HostMeters
from daemoneye.tui.logic.meters import bar, core_blocks, meter_lines
from daemoneye.units import format_uptime
from tests.fakes.dashboard_source import sample_status

Times = namedtuple("Times", "user nice system idle iowait")


def test_busy_share_per_core_between_two_samples() -> None:
    before = [Times(100, 0, 50, 800, 50), Times(0, 0, 0, 1000, 0)]
    after = [Times(150, 0, 100, 850, 50), Times(0, 0, 0, 1100, 0), Times(5, 0, 0, 5, 0)]
    assert busy_percent(before, after) == (66.7, 0.0, 0.0)  # a new core reads 0 at first


def test_the_sampler_reads_this_host_and_reuses_a_fresh_sample() -> None:
    clock = [1000.0]
    sampler = HostSampler(clock=lambda: clock[0])
    clock[0] += 1.0
    first = sampler.sample()  # measured since the sampler was made
    assert first is not None
    assert first.memory_total > 0 and len(first.cpu_percent) >= 1 and first.boot_time < 1e10
    clock[0] += 0.1
    assert sampler.sample() is first
    clock[0] += 1.0
    second = sampler.sample()
    assert second is not None and second is not first and second.sampled_at == 1002.1
    assert all(0.0 <= share <= 100.0 for share in second.cpu_percent)


def test_host_meters_travel_in_the_health_answer() -> None:
    status = sample_status()
    decoded = from_wire(DaemonStatus, to_wire(status))
    assert decoded == status and isinstance(decoded.host, HostMeters)
    older = to_wire(status)
    del older["host"]  # a daemon from before the meters
    assert from_wire(DaemonStatus, older).host is None


def test_the_two_lines_fit_every_width_and_say_what_matters() -> None:
    host = sample_status().host
    assert host is not None
    for width in (20, 40, 80, 120, 200):
        first, second = meter_lines(host, width, host.sampled_at)
        assert len(first) <= width and len(second) <= width
    first, second = meter_lines(host, 80, host.sampled_at)
    assert first.startswith("CPU [") and "34.6%]" in first and first.endswith("4 cores")
    assert "Mem [" in second and "4.0G/8.0G]" in second
    assert "Load 1.25 0.80 0.55" in second and second.endswith("Up 3d 4h")
    assert meter_lines(None, 80, 0.0)[0].startswith("host meters: waiting")


def test_a_bar_is_filled_by_its_share() -> None:
    assert bar(0.5, "50%", 12) == "[|||||  50%]"
    assert bar(2.0, "x", 5) == "[||x]"  # over 100%: full
    assert bar(0.0, "toolong", 4) == "[toolong]"


@given(st.lists(st.floats(0, 100), max_size=300), st.integers(0, 120))
def test_core_blocks_never_pass_their_width(cores: list[float], width: int) -> None:
    blocks = core_blocks(tuple(cores), width)
    assert len(blocks) <= max(width, 0) or width < len(f" +{len(cores)}")
    if len(cores) > width > 8:
        assert blocks.endswith(f"+{len(cores) - len(blocks.split(' ')[0])}")


def test_uptime() -> None:
    assert format_uptime(3 * 86400 + 4 * 3600 + 59) == "3d 4h"
    assert format_uptime(4 * 3600 + 7 * 60) == "4h 07m"
    assert format_uptime(59) == "0m"
