"""The alert feed table: newest first, keyed by alert id, columns as wide as what they hold."""

from __future__ import annotations

from daemoneye.tui.logic.alerts import alert_columns
from daemoneye.tui.widgets.fitted_table import FittedTable

# The most each column may take (0: the title takes the rest); each is as wide as its
# widest cell, so a short time leaves its room to the rule id and the title.
_LIMITS = {"host": 16, "severity": 4, "state": 5, "seen": 24, "rule": 32, "pid": 7, "title": 0}


class AlertTable(FittedTable):
    """Alerts with severity in colour and in words (CRIT, HIGH, …)."""

    def __init__(self, *, id: str | None = None, several_hosts: bool = False) -> None:
        self._columns = alert_columns(several_hosts)
        super().__init__(
            [(key, label, _LIMITS[key], key == "pid") for key, label in self._columns], id=id
        )
