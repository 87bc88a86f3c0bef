"""The host meters above the processes table: CPU per core, memory, swap, load, uptime."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from daemoneye.models import HostMeters
from daemoneye.tui.logic.meters import meter_lines


class HostMetersPanel(Widget):
    """Two lines drawn from the daemon's last HostMeters (tui/logic/meters.py lays them out);
    the screen sets `meters` and `now` from each health report."""

    meters: reactive[HostMeters | None] = reactive(None, always_update=True)
    now: reactive[float] = reactive(0.0)

    def render(self) -> Text:
        first, second = meter_lines(self.meters, self.size.width, self.now)
        return Text(f"{first}\n{second}", no_wrap=True, overflow="ellipsis", end="")
