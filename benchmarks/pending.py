"""Rows for the parts whose targets cannot be measured yet: each is checked by import, and
says "not built yet" until its module exists. When one appears, the row says so, and a real
benchmark module should replace the row."""

from __future__ import annotations

from benchmarks.availability import missing, not_built
from benchmarks.model import FAILED, NOT_BUILT, SKIPPED, Row, status_row

# (section, metric, candidates: any one importable means the part exists). Candidates are
# real modules (daemoneye.engine.rules is a directory of rule files: it imports as a namespace
# package, which `missing` reports as absent).
_PENDING: tuple[tuple[str, str, tuple[tuple[str, str | None], ...]], ...] = (
    (
        "engine",
        "rule load + validate; rule evaluation per tick",
        (("daemoneye.engine.evaluator", "Evaluator"),),
    ),
    (
        "ipc",
        "request latency; subscription fan-out to slow clients",
        (("daemoneye.ipc.server", None),),
    ),
    ("dashboard", "frame time and CPU with 10k rows", (("daemoneye.tui.app", None),)),
)
# Sections whose benchmark module is written: it reports "not built yet" itself, so no row here.
BENCHMARKED = frozenset({"engine", "ipc", "dashboard"})


def rows() -> list[Row]:
    result = []
    for section, metric, candidates in _PENDING:
        if section in BENCHMARKED:
            continue
        reasons = [missing(module, attribute) for module, attribute in candidates]
        if any(reason is None for reason in reasons):
            built = next(
                module
                for (module, _), reason in zip(candidates, reasons, strict=True)
                if reason is None
            )
            result.append(
                status_row(
                    section, metric, SKIPPED, f"{built} exists now; no benchmark written for it yet"
                )
            )
            continue
        broken = [reason for reason in reasons if reason and not not_built(reason)]
        verdict = FAILED if broken else NOT_BUILT
        result.append(
            status_row(section, metric, verdict, "; ".join(reason for reason in reasons if reason))
        )
    return result
