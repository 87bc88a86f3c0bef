"""Pilot tests: what a user does on the dashboard and what they must see happen."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from textual import events
from textual.color import Color
from textual.widgets import DataTable, Static

from daemoneye.models import Alert, ProcessChange, ProcessesDelta, ProcessEvent, ProcessKey
from daemoneye.tui.logic.format import CMD_CELL_CHARS
from daemoneye.tui.logic.glyphs import CHEVRON, TIMES
from daemoneye.tui.logic.keys import parse_row_key, row_key
from daemoneye.tui.logic.process_row import COMMAND_ROOM
from daemoneye.tui.screens.alerts import AlertsScreen
from daemoneye.tui.screens.help import HelpScreen
from daemoneye.tui.screens.processes import ProcessesScreen
from daemoneye.tui.screens.query import QueryScreen
from daemoneye.tui.screens.rules import RulesScreen
from daemoneye.tui.screens.signal import SignalScreen
from daemoneye.tui.source import ProcessesReset, Resync
from daemoneye.tui.widgets.component_style import component_style
from daemoneye.tui.widgets.filter_bar import FilterBar
from daemoneye.tui.widgets.host_meters import HostMetersPanel
from daemoneye.tui.widgets.process_detail import ProcessDetail
from daemoneye.tui.widgets.sql_editor import SqlEditor
from tests.fakes.dashboard_source import (
    FAKE_NOW,
    FakeSource,
    FrozenClock,
    hostile_processes,
    proc,
    sample_hello,
)
from tests.tui.conftest import AppFactory
from tests.tui.helpers import current, dashboard, settle

pytestmark = pytest.mark.anyio
SIZE = (120, 40)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pids(screen: ProcessesScreen) -> list[int]:
    return [parse_row_key(key).pid for key in screen.table.shown_keys]


def processes_screen(app_screen: object) -> ProcessesScreen:
    assert isinstance(app_screen, ProcessesScreen)
    return app_screen


def count_layouts(screen: ProcessesScreen, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The screen's layouts from now on (each lays out and repaints every widget)."""
    layouts: list[object] = []
    refresh_layout = screen._refresh_layout

    def counted(*args: object, **kwargs: object) -> None:
        layouts.append(args)
        refresh_layout(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(screen, "_refresh_layout", counted)
    return layouts


def notices(app: object) -> list[str]:
    from textual.app import App

    assert isinstance(app, App)
    return [str(n.message) for n in app._notifications]


async def test_first_paint_lists_every_process_busiest_first(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        assert len(screen.table.shown_keys) == 17
        assert pids(screen)[:3] == [3100, 1200, 1034]
        assert screen.table.cursor_key == row_key(ProcessKey(3100, FAKE_NOW - 300))


async def test_filter_narrows_the_table_and_shows_errors_inline(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        await pilot.press("slash", *"user:www-data")
        await settle(pilot)
        assert sorted(pids(screen)) == [1034, 1035, 3100, 3101]
        bar = screen.query_one(FilterBar)
        bar.input.value = "user:www-data cpu>"  # pasted: not a valid filter
        await settle(pilot)
        assert "'cpu>': expected a number" in bar.error
        assert bar.has_class("-invalid")
        assert sorted(pids(screen)) == [1034, 1035, 3100, 3101], "the last good filter stays"
        await pilot.press("end", "1")
        await settle(pilot)
        assert bar.error == "" and sorted(pids(screen)) == [1034, 3100]
        await pilot.press("enter", "escape")
        await settle(pilot)
        assert len(pids(screen)) == 17
        assert bar.input.value == ""


async def test_alerted_filter_uses_open_alerts(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        await pilot.press("slash", *"alerted")
        await settle(pilot)
        assert sorted(pids(screen)) == [2590, 3100, 3101]


async def test_sort_by_keys_and_by_clicking_a_header(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        await pilot.press("s")  # cpu → rss, largest first
        await settle(pilot)
        assert pids(screen)[:2] == [3100, 1200]
        assert screen.view.sort.column == "rss"
        await pilot.press("S")  # reversed: smallest first
        await settle(pilot)
        assert pids(screen)[:2] == [2, 14]
        table = screen.table
        x = 3 + 2  # past the mark column (1 + padding): the PID header
        await pilot.click(table, offset=(x, 0))  # the PID header
        await settle(pilot)
        assert screen.view.sort.column == "pid"
        assert pids(screen)[:3] == [1, 2, 14]


async def test_tree_view_puts_children_under_their_parent(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        await pilot.press("t")
        await settle(pilot)
        order = pids(screen)
        assert order.index(1034) == order.index(1033) + 1
        assert order.index(2411) > order.index(2320) > order.index(2301) > order.index(812)
        first = screen.table.cells_of(row_key(ProcessKey(1034, FAKE_NOW - 2 * 86400)))
        last = screen.table.cells_of(row_key(ProcessKey(1035, FAKE_NOW - 2 * 86400)))
        assert first is not None and first[6].text.endswith("├─nginx")
        assert last is not None and last[6].text.endswith("└─nginx")


async def test_cursor_stays_on_the_same_process_across_refreshes(make_app: AppFactory) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        python3 = ProcessKey(2590, FAKE_NOW - 600)
        assert screen.table.select_key(row_key(python3))
        before = screen.table.cursor_row
        # python3 becomes the busiest process: its row moves to the top, the cursor follows.
        source.push(
            ProcessesDelta(
                1,
                (proc(5000, 1, "new", ["new"], started=1),),
                (ProcessChange(2590, python3.start_time, (("cpu_percent", 99.0),)),),
                (),
            )
        )
        await settle(pilot)
        assert screen.table.cursor_key == row_key(python3)
        assert screen.table.cursor_row != before
        assert pids(screen)[0] == 2590


async def test_new_processes_are_marked_and_ended_ones_linger_then_go(
    make_app: AppFactory, clock: FrozenClock
) -> None:
    source = FakeSource()
    async with make_app(source, tick_s=0.02).run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        newcomer = proc(5000, 1, "newcomer", ["newcomer"], started=0)
        source.push(ProcessesDelta(1, (newcomer,), (), ()))
        await settle(pilot)
        cells = screen.table.cells_of(row_key(newcomer.key))
        assert cells is not None and cells[0].text == "+" and cells[1].tone == "new"
        clock.advance(5)
        await pilot.pause(0.1)
        cells = screen.table.cells_of(row_key(newcomer.key))
        assert cells is not None and cells[0].text == " " and cells[1].tone == ""
        source.push(ProcessesDelta(2, (), (), (newcomer.key,)))
        await settle(pilot)
        cells = screen.table.cells_of(row_key(newcomer.key))
        assert cells is not None and cells[0].text == TIMES and cells[1].tone == "ended"
        clock.advance(5)
        await pilot.pause(0.1)
        assert row_key(newcomer.key) not in screen.table.shown_keys


async def test_acknowledge_an_alert(make_app: AppFactory) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        screen = current(pilot)
        assert isinstance(screen, AlertsScreen)
        assert screen.table.cursor_key == "/7"
        await pilot.press("a")
        await settle(pilot)
        assert source.calls == [("alert_acknowledged", (7,))]
        assert dashboard(pilot).alerts["/7"].state == "acknowledged"
        cells = screen.table.cells_of("/7")
        assert cells is not None and cells[1].text == "ack"
        await pilot.press("c")
        await settle(pilot)
        assert source.calls[-1] == ("alert_closed", (7,))
        assert "7" not in screen.table.shown_keys, "closed alerts leave the default view"


async def test_alert_actions_are_refused_politely_for_readers(make_app: AppFactory) -> None:
    source = FakeSource(hello=sample_hello("reader"))
    async with make_app(source).run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "a")
        await settle(pilot)
        assert source.calls == []
        assert any("needs an admin connection" in text for text in notices(pilot.app))


async def test_jump_from_an_alert_to_its_process(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "down", "down")  # alert 8: sh (3101)
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        assert screen.table.cursor_key == row_key(ProcessKey(3101, FAKE_NOW - 120))


async def test_signal_needs_confirmation(make_app: AppFactory) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("k")
        await settle(pilot)
        assert isinstance(pilot.app.screen, SignalScreen)
        await pilot.press("escape")
        await settle(pilot)
        assert source.calls == [], "cancelled: nothing sent"
        await pilot.press("k")
        await settle(pilot)
        await pilot.press(*["up"] * 6, "enter")  # from 15 SIGTERM up to 9 SIGKILL
        await settle(pilot)
        assert source.calls == [("process_signal", (ProcessKey(3100, FAKE_NOW - 300), "KILL"))]
        assert any("SIGKILL sent to pid 3100" in text for text in notices(pilot.app))


async def test_signal_dialog_sends_what_the_cursor_is_on(make_app: AppFactory) -> None:
    """Enter sends the highlighted signal — TERM untouched, any other once moved to."""
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("k")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("k")
        await settle(pilot)
        await pilot.press("down", "down", "down", "down", "enter")  # 15 → 19 SIGSTOP
        await settle(pilot)
        key = ProcessKey(3100, FAKE_NOW - 300)
        assert source.calls == [
            ("process_signal", (key, "TERM")),
            ("process_signal", (key, "STOP")),
        ]


async def test_signal_is_refused_politely_for_readers(make_app: AppFactory) -> None:
    source = FakeSource(hello=sample_hello("reader"))
    async with make_app(source).run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("k")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, SignalScreen)
        assert source.calls == []
        assert any(
            "Sorry, sending a signal needs an admin connection" in text
            for text in notices(pilot.app)
        )


async def test_disconnect_keeps_the_data_and_reconnect_restores(make_app: AppFactory) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        source.disconnect("connection refused")
        await settle(pilot)
        header = "".join(text for text, _ in dashboard(pilot).header_parts)
        assert "DISCONNECTED" in header and "retry in 2s" in header
        assert len(screen.table.shown_keys) == 17, "the last data stays visible"
        del source.processes[ProcessKey(2411, FAKE_NOW - 1200)]
        source.reconnect()
        await settle(pilot)
        header = "".join(text for text, _ in dashboard(pilot).header_parts)
        assert "● connected" in header and "DISCONNECTED" not in header
        assert 2411 not in [record.pid for record in screen.view.records.values()]


async def test_resync_replaces_what_was_dropped(make_app: AppFactory) -> None:
    source = FakeSource()
    async with make_app(source).run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        extra = proc(7000, 1, "after-resync", ["after-resync"], started=1)
        source.processes[extra.key] = extra
        source.push(Resync("processes"))
        source.push(ProcessesReset(tuple(source.processes.values())))
        await settle(pilot)
        assert row_key(extra.key) in screen.table.shown_keys
        # Alerts dropped: the worker fetches the whole list again.
        source.alerts[99] = dataclasses.replace(source.alerts[8], id=99, title="missed")
        source.push(Resync("alerts"))
        await settle(pilot)
        assert dashboard(pilot).alerts["/99"].title == "missed"


async def test_hostile_text_is_shown_literally(make_app: AppFactory) -> None:
    async with make_app(FakeSource(hostile_processes())).run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        names = {parse_row_key(k).pid: screen.table.cells_of(k) for k in screen.table.shown_keys}
        assert names[6601] is not None and names[6601][6].text == "[red]x[/red]"
        assert names[6601][2].text == "[b]root…", "cut to the column, still literal"
        assert names[6602] is not None and names[6602][6].text == "\\x1b[2Jclear"
        assert names[6603] is not None and names[6603][6].text == "line\\nbreak"
        assert names[6604] is not None and names[6604][6].text == "\\u202egnp.exe"
        big = names[6605]
        assert big is not None and len(big[7].text) <= CMD_CELL_CHARS
        # The detail pane of the 128 KiB command line is capped, not stalled.
        rendered = "\n".join(screen.query_one(ProcessDetail).plain_lines)
        assert "(+" in rendered and len(rendered) < 9000
        assert "\x1b" not in rendered


async def test_rules_toggle_edit_reload_and_test(
    make_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule_file = tmp_path / "local.toml"
    rule_file.write_text("[[rule]]\n")
    source = FakeSource()
    status = source.rules["listening-python"]
    source.rules["listening-python"] = dataclasses.replace(
        status, rule=dataclasses.replace(status.rule, source_file=str(rule_file))
    )
    edited: list[list[str]] = []

    def editor(argv: object) -> int:
        assert isinstance(argv, list)
        edited.append(argv)
        return 0

    app = make_app(source, editor=editor)
    # Headless tests cannot hand the terminal to an editor; the suspension itself is Textual's.
    monkeypatch.setattr(app, "suspend", contextlib.nullcontext)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        screen = current(pilot)
        assert isinstance(screen, RulesScreen)
        assert screen.table.cursor_key == "ssh-brute", "rules with load errors come first"
        assert screen.table.select_key("listening-python")
        await pilot.press("e")
        await settle(pilot)
        assert source.calls == [("rule_set_enabled", ("listening-python", False))]
        cells = screen.table.cells_of("listening-python")
        assert cells is not None and cells[3].text == "off"
        await pilot.press("o")
        await settle(pilot)
        assert edited == [["true", "+3", str(rule_file)]]
        await pilot.press("r")
        await settle(pilot)
        assert source.calls[-1] == ("rules_reload", ())
        await pilot.press("t")
        await settle(pilot)
        query = current(pilot)
        assert isinstance(query, QueryScreen)
        assert [name for name, _ in source.calls][-1] == "query_run"


async def test_query_runs_keeps_history_and_shows_errors(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        screen = current(pilot)
        assert isinstance(screen, QueryScreen)
        await pilot.press("slash", *"SELECT pid FROM live_processes;", "enter")
        await settle(pilot)
        from textual.widgets import DataTable

        assert screen.query_one("#results", DataTable).row_count == 17
        await pilot.press("ctrl+l", *"SELECT no_such FROM x;", "enter")
        await settle(pilot)
        status = screen.query_one("#query-status", Static)
        assert "no such column" in str(status.content) and status.has_class("-error")
        await pilot.press("up")
        assert screen.query_one("#sql").value == "SELECT no_such FROM x;"  # type: ignore[attr-defined]
        await pilot.press("up")
        assert screen.query_one("#sql").value == "SELECT pid FROM live_processes;"  # type: ignore[attr-defined]


async def test_help_opens_with_question_mark_and_f1(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(pilot.app.screen, HelpScreen)
        await pilot.press("escape", "f1")
        await settle(pilot)
        assert isinstance(pilot.app.screen, HelpScreen)


async def test_palette_offers_every_action(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        app = dashboard(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {
            "Go to Alerts",
            "Filter processes",
            "Toggle tree view",
            "Send signal to process",
            "Sort processes by rss",
            "Theme",
        } <= titles
        await pilot.press("2")
        await settle(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"Acknowledge alert", "Close alert", "Jump to alert's process"} <= titles


async def test_theme_choice_is_remembered(make_app: AppFactory) -> None:
    remembered: list[str] = []
    async with make_app(remember_theme=remembered.append).run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert pilot.app.theme == "daemoneye-dark"
        assert remembered == [], "starting up is not a choice"
        table = processes_screen(pilot.app.screen).table
        dark_row = table.render_line(2)
        pilot.app.theme = "daemoneye-light"
        await settle(pilot)
        assert remembered == ["daemoneye-light"]
        # The table keeps its styles between frames; a new theme must reach the rows.
        light_row = table.render_line(2)
        assert light_row.text == dark_row.text
        backgrounds = {segment.style.bgcolor for segment in light_row if segment.style}
        assert (
            backgrounds
            == {table.rich_style.bgcolor}
            != {segment.style.bgcolor for segment in dark_row if segment.style}
        )


async def test_a_broken_theme_is_reported_and_skipped(make_app: AppFactory, tmp_path: Path) -> None:
    from daemoneye.tui.themes import builtin_theme_dir

    user_themes = tmp_path / "themes"
    user_themes.mkdir()
    (user_themes / "broken.toml").write_text('name = "broken"\nprimary = "not a colour"\n')
    app = make_app(theme="broken", theme_dirs=[builtin_theme_dir(), user_themes])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert pilot.app.theme == "daemoneye-dark"
        messages = notices(pilot.app)
        assert any("broken.toml" in text and "not a colour" in text for text in messages)
        assert any("'broken' is not available" in text for text in messages)


async def test_notifications_never_parse_markup(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        pilot.app.notify("rule [red]x[/red] failed")
        await settle(pilot)
        notification = list(pilot.app._notifications)[-1]
        assert notification.message == "rule [red]x[/red] failed" and not notification.markup


async def test_clicking_a_screen_name_switches_to_it(make_app: AppFactory) -> None:
    from daemoneye.tui.widgets.nav_bar import NavBar

    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click(NavBar, offset=(len(" 1 Processes ") + 3, 0))  # on " 2 Alerts "
        await settle(pilot)
        assert isinstance(pilot.app.screen, AlertsScreen)
        assert pilot.app.screen.query_one(NavBar).current == "alerts"


async def test_refreshes_repaint_rows_without_laying_out_the_screen(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A screen layout repaints every widget; a refresh of 10,000 rows must cost only the rows
    and lines that changed, so it must not lay out. The scrollbar still covers every row."""
    source = FakeSource()
    async with make_app(source).run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        source.push(
            ProcessesDelta(
                1,
                tuple(
                    proc(6000 + n, 1, f"worker{n}", [f"worker{n}"], started=900) for n in range(40)
                ),
                (),
                (),
            )
        )
        await settle(pilot)  # the scrollbar appears: that one lays out
        layouts = count_layouts(screen, monkeypatch)
        python3 = ProcessKey(2590, FAKE_NOW - 600)
        source.push(
            ProcessesDelta(
                2,
                tuple(
                    proc(7000 + n, 1, f"extra{n}", [f"extra{n}"], started=900) for n in range(30)
                ),
                (ProcessChange(2590, python3.start_time, (("cpu_percent", 42.0),)),),
                (),
            )
        )
        await settle(pilot)
        assert layouts == []
        rows = len(screen.table.shown_keys)
        assert rows == 17 + 40 + 30
        assert screen.table.vertical_scrollbar.window_virtual_size == rows + 1
        await pilot.press("end")
        await settle(pilot)
        assert screen.table.cursor_row == rows - 1
        assert screen.table.scroll_offset.y == screen.table.max_scroll_y > 0


async def test_cursor_steps_update_the_detail_pane_without_laying_out_the_screen(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each cursor step shows another process in the detail pane, whose facts take more or
    fewer lines; that must repaint the pane alone, not lay out (and so repaint) the screen."""
    async with make_app().run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        pane = screen.query_one(ProcessDetail)
        layouts = count_layouts(screen, monkeypatch)
        heights = set()
        for _ in range(len(screen.table.shown_keys) - 1):
            await pilot.press("down")
            await settle(pilot, rounds=1)
            key = screen.table.cursor_key
            assert key is not None
            pid = parse_row_key(key).pid
            assert f"pid {pid} " in pane.plain_lines[0]
            assert pane.virtual_size.height == len(pane.plain_lines)
            heights.add(len(pane.plain_lines))
        assert len(heights) > 1, "the sample host has processes with longer and shorter details"
        assert layouts == []


async def test_typing_a_filter_does_not_lay_out_the_screen(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each keystroke in the filter line re-filters the table; with 10,000 rows under it, a
    layout of the whole screen on top (Textual's Input asks for one on every change of
    value) doubled what a keystroke cost."""
    async with make_app().run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        await pilot.press("slash")
        await settle(pilot)
        layouts = count_layouts(screen, monkeypatch)
        for key in "nginx":
            await pilot.press(key)
            await settle(pilot, rounds=1)
        assert screen.query_one(FilterBar).input.value == "nginx"
        assert {parse_row_key(key).pid for key in screen.table.shown_keys} == {
            1033,
            1034,
            1035,
            2411,
        }  # three nginx, and vim editing /etc/nginx/…
        assert layouts == []


async def test_muted_text_is_drawn_muted(make_app: AppFactory) -> None:
    """`$foreground-muted` is the foreground at part strength. Textual hands a component's
    translucent colour to Rich at full strength; the tables and panes must mix it over their
    background, or dimmed rows (kernel threads, ended processes) and labels look like the rest."""
    async with make_app().run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        table, pane = screen.table, screen.query_one(ProcessDetail)
        foreground = Color.parse(pilot.app.current_theme.foreground or "").rich_color
        for widget, component in ((table, "live-table--dim"), (pane, "process-detail--label")):
            muted = widget.get_component_styles(component).color
            assert muted.a < 1
            expected = (widget.background_colors[1] + muted).rich_color
            drawn = component_style(widget, component).color
            assert drawn == expected != foreground


async def test_detail_pane_grows_when_the_process_gets_more_alerts(make_app: AppFactory) -> None:
    """The detail pane draws its own lines and never lays the screen out; new alerts for the
    selected process must still get the room to show all of them, and scroll into view."""
    source = FakeSource()
    async with make_app(source).run_test(size=(160, 18)) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        python3 = ProcessKey(2590, FAKE_NOW - 600)
        assert screen.table.select_key(row_key(python3))
        await settle(pilot)
        pane = screen.query_one(ProcessDetail)
        before = pane.virtual_size.height
        for n in range(4):
            source.push(
                Alert(
                    id=100 + n,
                    rule_id=f"rule-{n}",
                    severity="high",
                    title=f"python3 (2590) did thing {n}",
                    pid=2590,
                    start_time=python3.start_time,
                    first_seen=FAKE_NOW - 5,
                    last_seen=FAKE_NOW - 5,
                    count=1,
                    state="open",
                    state_changed_at=None,
                    state_changed_by=None,
                    row=(),
                )
            )
        await settle(pilot)
        lines = pane.plain_lines
        assert any("did thing 3" in line for line in lines)
        assert pane.virtual_size.height == len(lines) >= before + 4
        assert pane.max_scroll_y == len(lines) - pane.size.height > 0
        assert pane.vertical_scrollbar.window_virtual_size == len(lines)  # drawn to match
        pane.scroll_end(animate=False)
        await settle(pilot)
        assert "did thing 3" in "".join(pane.render_line(y).text for y in range(pane.size.height))


async def test_ended_rows_go_with_the_next_refresh_and_the_timer_only_when_none_came(
    make_app: AppFactory, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each refresh drops the rows whose time is up. The expiry timer must not re-sort and
    repaint the table a second time each second while refreshes keep coming; when they stop,
    it still takes the ended rows away."""
    source = FakeSource()
    async with make_app(source, tick_s=0.2).run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        refreshes: list[float] = []
        refresh_rows = screen._refresh_rows

        def counted() -> None:
            refreshes.append(clock())
            refresh_rows()

        monkeypatch.setattr(screen, "_refresh_rows", counted)
        gone = proc(5000, 1, "brief", ["brief"], started=1)
        source.push(ProcessesDelta(1, (gone,), (), ()))
        source.push(ProcessesDelta(2, (), (), (gone.key,)))
        await settle(pilot)
        assert row_key(gone.key) in screen.table.shown_keys  # ended: shown a while longer
        clock.advance(5)
        screen._expire()  # right behind a refresh: nothing to do
        assert row_key(gone.key) in screen.table.shown_keys
        calls = len(refreshes)
        source.push(
            ProcessesDelta(
                3, (), (ProcessChange(1, FAKE_NOW - 3 * 86_400, (("cpu_percent", 1.0),)),), ()
            )
        )
        await settle(pilot)
        assert row_key(gone.key) not in screen.table.shown_keys, "the refresh expired it"
        assert len(refreshes) == calls + 1
        # No refresh for a while: the timer expires rows on its own.
        newcomer = proc(5001, 1, "newcomer", ["newcomer"], started=0)
        source.push(ProcessesDelta(4, (newcomer,), (), ()))
        await settle(pilot)
        cells = screen.table.cells_of(row_key(newcomer.key))
        assert cells is not None and cells[0].text == "+"
        clock.advance(5)
        await pilot.pause(0.5)
        cells = screen.table.cells_of(row_key(newcomer.key))
        assert cells is not None and cells[0].text == " "


async def test_ctrl_c_says_how_to_quit_without_printing_markup(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+c")
        await settle(pilot)
        said = [text for text in notices(pilot.app) if "to quit the app" in text]
        assert said, notices(pilot.app)
        assert "[b]" not in said[-1] and "[/b]" not in said[-1]
        assert said[-1] == "Press q or ctrl+q to quit the app."
        assert pilot.app.is_running


async def test_capital_k_hides_kernel_threads_and_remembers(make_app: AppFactory) -> None:
    remembered: list[bool] = []
    app = make_app(remember_kernel_threads=remembered.append)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        assert {2, 14} <= set(pids(screen))
        await pilot.press("K")
        await settle(pilot)
        assert not {2, 14} & set(pids(screen))
        assert len(pids(screen)) == 15
        assert "kernel threads hidden" in str(screen.query_one("#process-status").render())
        await pilot.press("K")
        await settle(pilot)
        assert {2, 14} <= set(pids(screen))
        assert remembered == [True, False]


async def test_capital_c_shows_the_container_column_and_remembers(make_app: AppFactory) -> None:
    remembered: list[bool] = []
    app = make_app(remember_container=remembered.append)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        assert "container" not in [c.key for c in screen.table.columns]
        await pilot.press("C")
        await settle(pilot)
        keys = [c.key for c in screen.table.columns]
        assert keys.index("container") == keys.index("name") - 1
        first = screen.table.shown_keys[0]
        cells = screen.table.cells_of(first)
        assert cells is not None and len(cells) == len(keys)
        await pilot.press("C")
        await settle(pilot)
        assert "container" not in [c.key for c in screen.table.columns]
        assert remembered == [True, False]


async def test_the_container_column_is_shown_when_the_config_says_so(make_app: AppFactory) -> None:
    async with make_app(show_container=True).run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = processes_screen(pilot.app.screen).table
        assert "container" in [c.key for c in table.columns]


async def test_kernel_threads_start_hidden_when_the_config_says_so(make_app: AppFactory) -> None:
    async with make_app(hide_kernel_threads=True).run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert not {2, 14} & set(pids(processes_screen(pilot.app.screen)))


async def test_number_keys_switch_screens_from_the_query_screen_until_slash(
    make_app: AppFactory,
) -> None:
    """1 … 5 switch screens, as the help says, until `/` opens the SQL line; there they are
    typed, and Esc gives them back."""
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        query = current(pilot)
        assert isinstance(query, QueryScreen)
        await pilot.press("1")
        await settle(pilot)
        assert isinstance(current(pilot), ProcessesScreen)
        assert query.query_one("#sql").value == ""  # type: ignore[attr-defined]
        await pilot.press("4")
        await settle(pilot)
        await pilot.press("slash", *"SELECT 1 LIMIT 5", "escape")
        await settle(pilot)
        assert query.query_one("#sql").value == "SELECT 1 LIMIT 5"  # type: ignore[attr-defined]
        assert current(pilot) is query
        await pilot.press("2")
        await settle(pilot)
        assert isinstance(current(pilot), AlertsScreen)
        assert query.query_one("#sql").value == "SELECT 1 LIMIT 5"  # type: ignore[attr-defined]


async def test_a_filter_error_is_shown_whole_at_80_columns(make_app: AppFactory) -> None:
    """The suggestion at the end of the message is what helps: wrapped, never cut."""
    from textual.geometry import Region

    async with make_app().run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"user:www-data rss>1XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX")
        await settle(pilot)
        bar = pilot.app.screen.query_one(FilterBar)
        assert bar.error.endswith("(sizes like 100M or 1G)")
        error = bar.query_one("#filter-error", Static)
        width, height = error.size
        assert height >= 2, "a long message wraps onto a second line"
        shown = "".join(strip.text for strip in error.render_lines(Region(0, 0, width, height)))
        assert "".join(shown.split()) == "".join(bar.error.split())
        assert bar.region.contains_region(error.region), "no line of it is clipped"
        assert error.region.right <= 80


async def test_detail_pane_lists_the_selected_process_changes_after_start(
    make_app: AppFactory,
) -> None:
    """The pane asks the daemon for the selected instance's changes (a rename, a new uid, a
    deleted exe) and lists them newest first, with process text escaped; another process's
    changes are never shown for this one."""
    source = FakeSource()
    python3 = ProcessKey(2590, FAKE_NOW - 600)
    source.changes[python3] = (
        ProcessEvent(
            FAKE_NOW - 30,
            "rename",
            2590,
            python3.start_time,
            old_value="python3",
            new_value="[kworker/0:1]\x1b[2J",
        ),
        ProcessEvent(
            FAKE_NOW - 20,
            "uid",
            2590,
            python3.start_time,
            old_value="1000",
            new_value="0",
            exe_setid=False,
        ),
        ProcessEvent(FAKE_NOW - 10, "exe_deleted", 2590, python3.start_time, old_value="/tmp/x"),
    )
    async with make_app(source).run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        assert screen.table.select_key(row_key(python3))
        await settle(pilot)
        lines = "\n".join(screen.query_one(ProcessDetail).plain_lines)
        assert "exe gone /tmp/x" in lines
        assert f"uid      1000 {CHEVRON} 0" in lines
        assert f"renamed  python3 {CHEVRON} [kworker/0:1]\\x1b[2J" in lines
        assert lines.index("exe gone") < lines.index("uid      1000") < lines.index("renamed")
        others = [k for k in source.processes if k != python3]
        assert screen.table.select_key(row_key(others[0]))
        await settle(pilot)
        assert "renamed" not in "\n".join(screen.query_one(ProcessDetail).plain_lines)


async def test_host_meters_show_the_daemons_sample_and_m_hides_them(make_app: AppFactory) -> None:
    remembered: list[bool] = []
    async with make_app(remember_meters=remembered.append).run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        panel = screen.query_one(HostMetersPanel)
        shown = str(panel.render())
        assert "4 cores" in shown and "Load 1.25 0.80 0.55" in shown and "Up 3d 4h" in shown
        assert panel.display
        await pilot.press("m")
        await settle(pilot)
        assert not panel.display
        await pilot.press("m")
        await settle(pilot)
        assert panel.display
        assert remembered == [False, True]


async def test_meters_start_hidden_when_the_config_says_so(make_app: AppFactory) -> None:
    async with make_app(show_meters=False).run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert not processes_screen(pilot.app.screen).query_one(HostMetersPanel).display


async def test_right_and_left_scroll_the_command_column(make_app: AppFactory) -> None:
    async with make_app().run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = processes_screen(pilot.app.screen).table
        key = table.cursor_key
        assert key is not None
        line = table.render_line(1).text
        assert "/tmp/.x/kthreadd -o" in line
        await pilot.press("right")
        await settle(pilot)
        assert table.shift_offset == 8
        assert "COMMAND «8" in table.render_line(0).text
        shifted = table.render_line(1).text
        assert "/tmp/.x/" not in shifted and "kthreadd -o pool" in shifted
        await pilot.press("greater_than_sign", "less_than_sign", "left")
        await settle(pilot)
        assert table.shift_offset == 0
        assert table.cursor_key == key  # sideways keys never move the cursor
        await pilot.press("left")
        assert table.shift_offset == 0


async def test_the_command_column_keeps_room_at_80_columns(make_app: AppFactory) -> None:
    async with make_app().run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = processes_screen(pilot.app.screen).table
        widths = dict(zip([c.key for c in table.columns], table._widths, strict=True))
        assert widths["cmd"] >= 20
        assert widths["pid"] == 7 and widths["cpu"] == 5 and widths["started"] == 8


async def test_o_on_a_builtin_rule_opens_a_new_override_in_the_users_rules_dir(
    make_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builtin = tmp_path / "package" / "rules"
    builtin.mkdir(parents=True)
    pack = builtin / "pack.toml"
    pack.write_text(
        '[[rule]]\nid = "other"\nquery = "SELECT 1"\n\n'
        '[[rule]]\nid = "listening-python"\nname = "x"\nquery = """\nSELECT 2\n"""\n\n'
        '[[rule]]\nid = "third"\n'
    )
    user_rules = tmp_path / "config" / "rules.d"
    source = FakeSource()
    status = source.rules["listening-python"]
    source.rules["listening-python"] = dataclasses.replace(
        status, rule=dataclasses.replace(status.rule, source_file=str(pack), source_line=5)
    )
    edited: list[list[str]] = []

    def editor(argv: object) -> int:
        assert isinstance(argv, list)
        edited.append(argv)
        return 0

    app = make_app(source, editor=editor, builtin_rules_dir=builtin, override_rules_dir=user_rules)
    monkeypatch.setattr(app, "suspend", contextlib.nullcontext)
    monkeypatch.setenv("EDITOR", "true")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        screen = current(pilot)
        assert isinstance(screen, RulesScreen)
        assert screen.table.select_key("listening-python")
        await pilot.press("o")
        await settle(pilot)
        override = user_rules / "listening-python.override.toml"
        assert edited == [["true", "+5", str(override)]]
        text = override.read_text()
        assert text.startswith("# Overrides the built-in rule 'listening-python' (pack.toml:5)")
        assert 'id = "listening-python"' in text and "SELECT 2" in text
        assert "other" not in text and "third" not in text
        assert pack.read_text().count("[[rule]]") == 3  # the package's file is untouched
        override.write_text("# mine\n")
        await pilot.press("o")
        await settle(pilot)
        assert edited[-1] == ["true", "+1", str(override)]
        assert override.read_text() == "# mine\n"  # an existing override is opened as it is


async def test_query_dot_commands_show_the_catalogue(make_app: AppFactory) -> None:
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        screen = current(pilot)
        assert isinstance(screen, QueryScreen)
        await pilot.press("slash", *".tables", "enter")
        await settle(pilot)
        table = screen.query_one("#results", DataTable)
        assert table.row_count == 2
        assert [str(c.label) for c in table.columns.values()] == ["name", "kind", "columns"]
        await pilot.press(*"\b" * 7)
        screen.query_one("#sql").value = ".schema processes"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await settle(pilot)
        assert table.row_count == 3
        assert "processes" in str(screen.query_one("#query-status").render())
        screen.query_one("#sql").value = ".schema nope"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await settle(pilot)
        assert "no readable table 'nope'" in str(screen.query_one("#query-status").render())
        assert ("query_run", (".tables",)) not in screen.dashboard.source.calls  # type: ignore[attr-defined]


@pytest.mark.parametrize(("width", "beside"), [(120, False), (ProcessesScreen.WIDE_FROM, True)])
async def test_the_detail_pane_opens_beside_only_where_command_keeps_its_room(
    make_app: AppFactory, width: int, beside: bool
) -> None:
    """At 120 columns the pane beside the table left COMMAND a few cells: it opens there only
    on request (d), over the table; from WIDE_FROM columns it sits beside and COMMAND still has
    COMMAND_ROOM cells."""
    async with make_app().run_test(size=(width, 40)) as pilot:
        await settle(pilot)
        screen = processes_screen(pilot.app.screen)
        detail = screen.query_one(ProcessDetail)
        assert detail.display is beside and screen.table.display
        command = dict(
            zip((c.key for c in screen.table.columns), screen.table._widths, strict=True)
        )
        assert command["cmd"] >= COMMAND_ROOM
        if not beside:
            await pilot.press("d")
            await settle(pilot)
            assert detail.display and not screen.table.display


def test_the_detail_width_is_the_stylesheets() -> None:
    """WIDE_FROM is derived from DETAIL_WIDTH: it must be the width processes.tcss gives."""
    from daemoneye.tui.screens import processes

    sheet = (Path(processes.__file__).parent / "processes.tcss").read_text()
    block = sheet.split("#process-detail {", 1)[1].split("}", 1)[0]
    assert f"width: {processes.DETAIL_WIDTH};" in block


async def test_query_editor_takes_multi_line_sql_as_sqlite3_does(make_app: AppFactory) -> None:
    """Enter after an incomplete line starts a new one; Enter after `;` runs the whole text;
    `.tables` runs at once; ↑ recalls the two-line query whole; Esc leaves the editor."""
    async with make_app().run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        screen = current(pilot)
        assert isinstance(screen, QueryScreen)
        source = screen.dashboard.source
        editor = screen.query_one(SqlEditor)
        await pilot.press("slash", *"SELECT pid, name", "enter")
        await settle(pilot)
        assert editor.value == "SELECT pid, name\n"
        assert editor.cursor_location == (1, 0)
        assert "query_run" not in [name for name, _ in source.calls]  # type: ignore[attr-defined]
        await pilot.press(*"FROM live_processes;", "enter")
        await settle(pilot)
        two_lines = "SELECT pid, name\nFROM live_processes;"
        assert source.calls[-1] == ("query_run", (two_lines,))  # type: ignore[attr-defined]
        assert screen.query_one("#results", DataTable).row_count == 17
        assert "17 rows" in str(screen.query_one("#query-status", Static).render())
        assert editor.value == two_lines
        editor.value = ""
        await pilot.press(*".tables", "enter")
        await settle(pilot)
        assert editor.value == ".tables"
        assert source.calls[-1] == ("query_tables", ())  # type: ignore[attr-defined]
        editor.value = ""
        await pilot.press("up")
        assert editor.value == ".tables"
        await pilot.press("up")
        assert editor.value == two_lines
        assert editor.cursor_location[0] == 0
        await pilot.press("down")  # on the first line of two: moves, no history
        assert editor.value == two_lines and editor.cursor_location[0] == 1
        await pilot.press("down")  # on the last line: the newer query
        assert editor.value == ".tables"
        await pilot.press("down")  # past the newest: the draft, empty
        assert editor.value == ""
        await pilot.press("enter")  # blank: neither runs nor adds empty lines
        assert editor.value == ""
        await pilot.press("escape")
        await settle(pilot)
        assert not editor.has_focus
        await pilot.press("2")
        await settle(pilot)
        assert isinstance(current(pilot), AlertsScreen)


async def test_query_editor_takes_a_pasted_statement_without_running_it(
    make_app: AppFactory,
) -> None:
    """A pasted multi-line statement lands whole (its newlines are not Enter); the Enter
    after it runs it, and the editor grows with it up to its bound."""
    async with make_app().run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        screen = current(pilot)
        assert isinstance(screen, QueryScreen)
        await pilot.press("slash")
        editor = screen.query_one(SqlEditor)
        one_line_height = editor.outer_size.height
        sql = "SELECT pid,\n  name\nFROM live_processes\nWHERE pid > 0\nORDER BY pid;"
        pilot.app.post_message(events.Paste(sql))
        await settle(pilot)
        assert editor.value == sql
        assert "query_run" not in [n for n, _ in screen.dashboard.source.calls]  # type: ignore[attr-defined]
        assert editor.outer_size.height == one_line_height + 4
        pilot.app.post_message(events.Paste("\n".join(["-- more"] * 40)))
        await settle(pilot)
        assert editor.outer_size.height == one_line_height + 5  # bounded: then it scrolls
        await pilot.press("ctrl+l")  # clears; the editor keeps the keys
        pilot.app.post_message(events.Paste(sql))
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert screen.dashboard.source.calls[-1] == ("query_run", (sql,))  # type: ignore[attr-defined]
        await pilot.press("ctrl+l")
        pilot.app.post_message(events.Paste("SELECT 1\r\nWHERE x = '\x1b[31m';"))
        await settle(pilot)
        assert editor.value == "SELECT 1\nWHERE x = '\\x1b[31m';"  # shown, never sent raw
