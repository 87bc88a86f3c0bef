"""The attack benchmark's verdicts: the quiet spread and how each figure is judged against it."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from benchmarks.attack_probe import Marker, PhaseSamples
from benchmarks.attack_verdicts import (
    ALERT,
    CONNECT,
    GROWTH,
    HELLO,
    RSS,
    attack_rows,
    figure_row,
    figure_samples,
    percentile,
    quiet_disturbed,
    spread_limit,
    within_spread,
)
from benchmarks.model import MET, MISSED, NO_TARGET

_MIB = 1024 * 1024


def _phase(
    name: str,
    *,
    hello_ms: list[float],
    latencies: list[float | None],
    rss_mib: list[float],
    store_mib: list[float],
    seconds: float = 10.0,
    connect_failures: int = 0,
) -> PhaseSamples:
    phase = PhaseSamples(name=name, started_at=100.0, ended_at=100.0 + seconds)
    phase.hello_ms = hello_ms
    phase.connect_ms = [1.0] * 10
    phase.connect_failures = Counter({"too many connections": connect_failures})
    phase.markers = [
        Marker(
            pid=1000 + index,
            spawned_at=100.0,
            alerted_at=None if latency is None else 100.0 + latency,
        )
        for index, latency in enumerate(latencies)
    ]
    phase.rss_bytes = [int(mib * _MIB) for mib in rss_mib]
    phase.store_bytes = [int(mib * _MIB) for mib in store_mib]
    return phase


def _quiet() -> PhaseSamples:
    return _phase(
        "quiet",
        hello_ms=[1.0] * 99 + [4.0],
        latencies=[0.02, 0.03, 0.05],
        rss_mib=[40.0, 41.0, 42.0],
        store_mib=[10.0, 10.0, 10.0],
    )


def test_the_spread_is_quiet_p99_times_one_and_a_half_plus_the_floor() -> None:
    assert spread_limit(4.0, 2.0) == pytest.approx(8.0)
    assert within_spread(8.0, 4.0, 2.0) == MET
    assert within_spread(8.01, 4.0, 2.0) == MISSED
    # A zero baseline (a store that did not grow) still allows the floor.
    assert within_spread(63.0, 0.0, 64.0) == MET


def test_percentile_is_nearest_rank_and_infinity_is_the_largest() -> None:
    assert percentile([1.0] * 99 + [4.0], 0.99) == 1.0
    assert percentile([1.0] * 98 + [4.0, 5.0], 0.99) == 4.0
    assert percentile([0.1, math.inf, 0.2], 0.99) == math.inf
    with pytest.raises(ValueError):
        percentile([], 0.99)


def test_a_marker_never_alerted_misses_the_alert_figure() -> None:
    attacked = _phase(
        "regex-stall",
        hello_ms=[1.0] * 10,
        latencies=[0.02, None, 0.03],
        rss_mib=[41.0],
        store_mib=[10.0, 10.0],
    )
    row = figure_row(attacked, ALERT, _quiet())
    assert row.verdict == MISSED
    assert "markers alerted / started: 2/3" in row.note


def test_every_figure_within_the_spread_is_met_and_one_outside_is_missed() -> None:
    quiet = _quiet()
    calm = _phase(
        "nested-json",
        hello_ms=[1.5] * 100,
        latencies=[0.04, 0.05],
        rss_mib=[45.0, 60.0],
        store_mib=[10.0, 10.5],
    )
    assert [row.verdict for row in attack_rows(quiet, calm, None)] == [MET] * 5
    stalled = _phase(
        "regex-stall",
        hello_ms=[1.0] * 90 + [4000.0] * 10,
        latencies=[0.04],
        rss_mib=[200.0],
        store_mib=[10.0, 100.0],
        connect_failures=3,
    )
    verdicts = {row.metric: row.verdict for row in attack_rows(quiet, stalled, None)}
    assert verdicts == {
        f"regex-stall: {figure.label}": MISSED for figure in (HELLO, CONNECT, RSS, GROWTH)
    } | {f"regex-stall: {ALERT.label}": MET}


def test_store_growth_is_highest_minus_first_per_second() -> None:
    phase = _phase(
        "audit-flood",
        hello_ms=[1.0],
        latencies=[],
        rss_mib=[40.0],
        store_mib=[10.0, 30.0, 20.0],
        seconds=10.0,
    )
    assert figure_samples(phase, GROWTH) == [pytest.approx(2048.0)]  # 20 MiB in 10 s


def test_the_quiet_phase_itself_is_not_judged() -> None:
    row = figure_row(_quiet(), HELLO, None)
    assert row.verdict == NO_TARGET
    assert row.value is not None and row.value.high == 4.0


def test_a_quiet_phase_that_lost_a_marker_gives_no_verdict() -> None:
    quiet = _phase(
        "quiet", hello_ms=[1.0] * 50, latencies=[0.02, None], rss_mib=[40.0], store_mib=[10.0, 10.0]
    )
    assert "1 of 2 markers not alerted" in quiet_disturbed(quiet)
    assert quiet_disturbed(_quiet()) == ""
    attacked = _phase(
        "regex-stall", hello_ms=[1.0], latencies=[None], rss_mib=[40.0], store_mib=[10.0, 10.0]
    )
    row = figure_row(attacked, ALERT, quiet)
    assert row.verdict == NO_TARGET
    assert row.note.startswith("no verdict: the quiet phase itself failed")


def test_without_root_the_section_is_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import attack_bench
    from benchmarks.model import SKIPPED

    monkeypatch.setattr("benchmarks.attack_bench.os.geteuid", lambda: 1000)
    rows, raw = attack_bench.run(quick=True)
    assert [row.verdict for row in rows] == [SKIPPED]
    assert "needs root" in rows[0].note
    assert raw == {}
