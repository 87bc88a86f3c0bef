"""The detail pane: everything about one process instance, its alerts and CPU/RSS sparklines.

One scrollable widget that draws its own lines, instead of a column of Statics and Sparklines:
the pane changes with every cursor step, and a Static whose text changes height lays out the
whole screen (twice: once for the text, once more when its new size is set), which cost two
full repaints a step, 10 ms or more each with 10,000 processes in the table beside it. Here
new content is wrapped to the pane's width and only the pane is repainted; its scroll range
is set without a layout, like the process table's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.events import Resize
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from daemoneye.tui.logic.detail import Fact
from daemoneye.tui.logic.spark import BARS, sparklines
from daemoneye.tui.widgets.component_style import component_style
from daemoneye.tui.widgets.scroll_size import set_scroll_size

LABEL_WIDTH = 9
MIN_VALUE_WIDTH = 12  # narrower than this beside the label, a value goes under it
SPARK_LABEL_WIDTH = 14
DETAIL_TONES = ("label", "new", "ended", "dim", "critical", "high", "medium", "low", "info")


class ProcessDetail(ScrollView, can_focus=True):
    """Shows facts prepared by `daemoneye.tui.logic.detail`; knows nothing of processes."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        *(f"process-detail--{tone}" for tone in DETAIL_TONES),
        "process-detail--spark-label",
        "process-detail--spark-low",
        "process-detail--spark-high",
    }

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._facts: Sequence[Fact] = ()
        self._alerts: Sequence[Fact] = ()
        self._cpu: Sequence[float] = ()
        self._rss: Sequence[float] = ()
        self._message = ""  # shown alone, dimmed, when there is no process
        self._lines: list[Strip] | None = None  # wrapped at `_width`; None: wrap again
        self._width = 0
        self._styles: dict[str, Style] = {}

    # -- what is shown ------------------------------------------------------------------------
    def show(
        self,
        facts: Sequence[Fact],
        alerts: Sequence[Fact],
        cpu: Sequence[float],
        rss: Sequence[float],
    ) -> None:
        self._facts, self._alerts, self._cpu, self._rss = facts, alerts, cpu, rss
        self._message = ""
        self._changed()

    def clear(self, message: str) -> None:
        self._facts, self._alerts, self._cpu, self._rss = (), (), (), ()
        self._message = message
        self._changed()

    @property
    def plain_lines(self) -> list[str]:
        """Every line of the pane as plain text, wrapped as drawn (for tests and exports)."""
        return [strip.text.rstrip() for strip in self._wrapped()]

    def _changed(self) -> None:
        self._lines = None
        self._size_to(self._wrapped())
        self.refresh()

    def _size_to(self, lines: Sequence[Strip]) -> None:
        """Size the scroll range for `lines` without laying out the screen (scroll_size.py)."""
        set_scroll_size(self, Size(self._width, len(lines)))

    # -- drawing ------------------------------------------------------------------------------
    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            if name == "":
                style = self.rich_style
            elif name.startswith("bar-"):  # "bar-3": the colour of bar 3
                low = self.get_component_styles("process-detail--spark-low").color
                high = self.get_component_styles("process-detail--spark-high").color
                level = int(name.removeprefix("bar-"))
                style = Style(color=low.blend(high, level / (len(BARS) - 1)).rich_color)
            else:
                style = component_style(self, f"process-detail--{name}")
            self._styles[name] = style
        return style

    def _segment_lines(self, width: int) -> Iterator[list[Segment]]:
        """The pane's lines at `width`, as segments: facts and alerts with their values
        wrapped under the value column, and the two sparklines between them."""
        console = self.app.console
        options = console.options.update(width=width, height=None, highlight=False)

        def render(text: Text, at: int) -> list[list[Segment]]:
            return console.render_lines(text, options.update_width(max(1, at)), pad=False)

        if self._message:
            yield from render(Text(self._message, self._style("dim"), end=""), width)
            return
        yield from self._fact_lines(self._facts, render, width)
        room = max(0, width - SPARK_LABEL_WIDTH)
        for label, levels in sparklines(self._cpu, self._rss, room):
            yield []
            line = [
                Segment(f"{label:<{SPARK_LABEL_WIDTH}}", self._style("spark-label")),
                Segment(" " * (room - len(levels))),
            ]  # the newest sample at the right
            line += (Segment(BARS[level], self._style(f"bar-{level}")) for level in levels)
            yield line
        yield []
        if self._alerts:
            yield from self._fact_lines(self._alerts, render, width)
        else:
            yield from render(Text("no alerts", self._style("dim"), end=""), width)

    def _fact_lines(
        self, facts: Sequence[Fact], render: Callable[[Text, int], list[list[Segment]]], width: int
    ) -> Iterator[list[Segment]]:
        """Label, then the value wrapped to the room beside it (a SHA-256 or a long command
        line continues under the value, not under the label)."""
        label_style, indent = self._style("label"), " " * LABEL_WIDTH
        beside = width - LABEL_WIDTH >= MIN_VALUE_WIDTH  # else under it, at the full width
        for label, value, tone in facts:
            text = Text(value, self._style(tone) if tone else "", end="", overflow="fold")
            if not beside:
                yield [Segment(label, label_style)]
                yield from render(text, width)
                continue
            for index, segments in enumerate(render(text, width - LABEL_WIDTH) or [[]]):
                lead = (
                    Segment(f"{label:<{LABEL_WIDTH}}", label_style)
                    if index == 0
                    else Segment(indent)
                )
                yield [lead, *segments]

    def _wrapped(self) -> list[Strip]:
        width = self.scrollable_content_region.width  # the gutter is kept (app.tcss)
        if self._lines is not None and width == self._width:
            return self._lines
        self._width = width
        base = self._style("")
        self._lines = [
            Strip(Segment.apply_style(segments, base)).adjust_cell_length(width, base)
            for segments in (self._segment_lines(width) if width > 0 else ())
        ]
        return self._lines

    def on_resize(self, event: Resize) -> None:
        self._size_to(self._wrapped())

    def render_line(self, y: int) -> Strip:
        lines = self._wrapped()
        index = round(self.scroll_offset.y) + y
        if 0 <= index < len(lines):
            return lines[index]
        return Strip.blank(self._width, self._style(""))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._lines = None
