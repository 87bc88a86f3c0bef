"""The confirmation before a signal is sent: which process, which signal, yes or no."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, OptionList, Static
from textual.widgets.option_list import Option

from daemoneye.models import ProcessRecord
from daemoneye.tui.logic.format import format_time, safe, safe_cell
from daemoneye.tui.logic.signals import DEFAULT_SIGNAL, signal_choices, signal_label


class SignalScreen(ModalScreen[str | None]):
    """Asks which signal to send to one process instance; dismisses with its name or None."""

    CSS_PATH = "signal.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("enter", "send", "Send", priority=True),
    ]

    def __init__(self, record: ProcessRecord, now: float) -> None:
        super().__init__()
        self.record = record
        self.now = now

    def compose(self) -> ComposeResult:
        record = self.record
        with Vertical(id="signal-dialog"):
            yield Static(Text("Send a signal", style="bold"), id="signal-title")
            about = Text(end="")
            about.append(safe_cell(record.name, 40), "bold")
            about.append(
                f"  pid {record.pid}, started {format_time(record.start_time, self.now)}"
                f", user {safe_cell(record.user or '?', 24)}\n"
            )
            about.append(safe(" ".join(record.cmdline), 300) or f"[{safe(record.name, 40)}]")
            yield Static(about, id="signal-about")
            yield OptionList(
                *(
                    Option(Text(signal_label(number, name)), id=name)
                    for number, name in signal_choices()
                ),
                id="signal-choice",
            )
            with Horizontal(id="signal-buttons"):
                yield Button("Send", id="signal-send", variant="error")
                yield Button("Cancel", id="signal-cancel")

    def on_mount(self) -> None:
        choice = self.query_one(OptionList)
        choice.highlighted = choice.get_option_index(DEFAULT_SIGNAL)
        choice.focus()

    @property
    def chosen(self) -> str:
        """The highlighted signal: what the cursor is on is what Enter sends."""
        choice = self.query_one(OptionList)
        if choice.highlighted is None:
            return DEFAULT_SIGNAL
        return choice.get_option_at_index(choice.highlighted).id or DEFAULT_SIGNAL

    def action_send(self) -> None:
        self.dismiss(self.chosen)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(OptionList.OptionSelected, "#signal-choice")
    def _selected(self) -> None:
        self.action_send()

    @on(Button.Pressed, "#signal-send")
    def _send(self) -> None:
        self.action_send()

    @on(Button.Pressed, "#signal-cancel")
    def _cancel(self) -> None:
        self.action_cancel()
