"""The SQL editor: a few lines of SQL that run on Enter once complete, with a history."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea

from daemoneye.tui.logic.query_history import QueryHistory
from daemoneye.tui.logic.sql_entry import EnterAction, arrow_walks_history, editable, on_enter


class SqlEditor(TextArea):
    """A TextArea with a `QueryHistory`; Enter submits a complete statement (see
    `logic.sql_entry`), Escape hands the keys back to the screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave", "Leave", show=False),
    ]

    class Submitted(Message):
        """Enter on a complete statement or a dot command."""

        def __init__(self, editor: SqlEditor, value: str) -> None:
            super().__init__()
            self.editor = editor
            self.value = value

        @property
        def control(self) -> SqlEditor:
            return self.editor

    def __init__(self, *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(
            placeholder=placeholder,
            id=id,
            soft_wrap=True,
            tab_behavior="focus",
            show_line_numbers=False,
            highlight_cursor_line=False,
        )
        self.queries = QueryHistory()

    @property
    def value(self) -> str:
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.text = editable(text)
        self.move_cursor(self.document.end)

    async def _on_paste(self, event: events.Paste) -> None:
        """A paste lands whole (its newlines are text, not Enter), control characters shown.
        (Textual calls TextArea's own handler after this one unless the default is
        prevented: it is, and that handler gets the shown text instead.)"""
        event.prevent_default()
        await super()._on_paste(events.Paste(editable(event.text)))

    async def _on_key(self, event: events.Key) -> None:
        """Enter on complete SQL runs it; every other key goes on to TextArea's handler, which
        Textual calls after this one (a new line for an incomplete statement)."""
        if event.key != "enter":
            return
        action = on_enter(self.text)
        if action is not EnterAction.NEWLINE:
            event.stop()
            event.prevent_default()
            if action is EnterAction.RUN:
                self.post_message(self.Submitted(self, self.text))

    def _walks_history(self, key: str) -> bool:
        location = self.cursor_location
        return arrow_walks_history(
            key,
            on_first_line=self.navigator.is_first_wrapped_line(location),
            on_last_line=self.navigator.is_last_wrapped_line(location),
        )

    def action_cursor_up(self, select: bool = False) -> None:
        if select or not self._walks_history("up"):
            super().action_cursor_up(select)
            return
        self.text = editable(self.queries.older(self.text))
        # at the end of the first line if that is on the first screen row (a one-line query),
        # else at its start: either way ↑ again goes further back
        self.move_cursor((0, len(self.document[0])))
        if not self.navigator.is_first_wrapped_line(self.cursor_location):
            self.move_cursor((0, 0))

    def action_cursor_down(self, select: bool = False) -> None:
        if select or not self._walks_history("down"):
            super().action_cursor_down(select)
            return
        self.value = self.queries.newer()

    def action_leave(self) -> None:
        self.screen.focus_next()
