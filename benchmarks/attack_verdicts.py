"""The attack benchmark's figures and verdicts: what each figure's samples are, the quiet
spread (quiet p99 x 1.5 + the figure's floor) and the rows that judge an attack against it.
Pure functions of the probe's samples, so tested without a daemon."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.attack_probe import HELLO_TIMEOUT_S, PhaseSamples
from benchmarks.model import SKIPPED, Row, judge, status_row
from benchmarks.stats import summarize

SECTION = "attacks"
SPREAD_FACTOR = 1.5
QUIET_SANE_HELLO_MS = 250.0  # a quiet p99 above this means the host, not an attacker, stalled
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Figure:
    """One of the four figures: its unit and the absolute floor added to its spread."""

    key: str
    label: str
    unit: str
    floor: float


HELLO = Figure("hello", "hello p99", "ms", 2.0)
CONNECT = Figure("connect", "new root connection p99", "ms", 5.0)
ALERT = Figure("alert", "exec → alert p99", "s", 0.5)
RSS = Figure("rss", "daemon RSS p99", "MiB", 8.0)
GROWTH = Figure("growth", "store growth", "KiB/s", 64.0)
FIGURES = (HELLO, CONNECT, ALERT, RSS, GROWTH)


# -- the arithmetic of the verdicts ------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (as ipc_bench); infinity counts as the largest value."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def spread_limit(quiet_p99: float, floor: float) -> float:
    """The most a figure may reach under attack: quiet p99 x 1.5 + the figure's floor."""
    return quiet_p99 * SPREAD_FACTOR + floor


def within_spread(value: float, quiet_p99: float, floor: float) -> str:
    """`met` when `value` stays within the quiet spread, else `MISSED`."""
    return judge(value, spread_limit(quiet_p99, floor))


def quiet_disturbed(quiet: PhaseSamples) -> str:
    """Why a quiet phase cannot serve as a baseline ("" when it can): something on the host
    (another daemon's test, a burst of processes) stalled the daemon or lost a marker."""
    problems = []
    if not quiet.hello_ms:
        problems.append("no hello answered")
    elif percentile(quiet.hello_ms, 0.99) > QUIET_SANE_HELLO_MS:
        problems.append(f"hello p99 {percentile(quiet.hello_ms, 0.99):.0f} ms")
    unalerted = sum(1 for marker in quiet.markers if marker.alerted_at is None)
    if unalerted or not quiet.markers:
        problems.append(f"{unalerted} of {len(quiet.markers)} markers not alerted")
    failures = sum(quiet.connect_failures.values())
    if failures:
        problems.append(f"{failures} new connections failed")
    return "; ".join(problems)


def figure_samples(phase: PhaseSamples, figure: Figure) -> list[float]:
    """The samples whose p99 is the phase's figure (store growth: one rate per phase)."""
    if figure is HELLO:
        return list(phase.hello_ms)
    if figure is CONNECT:
        return list(phase.connect_ms) + [math.inf] * sum(phase.connect_failures.values())
    if figure is ALERT:
        return [math.inf if m.latency_s is None else m.latency_s for m in phase.markers]
    if figure is RSS:
        return [rss / _MIB for rss in phase.rss_bytes]
    if not phase.store_bytes:
        return []
    grown = max(phase.store_bytes) - phase.store_bytes[0]
    return [grown / 1024 / phase.seconds]


# -- rows --------------------------------------------------------------------------------------


def figure_row(phase: PhaseSamples, figure: Figure, quiet: PhaseSamples | None) -> Row:
    """One figure of one phase; judged against `quiet` unless it is the quiet phase itself."""
    metric = f"{phase.name}: {figure.label}"
    samples = figure_samples(phase, figure)
    if not samples:
        return status_row(SECTION, metric, SKIPPED, "no samples in this phase")
    p99 = percentile(samples, 0.99)
    finite = [value for value in samples if math.isfinite(value)]
    value = summarize(finite) if finite else None
    note = _note(phase, figure, samples, p99)
    if quiet is None:
        return Row(SECTION, metric, None, value, figure.unit, note=note)
    quiet_samples = figure_samples(quiet, figure)
    quiet_p99 = percentile(quiet_samples, 0.99) if quiet_samples else math.inf
    if not math.isfinite(quiet_p99):
        why = _note(quiet, figure, quiet_samples, quiet_p99) if quiet_samples else "no samples"
        return Row(
            SECTION,
            metric,
            None,
            value,
            figure.unit,
            note=f"no verdict: the quiet phase itself failed ({why}); {note}",
        )
    limit = spread_limit(quiet_p99, figure.floor)
    ratio = summarize([p99 / quiet_p99]) if quiet_p99 > 0 and math.isfinite(p99) else None
    return Row(
        SECTION,
        metric,
        None,
        value,
        figure.unit,
        "quiet p99",
        ratio,
        f"≤{limit:.3g} {figure.unit} (quietx{SPREAD_FACTOR:g}+{figure.floor:g})",
        within_spread(p99, quiet_p99, figure.floor),
        f"{note}; quiet: {_note(quiet, figure, quiet_samples, quiet_p99)}"
        if quiet_samples
        else note,
    )


def _note(phase: PhaseSamples, figure: Figure, samples: list[float], p99: float) -> str:
    shown = "∞" if math.isinf(p99) else f"{p99:.3g}"
    if figure is HELLO:
        extra = (
            f"; {phase.hello_timeouts} timed out at {HELLO_TIMEOUT_S:g} s"
            if (phase.hello_timeouts)
            else ""
        )
        return f"p99 {shown} ms, max {max(samples):.3g} ms over {len(samples)} calls{extra}"
    if figure is CONNECT:
        failures = sum(phase.connect_failures.values())
        why = "; ".join(
            f"{count}x {reason}" for reason, count in phase.connect_failures.most_common(2)
        )
        return (
            f"p99 {shown} ms; {failures} of {len(samples)} new connections refused or "
            f"timed out{': ' + why if why else ''}"
        )
    if figure is ALERT:
        alerted = sum(1 for value in samples if math.isfinite(value))
        return f"p99 {shown} s; markers alerted / started: {alerted}/{len(samples)}"
    if figure is RSS:
        return f"p99 {shown} MiB, peak {max(samples):.1f} MiB, last {samples[-1]:.1f} MiB"
    grown = (max(phase.store_bytes) - phase.store_bytes[0]) / _MIB
    return f"{grown:.2f} MiB in {phase.seconds:.0f} s; store {phase.store_bytes[-1] / _MIB:.1f} MiB"


def attack_rows(
    quiet: PhaseSamples, attack: PhaseSamples, recovery: PhaseSamples | None
) -> list[Row]:
    """Every figure of the attack phase and `hello` and RSS of its recovery, each judged
    against the quiet phase of the same daemon."""
    rows = [figure_row(attack, figure, quiet) for figure in FIGURES]
    if recovery is not None:
        rows += [figure_row(recovery, figure, quiet) for figure in (HELLO, RSS)]
    return rows


SPREAD_NOTE = (
    f"spread = quiet p99 x {SPREAD_FACTOR:g} + floor ("
    + ", ".join(f"{f.key} {f.floor:g} {f.unit}" for f in FIGURES)
    + "); every attack has its own fresh daemon and quiet phase"
)


def with_note(row: Row, note: str) -> Row:
    return Row(
        row.section,
        row.metric,
        row.processes,
        row.value,
        row.unit,
        row.reference,
        row.ratio,
        row.target,
        row.verdict,
        note,
    )
