"""Severity order and labels: critical outranks high outranks … info."""

from __future__ import annotations

from collections.abc import Iterable

from daemoneye.models import SEVERITIES

SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}
# Short labels so that severity never depends on colour alone (NO_COLOR, high-contrast).
SEVERITY_LABEL: dict[str, str] = {
    "critical": "CRIT",
    "high": "HIGH",
    "medium": "MED",
    "low": "LOW",
    "info": "INFO",
}


def severity_rank(severity: str) -> int:
    """Higher is worse; an unknown severity ranks below info."""
    return SEVERITY_RANK.get(severity, -1)


def worst(severities: Iterable[str]) -> str | None:
    """The most severe of `severities`, None when there are none."""
    return max(severities, key=severity_rank, default=None)


def label(severity: str) -> str:
    return SEVERITY_LABEL.get(severity, severity[:4].upper())


def tone(severity: str) -> str:
    """The theme role of a severity (`severity-high` → tone "high"); unknown ones look like info."""
    return severity if severity in SEVERITY_RANK else "info"
