"""The health screen: how the daemon is doing, from its latest health report."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, VerticalScroll

from daemoneye.models import DaemonStatus
from daemoneye.tui.logic.health import health_sections, problems
from daemoneye.tui.messages import HealthUpdated
from daemoneye.tui.screens.dashboard_screen import DashboardScreen, PaletteEntry
from daemoneye.tui.source import SourceError
from daemoneye.tui.widgets.fact_panel import FactPanel

SECTIONS = ("daemon", "collection", "resources", "engine", "privileges")


class HealthScreen(DashboardScreen):
    """Daemon uptime, scan times, its own CPU and RSS, clients, the engine and its sinks, and
    each process's user and capabilities."""

    CSS_PATH = "health.tcss"
    MODE = "health"
    HELP_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (("r", "refresh"),)
    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "refresh_health", "Refresh")]
    PALETTE: ClassVar[tuple[PaletteEntry, ...]] = (
        ("Refresh health", "Ask the daemon for a new health report", "refresh_health"),
    )

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="health-body"):
            with Grid(id="health-grid"):
                for section in SECTIONS:
                    panel = FactPanel(id=f"health-{section}", classes="health-section")
                    panel.border_title = section
                    yield panel
            problems_panel = FactPanel(id="health-problems")
            problems_panel.border_title = "problems"
            yield problems_panel

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "daemon_status", self._show)

    def on_screen_resume(self) -> None:
        self._show(self.dashboard.daemon_status)

    def _show(self, status: DaemonStatus | None) -> None:
        if status is None:
            self.query_one("#health-daemon", FactPanel).show([("", "no health report yet", "dim")])
            return
        for name, facts in health_sections(status, self.dashboard.now()):
            self.query_one(f"#health-{name}", FactPanel).show(facts)
        found = problems(status)
        panel = self.query_one("#health-problems", FactPanel)
        panel.show(
            [("⚠", problem, "high") for problem in found]
            or [("", "none: the daemon reports itself healthy", "dim")],
            label_width=2,
        )
        panel.set_class(bool(found), "-problems")

    def action_refresh_health(self) -> None:
        self._refresh()

    @work(group="health", exclusive=True)
    async def _refresh(self) -> None:
        try:
            status = await self.dashboard.source.health()
        except SourceError as exc:
            self.dashboard.report_error("Health", exc)
            return
        self.app.post_message(HealthUpdated(status))
