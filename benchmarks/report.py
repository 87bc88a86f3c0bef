"""The results table (stdout) and the JSON file (rows, raw samples, machine, command)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.model import FAILED, MET, MISSED, Row
from benchmarks.stats import Summary

_HEADERS = (
    "section",
    "metric",
    "procs",
    "median",
    "spread min-max (n)",
    "ratio vs reference",
    "target",
    "verdict",
)


def _number(value: float) -> str:
    if math.isinf(value):
        return "∞"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread(summary: Summary | None) -> str:
    if summary is None:
        return ""
    return f"{_number(summary.low)}-{_number(summary.high)} (n={summary.n})"


def _ratio(row: Row) -> str:
    if row.ratio is None or row.reference is None:
        return ""
    ratio = row.ratio
    spread = f" [{_number(ratio.low)}-{_number(ratio.high)}]" if ratio.n > 1 else ""
    return f"{_number(ratio.median)}x {row.reference}{spread}"


def _cells(row: Row) -> tuple[str, ...]:
    median = f"{_number(row.value.median)} {row.unit}" if row.value is not None else ""
    return (
        row.section,
        row.metric,
        str(row.processes) if row.processes else "",
        median,
        _spread(row.value),
        _ratio(row),
        row.target or "",
        row.verdict,
    )


def table(rows: Sequence[Row]) -> str:
    """A plain-text table; each row's note on its own indented line under it."""
    cells = [_cells(row) for row in rows]
    widths = [
        max(len(header), *(len(line[col]) for line in cells)) for col, header in enumerate(_HEADERS)
    ]

    def render(values: Sequence[str]) -> str:
        return "  ".join(value.ljust(width) for value, width in zip(values, widths, strict=True))

    lines = [render(_HEADERS), render(["-" * width for width in widths])]
    for row, line in zip(rows, cells, strict=True):
        lines.append(render(line).rstrip())
        if row.note:
            lines.append(" " * (widths[0] + 2) + "↳ " + row.note)
    return "\n".join(lines)


def summary_line(rows: Sequence[Row]) -> str:
    missed = [row for row in rows if row.verdict == MISSED]
    failed = [row for row in rows if row.verdict == FAILED]
    met = sum(1 for row in rows if row.verdict == MET)
    text = f"targets: {met} met, {len(missed)} MISSED"
    if missed:
        text += " — MISSED: " + "; ".join(
            f"{row.section}: {row.metric} ({row.target})" for row in missed
        )
    if failed:
        text += f"\n{len(failed)} FAILED: " + "; ".join(
            f"{row.section}: {row.metric} ({row.note})" for row in failed
        )
    return text


def _clean(value: Any) -> Any:
    """JSON-safe: infinities and NaN become null (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def write_json(
    path: Path,
    *,
    rows: Sequence[Row],
    raw: dict[str, Any],
    machine: dict[str, Any],
    command: list[str],
    options: dict[str, Any],
    duration_s: float,
) -> None:
    document = {
        "command": command,
        "options": options,
        "machine": machine,
        "duration_s": round(duration_s, 1),
        "summary": summary_line(rows),
        "rows": [dataclasses.asdict(row) for row in rows],
        "raw": raw,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(_clean(document), indent=2, ensure_ascii=False) + "\n")
    temporary.replace(path)
