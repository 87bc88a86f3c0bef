"""The `g` line: a moment typed in the one time syntax (daemoneye/timeparse.py); the screen
that shows it reads and checks the text."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Static

PLACEHOLDER = "03:12 · yesterday 23:40 · -15m · 2026-12-07 03:12 · 10m ago"


class TimePrompt(Horizontal):
    """ "go to" and an input; Enter posts `Chosen`, Escape posts `Cancelled`."""

    @dataclass
    class Chosen(Message):
        prompt: TimePrompt
        text: str

        @property
        def control(self) -> TimePrompt:
            return self.prompt

    @dataclass
    class Cancelled(Message):
        prompt: TimePrompt

    def compose(self) -> ComposeResult:
        yield Static("go to ", classes="time-prompt-label")
        yield Input(placeholder=PLACEHOLDER, id="time-input", compact=True)

    @property
    def input(self) -> Input:
        return self.query_one("#time-input", Input)

    def open(self) -> None:
        self.input.value = ""
        self.display = True
        self.input.focus()

    @on(Input.Submitted, "#time-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.display = False
        self.post_message(self.Chosen(self, event.value))

    def key_escape(self) -> None:
        self.display = False
        self.post_message(self.Cancelled(self))
