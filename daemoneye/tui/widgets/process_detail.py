"""The detail pane: everything about one process instance, its alerts and CPU/RSS sparklines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Sparkline, Static

from daemoneye.tui.logic.detail import Fact
from daemoneye.tui.logic.format import format_bytes
from daemoneye.tui.widgets.text_update import show_text

LABEL_WIDTH = 9
DETAIL_TONES = ("label", "new", "ended", "dim", "critical", "high", "medium", "low", "info")


class ProcessDetail(VerticalScroll):
    """Shows facts prepared by `daemoneye.tui.logic.detail`; knows nothing of processes."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"process-detail--{tone}" for tone in DETAIL_TONES}
    can_focus = True

    def compose(self) -> ComposeResult:
        yield Static(id="detail-facts")
        with Horizontal(classes="spark-row"):
            yield Static("cpu", classes="spark-label", id="cpu-label")
            yield Sparkline([], id="cpu-spark")
        with Horizontal(classes="spark-row"):
            yield Static("rss", classes="spark-label", id="rss-label")
            yield Sparkline([], id="rss-spark")
        yield Static(id="detail-alerts")

    def _style(self, tone: str) -> Style:
        if not tone:
            return Style.null()
        return self.get_component_rich_style(f"process-detail--{tone}", partial=True)

    def _facts_text(self, facts: Sequence[Fact]) -> Text:
        text = Text(end="")
        label_style = self._style("label")
        for index, (label, value, tone) in enumerate(facts):
            if index:
                text.append("\n")
            text.append(f"{label:<{LABEL_WIDTH}}", label_style)
            text.append(value, self._style(tone))
        return text

    def show(self, facts: Sequence[Fact], alerts: Sequence[Fact],
             cpu: Sequence[float], rss: Sequence[float]) -> None:
        show_text(self.query_one("#detail-facts", Static), self._facts_text(facts))
        alerts_text = self._facts_text(alerts) if alerts else Text("no alerts", self._style("dim"))
        show_text(self.query_one("#detail-alerts", Static), alerts_text)
        self.query_one("#cpu-spark", Sparkline).data = list(cpu)
        self.query_one("#rss-spark", Sparkline).data = list(rss)
        if cpu:
            cpu_label = f"cpu ≤{max(cpu):.0f}%"
            rss_label = f"rss ≤{format_bytes(int(max(rss)))}"
        else:  # an instance that ended before it was sampled
            cpu_label, rss_label = "cpu —", "rss —"
        show_text(self.query_one("#cpu-label", Static), Text(cpu_label))
        show_text(self.query_one("#rss-label", Static), Text(rss_label))

    def clear(self, message: str) -> None:
        show_text(self.query_one("#detail-facts", Static), Text(message, self._style("dim")))
        show_text(self.query_one("#detail-alerts", Static), Text())
        self.query_one("#cpu-spark", Sparkline).data = []
        self.query_one("#rss-spark", Sparkline).data = []
