"""The confirmation before a signal is sent: which process, which signal, yes or no."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, RadioButton, RadioSet, Static

from daemoneye.models import ProcessRecord
from daemoneye.tui.logic.format import format_time, safe, safe_cell

SIGNALS: tuple[tuple[str, str], ...] = (
    ("TERM", "ask it to stop"),
    ("INT", "interrupt"),
    ("HUP", "hang up / reload"),
    ("KILL", "stop it now, no clean-up"),
    ("STOP", "pause"),
    ("CONT", "resume"),
)


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
            with RadioSet(id="signal-choice"):
                for index, (name, meaning) in enumerate(SIGNALS):
                    yield RadioButton(f"SIG{name:<5} {meaning}", value=index == 0, name=name)
            with Horizontal(id="signal-buttons"):
                yield Button("Send", id="signal-send", variant="error")
                yield Button("Cancel", id="signal-cancel")

    def on_mount(self) -> None:
        self.query_one(RadioSet).focus()

    @property
    def chosen(self) -> str:
        pressed = self.query_one(RadioSet).pressed_button
        return pressed.name if pressed is not None and pressed.name else "TERM"

    def action_send(self) -> None:
        self.dismiss(self.chosen)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#signal-send")
    def _send(self) -> None:
        self.action_send()

    @on(Button.Pressed, "#signal-cancel")
    def _cancel(self) -> None:
        self.action_cancel()
