"""The startup's run of the rules over the whole store in words, the same for `daemoneye
health` and the dashboard's Health screen."""

from __future__ import annotations

from daemoneye.models import StartupEvaluation
from daemoneye.units import format_elapsed, format_time


def startup_evaluation_text(evaluation: StartupEvaluation, now: float) -> str:
    """`running: 3 of 12 rules, 41s so far; …`, `done at 02:14:07: 12 rules in 3.2s`, or
    `stopped at … after 3 of 12 rules (41s): …`."""
    failed = (
        f", {evaluation.rules_failed} failed (the daemon's log says why)"
        if evaluation.rules_failed
        else ""
    )
    elapsed = format_elapsed(evaluation.elapsed_s)
    progress = f"{evaluation.rules_done} of {evaluation.rules_total} rules"
    if evaluation.state == "running":
        return (
            f"running: {progress} over the whole store, {elapsed} so far{failed}; alerts "
            "about past processes may still come, retention waits"
        )
    ended = format_time(evaluation.ended_at, now) if evaluation.ended_at is not None else "?"
    if evaluation.state == "done":
        whole = f"{evaluation.rules_total} rules over the whole store"
        return f"done at {ended}: {whole} in {elapsed}{failed}"
    return (
        f"stopped at {ended} after {progress} ({elapsed}){failed}: the daemon stopped before "
        "the rest ran over the whole store"
    )
