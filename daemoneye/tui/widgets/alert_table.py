"""The alert feed table: newest first, keyed by alert id."""

from __future__ import annotations

from daemoneye.tui.logic.alerts import ALERT_COLUMNS
from daemoneye.tui.widgets.live_table import LiveTable

_WIDTHS = {"severity": 4, "state": 5, "seen": 18, "rule": 20, "pid": 7, "title": 0}


class AlertTable(LiveTable):
    """Alerts with severity in colour and in words (CRIT, HIGH, …)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            [(key, label, _WIDTHS[key], key == "pid") for key, label in ALERT_COLUMNS], id=id
        )
