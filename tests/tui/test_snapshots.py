"""Snapshot tests: every screen and modal at 80x24 and 160x48, every theme, the disconnected
state and hostile process names. SVGs live in the top-level `snapshots/` folder (see
conftest.py); update them with `pytest tests/tui --snapshot-update` and look at each one."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from daemoneye.models import ProcessChange, ProcessesDelta
from daemoneye.tui.multi_source import MultiSource
from daemoneye.tui.screens.processes import ProcessesScreen
from tests.fakes.dashboard_source import (
    FAKE_NOW,
    FakeSource,
    hostile_processes,
    proc,
    sample_alerts,
    starting_status,
)
from tests.tui.conftest import AppFactory
from tests.tui.helpers import settle

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
THEMES = ["daemoneye-dark", "daemoneye-light", "daemoneye-high-contrast"]
SnapCompare = Callable[..., bool]
RunBefore = Callable[[Pilot[Any]], Awaitable[None]]


def with_history(source: FakeSource, then: RunBefore | None = None) -> RunBefore:
    """Feed a minute of the busy process's CPU and RSS so the sparklines have a shape."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        for seq in range(1, 41):
            cpu = 60.0 + 36.0 * ((seq * 7) % 11) / 10.0 if seq % 9 else 12.0
            rss = (300 + (seq * 13) % 40) << 20
            source.push(
                ProcessesDelta(
                    seq,
                    (),
                    (
                        ProcessChange(
                            3100, FAKE_NOW - 300, (("cpu_percent", round(cpu, 1)), ("rss", rss))
                        ),
                    ),
                    (),
                )
            )
            await pilot.pause()
        await settle(pilot)
        if then is not None:
            await then(pilot)
            await settle(pilot)

    return run_before


async def just_settle(pilot: Pilot[Any]) -> None:
    await settle(pilot)


class TestProcessesScreen:
    """The live process table, busiest first, with the detail pane beside it when wide."""

    @pytest.mark.parametrize("size", SIZES)
    def test_list(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        source = FakeSource()
        assert snap_compare(make_app(source), terminal_size=size, run_before=with_history(source))

    @pytest.mark.parametrize("size", SIZES)
    def test_tree(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        assert snap_compare(make_app(), press=["t"], terminal_size=size, run_before=just_settle)

    @pytest.mark.parametrize("size", SIZES)
    def test_filter_with_error(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        async def run_before(pilot: Pilot[Any]) -> None:
            await settle(pilot)
            await pilot.press("slash", *"user:www-data")
            await settle(pilot)
            screen = pilot.app.screen
            assert isinstance(screen, ProcessesScreen)
            screen.query_one("#filter-input").value = "user:www-data rss>1X"  # type: ignore[attr-defined]
            await settle(pilot)

        assert snap_compare(make_app(), terminal_size=size, run_before=run_before)

    @pytest.mark.parametrize("size", SIZES)
    def test_detail_opened(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        """Enter on a narrow terminal shows the detail pane instead of the table."""
        source = FakeSource()

        async def open_detail(pilot: Pilot[Any]) -> None:
            if size[0] < 120:
                await pilot.press("enter")

        assert snap_compare(
            make_app(source), terminal_size=size, run_before=with_history(source, open_detail)
        )

    @pytest.mark.parametrize("size", SIZES)
    def test_new_and_ended(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        source = FakeSource()

        async def run_before(pilot: Pilot[Any]) -> None:
            await settle(pilot)
            source.push(
                ProcessesDelta(
                    1,
                    (
                        proc(
                            5001,
                            2320,
                            "curl",
                            ["curl", "-sO", "http://203.0.113.9/a"],
                            started=0,
                            user="alice",
                            uid=1000,
                            cpu=4.0,
                        ),
                    ),
                    (),
                    (proc(2411, 2320, "vim", started=1200).key,),
                )
            )
            await settle(pilot)

        assert snap_compare(make_app(source), terminal_size=size, run_before=run_before)


class TestAlertsScreen:
    """The alert feed: newest first, severity in colour and words, "xN since T"."""

    @pytest.mark.parametrize("size", SIZES)
    def test_feed(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        assert snap_compare(make_app(), press=["2"], terminal_size=size, run_before=just_settle)

    @pytest.mark.parametrize("size", SIZES)
    def test_all_states_high_and_above(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        press = ["2", "o", "o", "o", "o", "v", "v", "v"]
        assert snap_compare(make_app(), press=press, terminal_size=size, run_before=just_settle)

    @pytest.mark.parametrize("size", SIZES)
    def test_columns_sized_from_content(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        """A time takes its 8 cells, not 20; long rule ids get the room (32 at most)."""
        long_ids = ("reverse-shell-from-web-server", "exec-from-world-writable-dir")
        alerts = [
            dataclasses.replace(alert, rule_id=long_ids[index % 2])
            for index, alert in enumerate(sample_alerts())
        ]
        source = FakeSource(alerts=alerts)
        assert snap_compare(
            make_app(source), press=["2"], terminal_size=size, run_before=just_settle
        )

    @pytest.mark.parametrize("size", SIZES)
    def test_several_hosts(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        """`--host web1 --host db1`: one feed, a HOST column, the header counts the hosts."""
        web = FakeSource()
        db = FakeSource(alerts=[dataclasses.replace(sample_alerts()[1], title="db: psql -c")])
        source: Any = MultiSource({"web1": web, "db1": db})
        assert snap_compare(
            make_app(source), press=["2"], terminal_size=size, run_before=just_settle
        )


class TestRulesScreen:
    """Rules with source file:line, severity, state, hits; load errors on the rule."""

    @pytest.mark.parametrize("size", SIZES)
    def test_rules(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        assert snap_compare(make_app(), press=["3"], terminal_size=size, run_before=just_settle)


class TestQueryScreen:
    """The SQL line, the result table, and errors inline."""

    @pytest.mark.parametrize("size", SIZES)
    def test_results(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        press = ["4", "slash", *"SELECT pid, name FROM live_processes;", "enter"]
        assert snap_compare(make_app(), press=press, terminal_size=size, run_before=just_settle)

    @pytest.mark.parametrize("size", SIZES)
    def test_error(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        press = ["4", "slash", *"SELECT no_such FROM live_processes;", "enter"]
        assert snap_compare(make_app(), press=press, terminal_size=size, run_before=just_settle)


class TestHealthScreen:
    """Uptime, scan times, the daemon's own CPU and RSS, counters and problems."""

    @pytest.mark.parametrize("size", SIZES)
    def test_health(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        assert snap_compare(make_app(), press=["5"], terminal_size=size, run_before=just_settle)

    @pytest.mark.parametrize("size", SIZES)
    def test_startup_evaluation_running(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        """Just after a start: 3 of 12 rules run over history, beside the uptime."""
        app = make_app(FakeSource(status=starting_status()))
        assert snap_compare(app, press=["5"], terminal_size=size, run_before=just_settle)


async def requests_done(pilot: Pilot[Any]) -> None:
    """Settle, and let the screens' requests (timeline pages, the past set) finish."""
    await settle(pilot)
    for _ in range(3):
        busy = [worker for worker in pilot.app.workers if worker.group != "feed"]
        if busy:  # an empty list would mean every worker, the feed too
            await pilot.app.workers.wait_for_complete(busy)
        await settle(pilot)


class TestTimelineScreen:
    """Events newest first under the activity strip (alerts marked, the cursor's bucket lit)."""

    @pytest.mark.parametrize("size", SIZES)
    def test_timeline(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        async def run_before(pilot: Pilot[Any]) -> None:
            await settle(pilot)
            await pilot.press("6")
            await requests_done(pilot)
            await pilot.press("down", "down", "down")
            await requests_done(pilot)

        assert snap_compare(make_app(), terminal_size=size, run_before=run_before)


class TestPastView:
    """The processes as they were at 08:20, under the AS OF banner; no host meters."""

    @pytest.mark.parametrize("size", SIZES)
    def test_past(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        async def run_before(pilot: Pilot[Any]) -> None:
            await settle(pilot)
            await pilot.press("p", *"08:20", "enter")
            await requests_done(pilot)

        assert snap_compare(make_app(), terminal_size=size, run_before=run_before)


class TestHelpScreen:
    """Keys of every screen and the filter language, over the current screen."""

    @pytest.mark.parametrize("size", SIZES)
    def test_help(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        assert snap_compare(
            make_app(), press=["question_mark"], terminal_size=size, run_before=just_settle
        )


class TestSignalScreen:
    """The confirmation before a signal: which process, which signal."""

    @pytest.mark.parametrize("size", SIZES)
    def test_confirm(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        assert snap_compare(make_app(), press=["k"], terminal_size=size, run_before=just_settle)


class TestThemes:
    """The processes screen in every shipped theme; high contrast also under NO_COLOR."""

    @pytest.mark.parametrize("theme", THEMES)
    @pytest.mark.parametrize("size", SIZES)
    def test_theme(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int], theme: str
    ) -> None:
        source = FakeSource()
        assert snap_compare(
            make_app(source, theme=theme), terminal_size=size, run_before=with_history(source)
        )

    @pytest.mark.parametrize("size", SIZES)
    def test_high_contrast_no_color(
        self,
        snap_compare: SnapCompare,
        make_app: AppFactory,
        size: tuple[int, int],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("NO_COLOR", "1")
        assert snap_compare(
            make_app(theme="daemoneye-high-contrast"),
            press=["2"],
            terminal_size=size,
            run_before=just_settle,
        )


class TestDisconnected:
    """The header says the daemon is gone; the last data stays on screen."""

    @pytest.mark.parametrize("size", SIZES)
    def test_disconnected(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        source = FakeSource()

        async def run_before(pilot: Pilot[Any]) -> None:
            await settle(pilot)
            source.disconnect("connection refused: /run/daemoneye/daemoneye.sock", 4.0)
            await settle(pilot)

        assert snap_compare(make_app(source), terminal_size=size, run_before=run_before)


class TestHostileText:
    """Markup, escape sequences, newlines, bidi overrides and a 128 KiB command line, shown
    literally and escaped."""

    @pytest.mark.parametrize("size", SIZES)
    def test_hostile_names(
        self, snap_compare: SnapCompare, make_app: AppFactory, size: tuple[int, int]
    ) -> None:
        # Sorted by pid, the cursor on `[red]x[/red]` so the detail pane shows it too.
        press = ["s", "s", "s", "s", "s", "home", "down"]
        assert snap_compare(
            make_app(FakeSource(hostile_processes())),
            press=press,
            terminal_size=size,
            run_before=just_settle,
        )

    def test_huge_command_line_detail(
        self, snap_compare: SnapCompare, make_app: AppFactory
    ) -> None:
        """The 128 KiB command line, wrapped and capped in the detail pane."""
        assert snap_compare(
            make_app(FakeSource(hostile_processes())),
            terminal_size=(160, 48),
            run_before=just_settle,
        )
