"""The alerts screen: the live feed, newest first, with filters, ack/close and a jump to the
process."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from daemoneye.models import Alert, ProcessKey
from daemoneye.tui.logic.alerts import (
    AlertFilter,
    AlertRows,
    cycle_host,
    cycle_min_severity,
    cycle_rule,
    cycle_states,
)
from daemoneye.tui.logic.format import format_time, safe
from daemoneye.tui.logic.glyphs import TIMES
from daemoneye.tui.messages import AlertRaised
from daemoneye.tui.screens.dashboard_screen import DashboardScreen, PaletteEntry
from daemoneye.tui.screens.processes import ProcessesScreen
from daemoneye.tui.source import SourceError
from daemoneye.tui.widgets.alert_table import AlertTable
from daemoneye.tui.widgets.live_table import LiveTable


class AlertsScreen(DashboardScreen):
    """Alerts as the daemon raises them."""

    CSS_PATH = "alerts.tcss"
    MODE = "alerts"
    HELP_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("a  c", "acknowledge, close (admin)"),
        ("p  Enter", "jump to the process"),
        ("v  o  r", "filter by severity, state, rule"),
        ("h", "filter by host (several hosts)"),
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "ack", "Ack"),
        Binding("c", "close_alert", "Close"),
        Binding("p", "jump", "Process"),
        Binding("v", "cycle_severity", "Severity"),
        Binding("o", "cycle_state", "State"),
        Binding("r", "cycle_rule", "Rule"),
        Binding("h", "cycle_host", "Host", show=False),
    ]
    PALETTE: ClassVar[tuple[PaletteEntry, ...]] = (
        ("Acknowledge alert", "Mark the selected alert acknowledged (admin)", "ack"),
        ("Close alert", "Close the selected alert (admin)", "close_alert"),
        ("Jump to alert's process", "Select the alert's process on the processes screen", "jump"),
        ("Filter alerts by severity", "any → low → medium → high → critical", "cycle_severity"),
        ("Filter alerts by state", "open+ack → open → ack → closed → all", "cycle_state"),
        ("Filter alerts by rule", "Cycle through the rules that raised alerts", "cycle_rule"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.alert_filter = AlertFilter()
        self._rows = AlertRows()  # each alert's row, rebuilt only when the alert changed

    def compose_body(self) -> ComposeResult:
        yield Static(id="alert-filter")
        yield AlertTable(id="alert-table", several_hosts=len(self.dashboard.hosts) > 1)
        yield Static(id="alert-detail")

    @property
    def table(self) -> AlertTable:
        return self.query_one(AlertTable)

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "alerts", self._refresh_rows)

    def on_screen_resume(self) -> None:
        self._refresh_rows()
        self.table.focus()

    def _refresh_rows(self) -> None:
        now = self.dashboard.now()
        alerts = self.dashboard.alerts.values()
        rows = self._rows.rows(
            alerts, self.alert_filter, now, several_hosts=len(self.dashboard.hosts) > 1
        )
        self.table.sync(rows)
        total = len(self.dashboard.alerts)
        line = Text(
            f" {len(rows)} of {total} alerts · {self.alert_filter.describe()}",
            no_wrap=True,
            overflow="ellipsis",
            end="",
        )
        self.query_one("#alert-filter", Static).update(line)
        self._show_detail()

    @property
    def selected(self) -> Alert | None:
        key = self.table.cursor_key
        return self.dashboard.alerts.get(key) if key is not None else None

    @on(LiveTable.RowHighlighted, "#alert-table")
    def _show_detail(self) -> None:
        alert = self.selected
        detail = self.query_one("#alert-detail", Static)
        if alert is None:
            detail.update(Text("no alert selected", "dim"))
            return
        now = self.dashboard.now()
        text = Text(end="")
        text.append(safe(alert.title, 1000), "bold")
        text.append(
            f"\nrule {safe(alert.rule_id, 200)} · pid {alert.pid} · seen "
            f"{alert.count}{TIMES} from {format_time(alert.first_seen, now)} to "
            f"{format_time(alert.last_seen, now)} · {alert.state}"
        )
        if alert.state_changed_by:
            text.append(
                f" by {safe(alert.state_changed_by, 100)} at "
                f"{format_time(alert.state_changed_at, now)}"
            )
        for column, value in alert.row[:6]:
            text.append(f"\n  {safe(column, 40)} = {safe(str(value), 300)}")
        detail.update(text)

    # -- filters ----------------------------------------------------------------------------
    def _set_filter(self, alert_filter: AlertFilter) -> None:
        self.alert_filter = alert_filter
        self._refresh_rows()

    def action_cycle_severity(self) -> None:
        f = self.alert_filter
        self._set_filter(replace(f, min_severity=cycle_min_severity(f.min_severity)))

    def action_cycle_state(self) -> None:
        f = self.alert_filter
        self._set_filter(replace(f, states=cycle_states(f.states)))

    def action_cycle_rule(self) -> None:
        f = self.alert_filter
        rule_ids = {alert.rule_id for alert in self.dashboard.alerts.values()}
        self._set_filter(replace(f, rule_id=cycle_rule(f.rule_id, rule_ids)))

    def action_cycle_host(self) -> None:
        """Several hosts: all → each host → all (this screen merges them; `h` elsewhere
        switches the host the other screens show)."""
        if len(self.dashboard.hosts) < 2:
            self.notify("This dashboard watches one host.")
            return
        f = self.alert_filter
        self._set_filter(replace(f, host=cycle_host(f.host, self.dashboard.hosts)))

    # -- actions ----------------------------------------------------------------------------
    def action_ack(self) -> None:
        self._change_state("acknowledged")

    def action_close_alert(self) -> None:
        self._change_state("closed")

    def _change_state(self, state: str) -> None:
        alert = self.selected
        if alert is None:
            self.notify("No alert selected.", severity="warning")
            return
        verb = "acknowledging alerts" if state == "acknowledged" else "closing alerts"
        # With several hosts the rights are per host: that daemon decides (and says so).
        if not alert.host and self.dashboard.refuse_unless_admin(verb):
            return
        if alert.state == state:
            self.notify(f"Alert {alert.id} is already {state}.")
            return
        self._send_state(alert, state)

    @work(group="alert-state")
    async def _send_state(self, alert: Alert, state: str) -> None:
        source = self.dashboard.source
        try:  # to the daemon that raised it: with several hosts, alert.host says which
            if state == "acknowledged":
                changed = await source.alert_ack(alert.id, alert.host)
            else:
                changed = await source.alert_close(alert.id, alert.host)
        except SourceError as exc:
            if exc.admin_required:
                self.dashboard.refuse_unless_admin("changing alerts")
            else:
                self.dashboard.report_error("Alert not changed", exc)
            return
        # The same path as a pushed alert: the app's handler updates the state.
        self.app.post_message(AlertRaised(changed))

    async def action_jump(self) -> None:
        alert = self.selected
        if alert is None:
            return
        key = ProcessKey(alert.pid, alert.start_time)
        await self.app.switch_mode("processes")
        screen = self.app.screen
        if not isinstance(screen, ProcessesScreen) or not screen.select_process(key):
            self.notify(
                f"Process {alert.pid} of alert {alert.id} is no longer running.", severity="warning"
            )

    @on(LiveTable.RowSelected, "#alert-table")
    async def _row_selected(self) -> None:
        await self.action_jump()
