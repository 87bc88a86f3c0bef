"""The `/` line: a filter in the language of daemoneye.filters, with its error shown under it,
wrapped, so that the suggestion at its end is never cut."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.message import Message
from textual.widgets import Input, Static

from daemoneye.filters import FilterError, ProcessFilter, parse_filter
from daemoneye.tui.widgets.text_update import show_text

PLACEHOLDER = "ssh  user:root  exe:/tmp  cpu>5  rss>100M  pid:123  alerted  -name:kworker"


class FilterInput(Input):
    """An Input whose keystrokes do not lay out the screen. Textual's Input assigns its
    virtual size on every change of value, and the screen's layout resets it, so each
    keystroke laid out (and repainted) the whole screen: 10-20 ms with 10,000 rows in the
    table under it. The size is set here first, without a layout, so Input's own assignment
    finds nothing to change; a one-line input has no scrollbar that would need it."""

    def _watch_value(self, value: str) -> None:
        self.set_reactive(Input.virtual_size, Size(self.content_width, 1))
        super()._watch_value(value)


class FilterBar(Vertical):
    """An input that parses as you type; a bad term is named under it, the last good filter
    stays in force."""

    @dataclass
    class Changed(Message):
        """A new valid filter (possibly empty)."""

        filter_bar: FilterBar
        process_filter: ProcessFilter

        @property
        def control(self) -> FilterBar:
            return self.filter_bar

    @dataclass
    class Done(Message):
        """The user pressed Enter or Escape in the filter line."""

        filter_bar: FilterBar

    PLACEHOLDER: str = PLACEHOLDER

    def parse(self, text: str) -> ProcessFilter:
        """The filter `text` says; raises FilterError (a subclass may speak another language)."""
        return parse_filter(text)

    def compose(self) -> ComposeResult:
        with Horizontal(classes="filter-line"):
            yield Static("/", classes="filter-prompt")
            yield FilterInput(placeholder=self.PLACEHOLDER, id="filter-input", compact=True)
        yield Static(Text(), id="filter-error")  # Text: show_text finds it unchanged

    @property
    def input(self) -> Input:
        return self.query_one("#filter-input", Input)

    @property
    def error(self) -> str:
        return str(self.query_one("#filter-error", Static).content)

    @on(Input.Changed, "#filter-input")
    def _parse(self, event: Input.Changed) -> None:
        event.stop()
        error = self.query_one("#filter-error", Static)
        try:
            parsed = self.parse(event.value)
        except FilterError as exc:
            show_text(error, Text(str(exc)))
            self.add_class("-invalid")
            return
        show_text(error, Text())
        self.remove_class("-invalid")
        self.post_message(self.Changed(self, parsed))

    @on(Input.Submitted, "#filter-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Done(self))

    def key_escape(self) -> None:
        self.post_message(self.Done(self))
