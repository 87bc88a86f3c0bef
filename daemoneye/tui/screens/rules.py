"""The rules screen: every rule with its state, hits and load problems; enable/disable, reload,
open in $EDITOR, test."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from daemoneye.models import RuleProblem, RuleStatus
from daemoneye.tui.logic.rules import problem_text, rule_facts, rule_rows
from daemoneye.tui.messages import RulesChanged
from daemoneye.tui.screens.dashboard_screen import DashboardScreen, PaletteEntry
from daemoneye.tui.screens.query import QueryScreen
from daemoneye.tui.source import SourceError
from daemoneye.tui.widgets.live_table import LiveTable
from daemoneye.tui.widgets.rule_table import RuleTable


class RulesScreen(DashboardScreen):
    """Detection rules as the daemon loaded them."""

    CSS_PATH = "rules.tcss"
    MODE = "rules"
    HELP_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("e  space", "enable / disable (admin)"),
        ("o", "open the file in $EDITOR (a built-in rule: an override)"),
        ("r", "reload (admin)"),
        ("t", "test: run the rule's query"),
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e,space", "toggle_enabled", "Enable/disable"),
        Binding("o", "edit", "Edit"),
        Binding("r", "reload", "Reload"),
        Binding("t", "test", "Test"),
    ]
    PALETTE: ClassVar[tuple[PaletteEntry, ...]] = (
        ("Enable or disable rule", "Toggle the selected rule (admin)", "toggle_enabled"),
        ("Open rule file in $EDITOR", "Edit the selected rule's file at its line", "edit"),
        ("Reload rules", "Load every rule file again (admin)", "reload"),
        ("Test rule", "Run the selected rule's query now and show what it matches", "test"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.reload_problems: tuple[RuleProblem, ...] = ()

    def compose_body(self) -> ComposeResult:
        yield Static(id="rules-banner")
        yield RuleTable(id="rule-table")
        yield Static(id="rule-detail")

    @property
    def table(self) -> RuleTable:
        return self.query_one(RuleTable)

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "rules", self._refresh_rows)

    def on_screen_resume(self) -> None:
        self.table.focus()

    def _refresh_rows(self) -> None:
        rules = self.dashboard.rules
        self.table.sync(rule_rows(rules, self.dashboard.now()))
        banner = self.query_one("#rules-banner", Static)
        broken = sum(1 for status in rules if status.problems)
        text = Text(
            f" {len(rules)} rules · {sum(s.rule.enabled for s in rules)} enabled",
            no_wrap=True,
            overflow="ellipsis",
            end="",
        )
        if broken:
            text.append(f" · {broken} with load errors", "bold")
        file_problems = [p for p in self.reload_problems if p.rule_id is None]
        for problem in file_problems[:3]:
            text.append("\n ⚠ " + problem_text(problem))
        banner.update(text)
        banner.set_class(bool(broken or file_problems), "-problems")
        self._show_detail()

    @property
    def selected(self) -> RuleStatus | None:
        key = self.table.cursor_key
        return next((s for s in self.dashboard.rules if s.rule.id == key), None)

    @on(LiveTable.RowHighlighted, "#rule-table")
    def _show_detail(self) -> None:
        status = self.selected
        detail = self.query_one("#rule-detail", Static)
        if status is None:
            detail.update(Text("no rule selected", "dim"))
            return
        text = Text(end="")
        for index, (label, value) in enumerate(rule_facts(status, self.dashboard.now())):
            text.append("\n" if index else "")
            text.append(f"{label:<10}", "bold")
            text.append(value)
        for problem in status.problems:
            text.append("\n⚠ ", "bold")
            text.append(problem_text(problem), "bold")
        detail.update(text)

    # -- actions ----------------------------------------------------------------------------
    def action_toggle_enabled(self) -> None:
        status = self.selected
        if status is None or self.dashboard.refuse_unless_admin("enabling or disabling rules"):
            return
        self._set_enabled(status.rule.id, not status.rule.enabled)

    @work(group="rules", exclusive=True)
    async def _set_enabled(self, rule_id: str, enabled: bool) -> None:
        source = self.dashboard.source
        try:
            await source.rule_set_enabled(rule_id, enabled)
            rules = await source.rules_list()
        except SourceError as exc:
            self.dashboard.report_error("Rule not changed", exc)
            return
        self.app.post_message(RulesChanged(rules))
        self.notify(f"Rule {rule_id} {'enabled' if enabled else 'disabled'}.")

    def action_reload(self) -> None:
        if not self.dashboard.refuse_unless_admin("reloading rules"):
            self._reload()

    @work(group="rules", exclusive=True)
    async def _reload(self) -> None:
        source = self.dashboard.source
        try:
            outcome = await source.rules_reload()
            rules = await source.rules_list()
        except SourceError as exc:
            self.dashboard.report_error("Rules not reloaded", exc)
            return
        self.reload_problems = outcome.problems
        self.app.post_message(RulesChanged(rules))
        if not outcome.accepted:
            self.notify(
                f"{len(outcome.problems)} problem(s); the last good rule set stays active.",
                title="Rules not reloaded",
                severity="error",
            )
        elif outcome.problems:
            self.notify(
                f"{outcome.active} rules active; {len(outcome.problems)} rejected.",
                title="Rules reloaded",
                severity="warning",
            )
        else:
            self.notify(f"{outcome.active} rules active.", title="Rules reloaded")

    def action_edit(self) -> None:
        status = self.selected
        if status is not None:
            self.dashboard.open_rule(status.rule)

    async def action_test(self) -> None:
        status = self.selected
        if status is None:
            return
        await self.app.switch_mode("query")
        screen = self.app.screen
        if isinstance(screen, QueryScreen):
            screen.run_sql(status.rule.query, title=f"rule {status.rule.id}")
