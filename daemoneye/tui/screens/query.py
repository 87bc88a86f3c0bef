"""The query screen: a multi-line SQL editor with history, the result table, errors inline."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from daemoneye.tui.logic.format import safe_cell
from daemoneye.tui.logic.query_commands import (
    DotCommand,
    DotCommandError,
    answer,
    is_dot_command,
    parse_dot,
)
from daemoneye.tui.screens.dashboard_screen import DashboardScreen, PaletteEntry
from daemoneye.tui.source import QueryResult, SourceError
from daemoneye.tui.widgets.sql_editor import SqlEditor

MAX_SHOWN_ROWS = 5000
PLACEHOLDER = "SELECT pid, name, cpu_percent FROM live_processes ORDER BY cpu_percent DESC"


class QueryScreen(DashboardScreen):
    """Sandboxed SQL over the daemon's store."""

    CSS_PATH = "query.tcss"
    MODE = "query"
    HELP_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("/", "edit the SQL (it takes every key, 1 … 6 too)"),
        ("Esc", "leave the SQL: 1 … 6 switch screens again"),
        ("Enter", "run when complete (ends in ;), else a new line"),
        ("↑ ↓", "history from the first / last line, else move"),
        ("ctrl+l", "clear"),
        (".tables", "the tables and views SQL may read"),
        (".schema [T]", "their columns (of table T)"),
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_sql", "SQL"),
        Binding("ctrl+l", "clear", "Clear"),
    ]
    PALETTE: ClassVar[tuple[PaletteEntry, ...]] = (
        ("Run query", "Run the SQL in the editor, complete or not", "run"),
        ("Clear query", "Empty the SQL editor and the results", "clear"),
    )

    def compose_body(self) -> ComposeResult:
        yield SqlEditor(placeholder=PLACEHOLDER, id="sql")
        yield Static(
            Text(
                "/ edits the SQL, Enter runs it once it ends in ; · Esc leaves it · "
                "↑/↓ history · sandboxed, read-only",
                "dim",
            ),
            id="query-status",
        )
        yield DataTable(id="results", cursor_type="row")

    def on_screen_resume(self) -> None:
        """The SQL editor takes the keys only after `/`: arriving here, 1 … 6 still switch
        screens as the help says everywhere."""
        self.query_one("#results", DataTable).focus()

    def action_focus_sql(self) -> None:
        self.query_one(SqlEditor).focus()

    def action_clear(self) -> None:
        self.query_one(SqlEditor).value = ""
        self.query_one("#results", DataTable).clear(columns=True)
        self._status(Text(""))

    async def action_run(self) -> None:
        self.run_sql(self.query_one(SqlEditor).value)

    @on(SqlEditor.Submitted, "#sql")
    def _submitted(self, event: SqlEditor.Submitted) -> None:
        self.run_sql(event.value)

    def run_sql(self, sql: str, *, title: str = "") -> None:
        sql_input = self.query_one(SqlEditor)
        sql_input.value = sql
        sql = sql.strip()
        if not sql:
            return
        sql_input.queries.add(sql)
        if is_dot_command(sql):
            try:
                command = parse_dot(sql)
            except DotCommandError as exc:
                self._error(str(exc))
                return
            self._dot(command)
            return
        self._status(Text(f"running {title}…" if title else "running…", "dim"))
        self._run(sql, title)

    def _status(self, text: Text) -> None:
        self.query_one("#query-status", Static).update(text)
        self.query_one("#query-status", Static).set_class(False, "-error")

    def _error(self, message: str) -> None:
        status = self.query_one("#query-status", Static)
        status.update(Text(f"✗ {message}"))
        status.set_class(True, "-error")

    @work(group="query", exclusive=True)
    async def _run(self, sql: str, title: str) -> None:
        try:
            result = await self.dashboard.source.query_run(sql)
        except SourceError as exc:
            self._error(str(exc))
            return
        self._show(result, title)

    @work(group="query", exclusive=True)
    async def _dot(self, command: DotCommand) -> None:
        """`.tables` / `.schema [TABLE]`: the daemon's catalogue as a result table."""
        try:
            schemas = await self.dashboard.source.query_tables()
            columns, rows = answer(command, schemas)
        except (SourceError, DotCommandError) as exc:
            self._error(str(exc))
            return
        title = command.name + (f" {command.table}" if command.table else "")
        self._show(QueryResult(columns, tuple(rows)), title)

    def _show(self, result: QueryResult, title: str) -> None:
        table = self.query_one("#results", DataTable)
        with self.app.batch_update():
            table.clear(columns=True)
            for column in result.columns:
                table.add_column(Text(safe_cell(column, 40)), key=None)
            for row in result.rows[:MAX_SHOWN_ROWS]:
                table.add_row(*(Text(safe_cell("NULL" if v is None else str(v), 200)) for v in row))
        count = len(result.rows)
        text = Text(f"{title}: " if title else "", "bold")
        text.append(f"{count} row{'s' if count != 1 else ''}")
        if result.elapsed_ms is not None:
            text.append(f" in {result.elapsed_ms:.1f} ms")
        if result.truncated or count > MAX_SHOWN_ROWS:
            text.append(" · truncated", "bold")
        self._status(text)
