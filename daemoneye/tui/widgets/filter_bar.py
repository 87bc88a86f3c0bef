"""The `/` line: a filter in the language of daemoneye.filters, with its error shown inline."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Static

from daemoneye.filters import FilterError, ProcessFilter, parse_filter

PLACEHOLDER = "ssh  user:root  exe:/tmp  cpu>5  rss>100M  pid:123  alerted  -name:kworker"


class FilterBar(Horizontal):
    """An input that parses as you type; a bad term is named beside it, the last good filter
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

    def compose(self) -> ComposeResult:
        yield Static("/", classes="filter-prompt")
        yield Input(placeholder=PLACEHOLDER, id="filter-input", compact=True)
        yield Static("", id="filter-error")

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
            parsed = parse_filter(event.value)
        except FilterError as exc:
            error.update(Text(str(exc)))
            self.add_class("-invalid")
            return
        error.update("")
        self.remove_class("-invalid")
        self.post_message(self.Changed(self, parsed))

    @on(Input.Submitted, "#filter-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Done(self))

    def key_escape(self) -> None:
        self.post_message(self.Done(self))
