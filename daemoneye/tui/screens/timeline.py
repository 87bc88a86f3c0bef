"""The timeline screen: what happened, newest first — exec, exit, alerts and changes after
start — with an activity strip over the whole history, jumps and steps in time, the timeline
filter, each event's process instance (also long ended), and the process set as it was."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from daemoneye.event_filter import parse_event_filter
from daemoneye.filters import ProcessFilter, parse_filter
from daemoneye.models import HistoryActivity, ProcessKey
from daemoneye.timeparse import TimeParseError, parse_time
from daemoneye.tui.logic.alerts import alerts_for
from daemoneye.tui.logic.keys import row_key
from daemoneye.tui.logic.timeline import (
    PAGE,
    TimelinePages,
    axis_line,
    clock_text,
    cursor_column,
    reach_problem,
    reach_text,
    stepped,
    strip_cells,
    strip_window,
)
from daemoneye.tui.screens.dashboard_screen import DashboardScreen, PaletteEntry
from daemoneye.tui.screens.instance import InstanceScreen
from daemoneye.tui.source import SourceError
from daemoneye.tui.widgets.activity_strip import ActivityStrip
from daemoneye.tui.widgets.filter_bar import FilterBar
from daemoneye.tui.widgets.live_table import LiveTable
from daemoneye.tui.widgets.text_update import show_text
from daemoneye.tui.widgets.time_prompt import TimePrompt
from daemoneye.tui.widgets.timeline_table import TimelineTable


class EventFilterBar(FilterBar):
    """The `/` line in the timeline's language: the process filter plus `event:KIND`."""

    PLACEHOLDER = "event:exec|exit|alert  ssh  user:root  name:bash  pid:123  cmd:--listen"

    def parse(self, text: str) -> ProcessFilter:
        parse_event_filter(text)  # raises FilterError for a bad term
        return parse_filter("")


class TimelineScreen(DashboardScreen):
    """History as events; `g` jumps, arrows and brackets step, `p` shows that moment's set."""

    CSS_PATH = "timeline.tcss"
    MODE = "timeline"
    HELP_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("g", "go to a time: 03:12, yesterday 23:40, -15m, 2026-12-07 03:12"),
        ("[  ]", "a minute back, a minute on"),
        ("{  }", "an hour back, an hour on"),
        ("l", "back to now (the newest events)"),
        ("/", "filter: the processes filter plus event:exec|exit|alert (Esc clears)"),
        ("Enter", "the event's process instance, also long ended"),
        ("p", "the processes as they were at the event (the past view)"),
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("g", "go_to", "Go to"),
        Binding("left_square_bracket", "step(-60)", "-1 min", show=False),
        Binding("right_square_bracket", "step(60)", "+1 min", show=False),
        Binding("left_curly_bracket", "step(-3600)", "-1 h", show=False),
        Binding("right_curly_bracket", "step(3600)", "+1 h", show=False),
        Binding("l", "latest", "Now"),
        Binding("slash", "filter", "Filter"),
        Binding("p", "past", "As of"),
        Binding("escape", "back", "Back", show=False),
    ]
    PALETTE: ClassVar[tuple[PaletteEntry, ...]] = (
        ("Timeline: go to a time", "03:12, yesterday 23:40, -15m", "go_to"),
        ("Timeline: back to now", "The newest events", "latest"),
        ("Timeline: a minute back", "Events up to a minute earlier", "step(-60)"),
        ("Timeline: an hour back", "Events up to an hour earlier", "step(-3600)"),
        ("Filter timeline", "event:exec|exit|alert plus the processes filter", "filter"),
        (
            "Processes as they were",
            "The process set at the selected event's moment",
            "past",
        ),
    )

    def __init__(self) -> None:
        super().__init__()
        self.pages = TimelinePages()
        self.filter_text = ""
        self.activity: HistoryActivity | None = None
        self.loads = 0  # answers taken in, counted (tests wait on it)
        self._away = False  # another screen was shown since this one

    def compose_body(self) -> ComposeResult:
        yield Static(id="timeline-status")
        yield ActivityStrip(id="activity-strip")
        yield Static(id="timeline-axis")
        yield TimePrompt(id="time-prompt")
        yield EventFilterBar(id="filter-bar")
        yield TimelineTable(id="timeline-table")

    @property
    def table(self) -> TimelineTable:
        return self.query_one(TimelineTable)

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(TimePrompt).display = False
        self._load(None)

    def on_screen_suspend(self) -> None:
        self._away = True

    def on_screen_resume(self) -> None:
        if self._away and self.pages.until is None:
            self._load(None)  # "now" has moved on since the screen was last shown
        self._away = False
        self.table.focus()

    # -- what the screen shows ---------------------------------------------------------------
    @property
    def cursor_moment(self) -> float:
        """The time the cursor stands at: the selected event's, else the top of the page."""
        event = self.pages.event(self.table.cursor_key)
        if event is not None:
            return event.ts
        return self.pages.until if self.pages.until is not None else self.dashboard.now()

    def _show(self) -> None:
        now = self.dashboard.now()
        self.table.sync(self.pages.rows(now))
        self._show_status()

    def _show_status(self) -> None:
        now = self.dashboard.now()
        pages = self.pages
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        if pages.until is None:
            line.append(" newest first, from now")
        else:
            line.append(f" up to {clock_text(pages.until, now, zone=True)}", "bold")
        held = len(pages.events or ())
        line.append(f" · {held}{'+' if pages.next else ''} events")
        if self.filter_text:
            line.append(" · filter ")
            line.append(self.filter_text)  # literal
        line.append(f" · {reach_text(pages.reach, now)}")
        if pages.error:
            line.append(" · ")
            line.append(pages.error, "bold")
        show_text(self.query_one("#timeline-status", Static), line)
        self._show_strip()

    def _show_strip(self) -> None:
        strip = self.query_one(ActivityStrip)
        now = self.dashboard.now()
        cursor = self.cursor_moment
        strip.show(strip_cells(self.activity, strip.size.width, cursor))
        since, _ = strip_window(self.pages.reach, now)
        if self.activity is not None:
            since = self.activity.since
        width = strip.size.width
        column = cursor_column(self.activity, cursor, width)
        axis = Text(axis_line(since, cursor, now, width, column), no_wrap=True, end="")
        show_text(self.query_one("#timeline-axis", Static), axis)

    # -- loading -----------------------------------------------------------------------------
    def _load(self, until: float | None) -> None:
        self.pages.start(until)
        self._fetch_page(until, None, fresh=True)

    @work(group="timeline-page", exclusive=True)
    async def _fetch_page(
        self, until: float | None, before: tuple[float, int, int] | None, *, fresh: bool
    ) -> None:
        try:
            page = await self.dashboard.source.timeline(
                until=until, before=before, filter_text=self.filter_text, limit=PAGE
            )
        except SourceError as exc:
            self.pages.error = str(exc)
            self.loads += 1
            self._show_status()
            return
        if fresh:
            self.pages.events = []
        self.pages.add(page.events, page.next, page.reach)
        self.loads += 1
        self._show()
        if fresh:
            if until is None:
                self.table.action_first()
            self._fetch_activity()

    @work(group="timeline-activity", exclusive=True)
    async def _fetch_activity(self) -> None:
        now = self.dashboard.now()
        since, until = strip_window(self.pages.reach, now)
        width = max(1, self.query_one(ActivityStrip).size.width)
        try:
            self.activity = await self.dashboard.source.activity(since, until, width)
        except SourceError:
            self.activity = None  # the strip stays empty; the status line shows the window
        self._show_strip()

    @on(LiveTable.RowHighlighted, "#timeline-table")
    def _row_highlighted(self) -> None:
        self._show_strip()
        if self.pages.wants_more(self.table.cursor_row) and self.pages.next is not None:
            self._fetch_page(self.pages.until, self.pages.next, fresh=False)

    # -- moving in time ----------------------------------------------------------------------
    def action_go_to(self) -> None:
        self.query_one(TimePrompt).open()

    @on(TimePrompt.Chosen)
    def _time_chosen(self, event: TimePrompt.Chosen) -> None:
        self.table.focus()
        if event.text.strip():
            self.go_to(event.text)

    @on(TimePrompt.Cancelled)
    def _time_cancelled(self) -> None:
        self.table.focus()

    def go_to(self, text: str) -> bool:
        """Show the events up to the moment `text` names; False (and why, on the screen) when
        it names none or one outside the history."""
        now = self.dashboard.now()
        try:
            moment = parse_time(text, now)
        except TimeParseError as exc:
            self.notify(str(exc), title="Go to", severity="warning")
            return False
        problem = reach_problem(moment, now, self.pages.reach)
        if problem is not None:
            self.notify(problem, title="Out of reach", severity="warning", timeout=8)
            return False
        self._load(moment)
        return True

    def action_step(self, seconds: float) -> None:
        now = self.dashboard.now()
        target = stepped(self.cursor_moment, seconds, now, self.pages.reach)
        self._load(None if target >= now else target)

    def action_latest(self) -> None:
        self._load(None)

    # -- filter ------------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.add_class("-filtering")
        self.query_one(FilterBar).input.focus()

    @on(FilterBar.Changed)
    def _filter_changed(self) -> None:
        text = self.query_one(FilterBar).input.value
        if text != self.filter_text:
            self.filter_text = text
            self._load(self.pages.until)

    @on(FilterBar.Done)
    def _filter_done(self) -> None:
        if not self.query_one(FilterBar).input.value:
            self.remove_class("-filtering")
        self.table.focus()

    def action_back(self) -> None:
        if self.filter_text or self.has_class("-filtering"):
            self.query_one(FilterBar).input.value = ""
            self.remove_class("-filtering")
            self.table.focus()

    # -- an event's process ------------------------------------------------------------------
    @on(LiveTable.RowSelected, "#timeline-table")
    def _row_selected(self) -> None:
        event = self.pages.event(self.table.cursor_key)
        if event is not None:
            self._open_instance(ProcessKey(event.pid, event.start_time))

    @work(group="timeline-instance", exclusive=True)
    async def _open_instance(self, key: ProcessKey) -> None:
        try:
            detail = await self.dashboard.source.process_get(key)
        except SourceError as exc:
            self.dashboard.report_error("Process", exc)
            return
        if detail is None:
            self.notify(
                f"pid {key.pid} of {clock_text(key.start_time, self.dashboard.now())} is no "
                "longer in the store (retention removed it).",
                severity="warning",
            )
            return
        alerts = alerts_for(row_key(key), self.dashboard.alerts.values())
        await self.app.push_screen(InstanceScreen(detail, alerts, self.dashboard.now()))

    def action_past(self) -> None:
        event = self.pages.event(self.table.cursor_key)
        moment = event.ts if event is not None else self.cursor_moment
        instance = ProcessKey(event.pid, event.start_time) if event is not None else None
        self.dashboard.show_past(moment, instance)
