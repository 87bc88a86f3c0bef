"""The rules table, keyed by rule id."""

from __future__ import annotations

from daemoneye.tui.logic.rules import RULE_COLUMNS
from daemoneye.tui.widgets.live_table import LiveTable

_WIDTHS = {"mark": 1, "id": 28, "severity": 4, "enabled": 7, "hits": 5, "last_hit": 8, "source": 0}


class RuleTable(LiveTable):
    """Every rule: a ⚠ mark for load problems, ● enabled, ○ disabled."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            [(key, label, _WIDTHS[key], key == "hits") for key, label in RULE_COLUMNS], id=id
        )
