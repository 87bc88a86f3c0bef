"""One process instance's detail over any screen, also long after it ended: what the
processes screen's pane shows, plus when and how it ended (exit code or signal)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from daemoneye.models import Alert
from daemoneye.tui.logic.detail import alert_facts, change_facts, process_facts
from daemoneye.tui.logic.timeline import ending_facts
from daemoneye.tui.source import ProcessDetail as InstanceDetail
from daemoneye.tui.widgets.process_detail import ProcessDetail


class InstanceScreen(ModalScreen[None]):
    """Esc, q or Enter closes it."""

    CSS_PATH = "instance.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,enter", "close", "Close"),
    ]

    def __init__(self, detail: InstanceDetail, alerts: list[Alert], now: float) -> None:
        super().__init__()
        self.detail = detail
        self.alerts = alerts
        self.now = now

    def compose(self) -> ComposeResult:
        record = self.detail.record
        ended = record.ended_at is not None
        with Vertical(id="instance-dialog"):
            title = "Process instance (ended)" if ended else "Process instance (running)"
            yield Static(Text(title, style="bold"), id="instance-title")
            yield ProcessDetail(id="instance-detail")

    def on_mount(self) -> None:
        record = self.detail.record
        now = self.now
        facts = process_facts(
            record,
            "ended" if record.ended_at is not None else "",
            self.detail.ancestry,
            self.detail.children,
            now,
        )
        facts[-1:-1] = [*ending_facts(record, now), *change_facts(self.detail.changes, now)]
        pane = self.query_one(ProcessDetail)
        pane.show(facts, alert_facts(self.alerts, now), [], [])
        pane.focus()

    def action_close(self) -> None:
        self.dismiss(None)
