"""The dashboard and connections: the detail pane lists the selected process's sockets, and the
process filter's `port:`/`remote:` terms show the processes that hold such a connection."""

from __future__ import annotations

import dataclasses

import pytest

from daemoneye.models import Connection, ProcessKey
from daemoneye.tui.logic.detail import MAX_CONNECTIONS, connection_facts
from daemoneye.tui.logic.keys import parse_row_key, row_key
from daemoneye.tui.screens.processes import ProcessesScreen
from daemoneye.tui.widgets.filter_bar import FilterBar
from daemoneye.tui.widgets.process_detail import ProcessDetail
from tests.fakes.dashboard_source import FAKE_NOW, FakeSource
from tests.tui.conftest import AppFactory
from tests.tui.helpers import settle

pytestmark = pytest.mark.anyio
PYTHON3 = ProcessKey(2590, FAKE_NOW - 600)

OUTBOUND = Connection(
    pid=PYTHON3.pid,
    start_time=PYTHON3.start_time,
    protocol="tcp",
    local_address="10.0.0.5",
    local_port=41000,
    remote_address="203.0.113.9",
    remote_port=4444,
    state="ESTABLISHED",
    inode=9001,
    netns=1,
    direction="outbound",
    remote_scope="public",
    first_seen=FAKE_NOW - 30,
    last_seen=FAKE_NOW - 30,
)
HOSTILE_UNIX = dataclasses.replace(
    OUTBOUND,
    protocol="unix",
    local_address="/tmp/\x1b[2J[red]x[/red]\nsock",
    local_port=None,
    remote_address=None,
    remote_port=None,
    state="LISTEN",
    inode=9002,
    direction="listen",
    remote_scope=None,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_facts_list_listeners_first_escape_paths_and_cap() -> None:
    facts = connection_facts([OUTBOUND, HOSTILE_UNIX])
    assert facts[1] == ("tcp", "10.0.0.5:41000 → 203.0.113.9:4444  ESTABLISHED  outbound", "high")
    label, text, _tone = facts[0]  # listening sockets first
    assert label == "unix" and "\x1b" not in text and "\n" not in text
    assert "\\x1b[2J[red]x[/red]\\nsock" in text
    many = [dataclasses.replace(OUTBOUND, inode=i, local_port=i) for i in range(40)]
    capped = connection_facts(many)
    assert len(capped) == MAX_CONNECTIONS + 1 and capped[-1][1] == "+28 more sockets"
    assert connection_facts([]) == []


async def test_detail_pane_shows_the_selected_process_sockets(make_app: AppFactory) -> None:
    source = FakeSource(connections=[OUTBOUND, HOSTILE_UNIX])
    async with make_app(source).run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, ProcessesScreen)
        assert screen.table.select_key(row_key(PYTHON3))
        await settle(pilot, rounds=8)
        lines = screen.query_one(ProcessDetail).plain_lines
        text = "\n".join(lines)
        assert "10.0.0.5:41000 → 203.0.113.9:4444  ESTABLISHED" in text
        assert "\\x1b[2J[red]x[/red]\\nsock" in text and "\x1b" not in text
        assert "pid:2590" in source.connection_queries
        # another process holds nothing: no socket lines
        other = next(k for k in screen.table.shown_keys if parse_row_key(k) != PYTHON3)
        assert screen.table.select_key(other)
        await settle(pilot, rounds=8)
        assert "203.0.113.9" not in "\n".join(screen.query_one(ProcessDetail).plain_lines)


async def test_port_and_remote_filter_terms_show_the_holders(make_app: AppFactory) -> None:
    source = FakeSource(connections=[OUTBOUND])
    async with make_app(source).run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, ProcessesScreen)
        await pilot.press("slash", *"port:4444")
        await settle(pilot, rounds=8)
        assert [parse_row_key(k) for k in screen.table.shown_keys] == [PYTHON3]
        assert "" in source.connection_queries
        bar = screen.query_one(FilterBar)
        bar.input.value = "remote:203.0.113.0/24"
        await settle(pilot, rounds=8)
        assert [parse_row_key(k) for k in screen.table.shown_keys] == [PYTHON3]
        bar.input.value = "not:remote:public"
        await settle(pilot, rounds=8)
        assert PYTHON3 not in [parse_row_key(k) for k in screen.table.shown_keys]
        assert len(screen.table.shown_keys) == 16
