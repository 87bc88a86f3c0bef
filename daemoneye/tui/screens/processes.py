"""The processes screen: the live table, the `/` filter, sort and tree, the detail pane and
the signal action."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Static

from daemoneye.models import Connection, DaemonStatus, ProcessEvent, ProcessKey
from daemoneye.timeparse import TimeParseError, parse_time
from daemoneye.tui.input_priority import let_input_in
from daemoneye.tui.logic.alerts import alerts_for, worst_by_process
from daemoneye.tui.logic.connections import CONNECTIONS_REFRESH_S, connections_by_instance
from daemoneye.tui.logic.detail import alert_facts, change_facts, process_facts
from daemoneye.tui.logic.keys import parse_row_key, row_key
from daemoneye.tui.logic.live import ProcessSet
from daemoneye.tui.logic.past import past_set
from daemoneye.tui.logic.process_row import table_width_for_command
from daemoneye.tui.logic.processes import ProcessView
from daemoneye.tui.logic.sorting import SORTABLE
from daemoneye.tui.logic.timeline import ending_facts, past_banner
from daemoneye.tui.screens.dashboard_screen import DashboardScreen, PaletteEntry
from daemoneye.tui.screens.signal import SignalScreen
from daemoneye.tui.source import SourceError
from daemoneye.tui.widgets.filter_bar import FilterBar
from daemoneye.tui.widgets.host_meters import HostMetersPanel
from daemoneye.tui.widgets.live_table import PADDING, LiveTable
from daemoneye.tui.widgets.process_detail import ProcessDetail
from daemoneye.tui.widgets.process_table import ProcessTable
from daemoneye.tui.widgets.text_update import show_text
from daemoneye.tui.widgets.time_prompt import TimePrompt

MAX_DEFERRALS = 3  # frames a waiting process set gives way to keys, at most


DETAIL_WIDTH = 62  # #process-detail's width in processes.tcss


class ProcessesScreen(DashboardScreen):
    """Every live process, refreshed in place."""

    CSS_PATH = "processes.tcss"
    MODE = "processes"
    # The detail pane opens beside the table by itself only where the table keeps room for
    # the command line (at 120 columns it would leave COMMAND a few cells): the pane's width
    # (processes.tcss), its border, the table's narrowest with COMMAND_ROOM and its scrollbar.
    WIDE_FROM: ClassVar[int] = DETAIL_WIDTH + 1 + table_width_for_command(PADDING) + 1
    HELP_KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("/", "filter (Esc clears)"),
        ("s  S", "next sort column, reverse order"),
        ("click header", "sort by that column"),
        ("t", "tree by parent"),
        ("→ ←  > <", "scroll the command lines sideways"),
        ("K", "hide / show kernel threads (remembered)"),
        ("C", "show / hide the CONTAINER column (remembered)"),
        ("m", "hide / show the host meters (remembered)"),
        ("d  Enter", "detail pane"),
        ("k", "send a signal (admin, asks first)"),
        ("p", "the processes as they were at a time (03:12, -15m, yesterday 23:40)"),
        ("l", "back to live from the past view"),
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "next_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
        Binding("t", "toggle_tree", "Tree"),
        Binding("K", "toggle_kernel_threads", "Kernel threads", show=False),
        Binding("C", "toggle_container", "Container column", show=False),
        Binding("m", "toggle_meters", "Meters", show=False),
        Binding("d", "toggle_detail", "Detail"),
        Binding("k", "signal", "Signal"),
        Binding("p", "ask_past", "As of", show=False),
        Binding("l", "live", "Live", show=False),
        Binding("escape", "back", "Back", show=False),
    ]
    PALETTE: ClassVar[tuple[PaletteEntry, ...]] = (
        ("Filter processes", "Type a filter: ssh user:root cpu>5 rss>100M alerted", "filter"),
        ("Clear process filter", "Show every process again", "clear_filter"),
        ("Toggle tree view", "Processes under their parents, or a flat list", "toggle_tree"),
        (
            "Hide or show kernel threads",
            "kthreadd and its children (remembered)",
            "toggle_kernel_threads",
        ),
        (
            "Show or hide the container column",
            "Each process's container runtime and id, or host (remembered)",
            "toggle_container",
        ),
        ("Hide or show host meters", "CPU per core, memory, load, uptime", "toggle_meters"),
        ("Show process detail", "Command line, exe hash, ancestry, alerts", "toggle_detail"),
        ("Send signal to process", "TERM, KILL, … the selected process (admin)", "signal"),
        ("Processes as they were", "The process set at a past moment (03:12, -15m)", "ask_past"),
        ("Back to live processes", "Leave the past view", "live"),
        ("Reverse sort order", "Ascending ↔ descending", "reverse_sort"),
        *(
            (f"Sort processes by {column}", f"Order the table by {column}", f"sort('{column}')")
            for column in SORTABLE
        ),
    )

    def __init__(self) -> None:
        super().__init__()
        self.live_view = ProcessView()
        self.view = self.live_view  # what the table shows: the live set, or the past view's
        self.past_at: float | None = None  # the moment the past view shows; None: live
        self.past_loads = 0  # past sets taken in or refused, counted (tests wait on it)
        self._dirty = True
        self._detail_toggled = False
        self._detail_shown: tuple[object, ...] | None = None
        # the selected row's changes after start, fetched when it is selected or changes
        self._changes: tuple[str | None, tuple[ProcessEvent, ...]] = (None, ())
        self._changes_for: tuple[str, float] | None = None
        self._refreshed_at = float("-inf")  # time.monotonic() of the last table refresh
        self._incoming: list[ProcessSet] = []  # sets waiting for the next frame, in order
        self._incoming_since = 0.0  # time.monotonic() when the first waiting set came
        self._cursor_moves = 0  # cursor steps handled, counted
        # (inputs seen by the app, cursor steps) when the waiting sets last looked
        self._seen: tuple[int, int] = (0, 0)
        self._deferred = 0  # how often the waiting sets made way for a key
        # The sockets of the process in the detail pane, as last fetched: (key, connections).
        self._held: tuple[ProcessKey, tuple[Connection, ...]] | None = None

    def compose_body(self) -> ComposeResult:
        yield HostMetersPanel(id="host-meters")
        yield Static(id="past-banner")
        yield Static(id="process-status")
        yield TimePrompt(id="time-prompt")
        yield FilterBar(id="filter-bar")
        with Horizontal(id="process-body"):
            yield ProcessTable(id="process-table")
            yield ProcessDetail(id="process-detail")

    @property
    def table(self) -> ProcessTable:
        return self.query_one(ProcessTable)

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "process_set", self._processes_changed, init=False)
        self.watch(self.app, "alerts", self._alerts_changed, init=False)
        self.watch(self.app, "daemon_status", self._status_changed)
        self.set_class(not self.dashboard.show_meters, "-no-meters")
        self.set_interval(self.dashboard.tick_s, self._expire)
        self.set_interval(CONNECTIONS_REFRESH_S, self._fetch_connections)
        self.query_one(TimePrompt).display = False
        self.view.hide_kernel_threads = self.dashboard.hide_kernel_threads
        self.view.show_container = self.dashboard.show_container
        self.table.show_container(self.view.show_container)
        self._refresh_rows()

    def on_screen_resume(self) -> None:
        if self._dirty:
            self._refresh_rows()
        self.table.focus()

    def layout_changed(self) -> None:
        self._show_detail()

    # -- data -------------------------------------------------------------------------------
    def _processes_changed(self, process_set: ProcessSet) -> None:
        """Take a new set after the next frame, not now: a key handled just before it (a
        cursor step, the detail of the next process) is then on the screen in a few
        milliseconds instead of waiting for 10,000 rows to be re-sorted and for the frame
        that paints them. Sets that arrive meanwhile are all taken in, in order (a process
        that came and went between two of them must still be shown as ended), and the
        table is refreshed once."""
        if not self._incoming:
            if not self.call_after_refresh(self._take_processes):
                return  # the screen is closing
            self._incoming_since = time.monotonic()
            self._seen = (self.dashboard.inputs_seen, self._cursor_moves)
        self._incoming.append(process_set)

    async def _take_processes(self) -> None:
        """After a frame, or when the screen is idle. First the loop turns a few times, so
        that a key the input thread has sent reaches the app (input_priority.py). A key
        that reached the app since the sets last looked is on its way through this screen
        and the table (each a queue of its own; this screen's queue waits while this runs)
        or was just handled: the sets wait for one more frame, so that the key and the detail pane
        it changes are painted first; a few times at most, so that a held key cannot hold
        the table back."""
        await let_input_in()
        seen = (self.dashboard.inputs_seen, self._cursor_moves)
        if seen != self._seen and self._deferred < MAX_DEFERRALS:
            self._seen = seen
            self._deferred += 1
            if self.call_after_refresh(self._take_processes):
                return
        self._deferred = 0
        self._take_now()

    def _take_now(self) -> None:
        incoming, self._incoming = self._incoming, []
        if not incoming:
            return
        now = self.dashboard.now()
        for process_set in incoming:
            self.live_view.update(process_set, now)
        if self.past_at is None:
            self._dirty = True
            if self.is_current:
                self._refresh_rows()
        self.dashboard.set_taken()

    def _status_changed(self, status: DaemonStatus | None) -> None:
        panel = self.query_one(HostMetersPanel)
        panel.now = self.dashboard.now()
        panel.meters = status.host if status is not None else None

    def _alerts_changed(self) -> None:
        self.live_view.alerted = worst_by_process(self.dashboard.alerts.values())
        self.view.alerted = self.live_view.alerted
        self._dirty = True
        if self.is_current:
            self._refresh_rows()

    def _expire(self) -> None:
        """Drop highlights and ended rows that are due, when no refresh has done it lately.
        Every refresh expires them on its way (`ProcessView.order`), so while the daemon sends
        one a second this timer has nothing to do; doing it anyway re-sorted and repainted
        10,000 rows a second time each second, often right next to a refresh, where a key
        then waited for both."""
        if self._incoming and time.monotonic() - self._incoming_since >= self.dashboard.tick_s:
            self._take_now()  # their callback was lost (Textual drops one when not running)
            return
        if self.past_at is not None:
            self.live_view.expire(self.dashboard.now())
            self._show_banner()  # "14 h ago" moves on
            return
        if time.monotonic() - self._refreshed_at < self.dashboard.tick_s:
            return
        if self.view.expire(self.dashboard.now()):
            self._dirty = True
            if self.is_current:
                self._refresh_rows()

    def _refresh_rows(self) -> None:
        """The one place the process table changes."""
        self._dirty = False
        self._refreshed_at = time.monotonic()
        view = self.view
        order = view.order(self.dashboard.now())
        self.table.show(order, view.cells, view.changed)
        status = Text(no_wrap=True, overflow="ellipsis", end="")
        status.append(
            f" {view.summary(len(order))} · sort {view.sort.describe()} · "
            f"{'tree' if view.tree else 'list'}"
            f"{' · kernel threads hidden' if view.hide_kernel_threads else ''}"
        )
        if not view.filter.empty:
            status.append(" · filter ")
            status.append(view.filter.text)  # literal: whatever the user typed
        show_text(self.query_one("#process-status", Static), status)
        self._show_detail()

    # -- the detail pane ----------------------------------------------------------------------
    @property
    def selected_key(self) -> str | None:
        """The row key under the cursor."""
        return self.table.cursor_key

    @on(LiveTable.RowHighlighted, "#process-table")
    def _row_highlighted(self) -> None:
        self._cursor_moves += 1
        self._show_detail()
        self._fetch_connections()

    @work(group="connections", exclusive=True)
    async def _fetch_connections(self) -> None:
        """The sockets the filter needs (all of them, while a `port:` or `remote:` term is
        used) or else those of the process in the detail pane; nothing when neither shows."""
        wanted = self._connections_wanted()
        if wanted is None:
            return
        key, filter_text = wanted
        try:
            found = await self.dashboard.source.connections_list(filter_text)
        except SourceError:
            return  # the status line already says when the daemon is unreachable
        if key is None:
            self.view.connections = connections_by_instance(found)
            self._refresh_rows()
        elif self.selected_key is not None and parse_row_key(self.selected_key) == key:
            self._held = (key, found)
            self._show_detail()

    def _connections_wanted(self) -> tuple[ProcessKey | None, str] | None:
        if self.past_at is not None:
            return None  # sockets are live: the past view has none
        if self.view.filter.uses_connections:
            return None, ""
        key = self.selected_key
        if not self.detail_visible or key is None:
            return None
        return parse_row_key(key), f"pid:{parse_row_key(key).pid}"

    def _connections_of(self, key: str) -> tuple[Connection, ...]:
        instance = parse_row_key(key)
        if self.view.filter.uses_connections:
            return self.view.connections.get(instance, ())
        if self._held is not None and self._held[0] == instance:
            return tuple(c for c in self._held[1] if c.start_time == instance.start_time)
        return ()

    def _show_detail(self) -> None:
        pane = self.query_one(ProcessDetail)
        if not self.detail_visible:
            return
        key = self.selected_key
        record = self.view.record(key) if key is not None else None
        if key is None or record is None:
            self._detail_shown = None
            pane.clear("no process selected")
            return
        status = self.view.status(key)
        alerts = self.dashboard.alerts
        lineage = self.view.lineage
        ancestry, children = lineage.ancestry(key), lineage.children(key)
        past = self.past_at is not None
        cpu, rss = ([], []) if past else self.dashboard.history.samples(key)
        held = () if past else self._connections_of(key)
        shown = (key, record, status, alerts, ancestry, children, cpu, rss, held)
        if self._detail_shown is not None and all(
            a is b or a == b for a, b in zip(shown, self._detail_shown, strict=True)
        ):
            return  # nothing the pane shows has changed
        self._detail_shown = shown
        now = self.dashboard.now()
        facts = process_facts(record, status, ancestry, children, now, held)
        changes = self._changes[1] if self._changes[0] == key else ()
        # above the command line, which may be kilobytes long
        facts[-1:-1] = [*ending_facts(record, now), *change_facts(changes, now)]
        pane.show(facts, alert_facts(alerts_for(key, alerts.values()), now), cpu, rss)
        if self._changes_for != (key, record.last_seen):
            self._changes_for = (key, record.last_seen)
            self._fetch_changes(key)

    @work(group="detail-changes", exclusive=True)
    async def _fetch_changes(self, key: str) -> None:
        """The selected instance's changes after start, from the daemon; a newer selection
        cancels this one (exclusive), and an answer for a process no longer selected is
        dropped."""
        try:
            detail = await self.dashboard.source.process_get(parse_row_key(key))
        except SourceError:
            return  # the pane shows what it has; the connection state is shown elsewhere
        changes = detail.changes if detail is not None else ()
        if self.selected_key != key or self._changes == (key, changes):
            return
        self._changes = (key, changes)
        self._detail_shown = None
        self._show_detail()

    # -- actions ----------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.view.prepare_filtering()
        self.add_class("-filtering")
        self.query_one(FilterBar).input.focus()

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).input.value = ""
        self.remove_class("-filtering")
        self.table.focus()

    @on(FilterBar.Changed)
    def _filter_changed(self, event: FilterBar.Changed) -> None:
        uses_connections = self.view.filter.uses_connections
        self.view.filter = event.process_filter
        self._refresh_rows()
        if event.process_filter.uses_connections and not uses_connections:
            self._fetch_connections()

    @on(FilterBar.Done)
    def _filter_done(self) -> None:
        if not self.query_one(FilterBar).input.value:
            self.remove_class("-filtering")
        self.table.focus()

    @property
    def detail_visible(self) -> bool:
        """Beside the table on a wide terminal unless hidden; over it on a narrow one when
        opened."""
        return self._detail_toggled == self.has_class("-narrow")

    def action_back(self) -> None:
        if self._detail_toggled and self.has_class("-narrow"):
            self.action_toggle_detail()
        elif not self.view.filter.empty:
            self.action_clear_filter()

    def action_next_sort(self) -> None:
        index = SORTABLE.index(self.view.sort.column) if self.view.sort.column in SORTABLE else -1
        self.action_sort(SORTABLE[(index + 1) % len(SORTABLE)])

    def action_sort(self, column: str) -> None:
        self.view.sort = self.view.sort.toggled(column)
        self._refresh_rows()

    def action_reverse_sort(self) -> None:
        self.action_sort(self.view.sort.column)

    @on(LiveTable.HeaderSelected, "#process-table")
    def _header_selected(self, event: LiveTable.HeaderSelected) -> None:
        column = event.column
        if column in SORTABLE:
            self.action_sort(column)

    def action_toggle_tree(self) -> None:
        self.view.tree = not self.view.tree
        self._refresh_rows()

    def action_toggle_kernel_threads(self) -> None:
        self.view.hide_kernel_threads = not self.view.hide_kernel_threads
        self.dashboard.choose_kernel_threads(self.view.hide_kernel_threads)
        self._refresh_rows()

    def action_toggle_container(self) -> None:
        self.view.show_container = not self.view.show_container
        self.dashboard.choose_container_column(self.view.show_container)
        self.table.show_container(self.view.show_container)
        self._refresh_rows()

    def action_toggle_meters(self) -> None:
        show = self.has_class("-no-meters")
        self.set_class(not show, "-no-meters")
        self.dashboard.choose_meters(show)

    def action_toggle_detail(self) -> None:
        self._detail_toggled = not self._detail_toggled
        self.set_class(self._detail_toggled, "-detail-toggled")
        self._show_detail()

    @on(LiveTable.RowSelected, "#process-table")
    def _row_selected(self) -> None:
        self.action_toggle_detail()

    def select_process(self, instance: ProcessKey) -> bool:
        """Put the cursor on `instance` (clearing a filter that hides it); False if it is
        gone."""
        key = row_key(instance)
        if self._dirty:
            self._refresh_rows()
        if self.view.record(key) is None:
            return False
        if not self.table.select_key(key):
            self.action_clear_filter()
            self._refresh_rows()
            if not self.table.select_key(key):
                return False
        self.table.focus()
        return True

    def action_signal(self) -> None:
        key = self.selected_key
        record = self.view.record(key) if key is not None else None
        if key is None or record is None:
            self.notify("No process selected.", severity="warning")
            return
        if self.past_at is not None:
            self.notify(
                "This is the past view: signals act on live processes only (l: back to live).",
                title="Not live",
                severity="warning",
            )
            return
        if self.dashboard.refuse_unless_admin("sending a signal"):
            return
        if key not in self.view.records:
            self.notify(f"Process {record.pid} has already ended.", severity="warning")
            return
        instance = parse_row_key(key)

        def chosen(signal_name: str | None) -> None:
            if signal_name is not None:
                self._send_signal(instance, signal_name)

        self.app.push_screen(SignalScreen(record, self.dashboard.now()), chosen)

    @work(group="signal", exclusive=True)
    async def _send_signal(self, key: ProcessKey, signal_name: str) -> None:
        try:
            sent = await self.dashboard.source.process_signal(key, signal_name)
        except SourceError as exc:
            if exc.admin_required:
                self.dashboard.refuse_unless_admin("sending a signal")
            else:
                self.dashboard.report_error("Signal not sent", exc)
            return
        self.notify(f"{sent} sent to pid {key.pid}.", title="Signal")

    # -- the past view ------------------------------------------------------------------------
    def action_ask_past(self) -> None:
        self.query_one(TimePrompt).open()

    @on(TimePrompt.Chosen)
    def _time_chosen(self, event: TimePrompt.Chosen) -> None:
        self.table.focus()
        if not event.text.strip():
            return
        try:
            moment = parse_time(event.text, self.dashboard.now())
        except TimeParseError as exc:
            self.notify(str(exc), title="As of", severity="warning")
            return
        self.show_past(moment)

    @on(TimePrompt.Cancelled)
    def _time_cancelled(self) -> None:
        self.table.focus()

    @work(group="past", exclusive=True)
    async def show_past(self, moment: float, instance: ProcessKey | None = None) -> None:
        """Show the process set as it was at `moment`, same columns, sort, filter and mode,
        under a banner; the cursor on `instance` when given. A moment the history cannot
        answer is refused with what the history covers (the daemon says it)."""
        try:
            records = await self.dashboard.source.processes_at(moment)
        except SourceError as exc:
            self.past_loads += 1
            self.notify(str(exc), title="Out of reach", severity="warning", timeout=8)
            return
        past = ProcessView()
        self._carry(self.view, past)
        past.update(past_set(records), self.dashboard.now())
        self.view, self.past_at = past, moment
        self.past_loads += 1
        self.add_class("-past")
        self._show_banner()
        self._detail_shown = None
        self._refresh_rows()
        if instance is not None:
            self.table.select_key(row_key(instance))
        self.table.focus()

    def action_live(self) -> None:
        """Back to the live set, keeping the sort, filter and mode chosen in the past."""
        if self.past_at is None:
            return
        self._carry(self.view, self.live_view)
        self.view, self.past_at = self.live_view, None
        self.remove_class("-past")
        self._detail_shown = None
        self._refresh_rows()

    def _carry(self, source: ProcessView, target: ProcessView) -> None:
        target.sort = source.sort
        target.tree = source.tree
        target.filter = source.filter
        target.hide_kernel_threads = source.hide_kernel_threads
        target.show_container = source.show_container
        target.alerted = self.live_view.alerted

    def _show_banner(self) -> None:
        if self.past_at is None:
            return
        banner = Text(past_banner(self.past_at, self.dashboard.now()), no_wrap=True, end="")
        banner.append(" l: back to live ", "reverse")
        show_text(self.query_one("#past-banner", Static), banner)
