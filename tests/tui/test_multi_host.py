"""Several hosts in one dashboard (`daemoneye --host a --host b`): the Alerts screen merges
every host's alerts with a HOST column and a host filter, ack goes to the host that raised the
alert, `h` moves the other screens to the next host, and a host that drops out is marked."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from daemoneye.models import Hello
from daemoneye.tui.multi_source import MultiSource
from daemoneye.tui.screens.alerts import AlertsScreen
from daemoneye.tui.screens.processes import ProcessesScreen
from tests.fakes.dashboard_source import FakeSource, proc, sample_alerts, sample_hello
from tests.tui.conftest import AppFactory
from tests.tui.helpers import current, dashboard, settle


def _hello(host: str) -> Hello:
    return dataclasses.replace(sample_hello(), host=host)


def _two_hosts() -> tuple[FakeSource, FakeSource, Any]:  # Any: make_app takes a FakeSource
    web = FakeSource(hello=_hello("web-01"))
    db = FakeSource(
        processes=[
            proc(1, 0, "systemd", ["/sbin/init"], started=86400.0),
            proc(777, 1, "postgres", ["postgres"], started=90000.0),
        ],
        alerts=[dataclasses.replace(sample_alerts()[0], id=7, title="db alert seven")],
        hello=_hello("db-01"),
    )
    return web, db, MultiSource({"web": web, "db": db})


@pytest.mark.anyio
async def test_alerts_of_every_host_are_merged_with_a_host_column(make_app: AppFactory) -> None:
    web, db, source = _two_hosts()
    async with make_app(source).run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        screen = current(pilot)
        assert isinstance(screen, AlertsScreen)
        keys = set(dashboard(pilot).alerts)
        # web's alert 7 and db's alert 7 are two alerts, not one
        assert {"web/7", "db/7"} <= keys
        assert len(keys) == len(web.alerts) + len(db.alerts)
        cells = screen.table.cells_of("db/7")
        assert cells is not None and cells[0].text == "db"
        # h: only db's alerts; again: only web's (labels sorted); again: all
        await pilot.press("h")
        await settle(pilot)
        assert set(screen.table.shown_keys) == {"db/7"}
        await pilot.press("h")
        await settle(pilot)
        assert {key.split("/")[0] for key in screen.table.shown_keys} == {"web"}
        await pilot.press("h")
        await settle(pilot)
        assert "db/7" in set(screen.table.shown_keys)


@pytest.mark.anyio
async def test_ack_goes_to_the_host_that_raised_the_alert(make_app: AppFactory) -> None:
    web, db, source = _two_hosts()
    async with make_app(source).run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        screen = current(pilot)
        assert isinstance(screen, AlertsScreen)
        await pilot.press("h")  # db only: its one alert is selected
        await settle(pilot)
        assert screen.table.cursor_key == "db/7"
        await pilot.press("a")
        await settle(pilot)
        assert db.calls == [("alert_acknowledged", (7,))]
        assert web.calls == []
        assert dashboard(pilot).alerts["db/7"].state == "acknowledged"
        assert dashboard(pilot).alerts["web/7"].state != "acknowledged"


@pytest.mark.anyio
async def test_h_moves_the_processes_screen_to_the_next_host(make_app: AppFactory) -> None:
    _web, _db, source = _two_hosts()
    async with make_app(source).run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        screen = current(pilot)
        assert isinstance(screen, ProcessesScreen)
        assert dashboard(pilot).connection.current_host == "web"
        pids = {int(key.split(":")[0]) for key in screen.table.shown_keys}
        assert 777 not in pids
        await pilot.press("h")
        await settle(pilot, rounds=8)
        assert dashboard(pilot).connection.current_host == "db"
        assert dashboard(pilot).connection.host == "db-01"
        pids = {int(key.split(":")[0]) for key in screen.table.shown_keys}
        assert 777 in pids
        header = "".join(text for text, _ in dashboard(pilot).header_parts)
        assert header.startswith("db (db-01)")
        assert "hosts 2/2" in header


@pytest.mark.anyio
async def test_a_host_that_drops_out_is_marked_not_fatal(make_app: AppFactory) -> None:
    _web, db, source = _two_hosts()
    async with make_app(source).run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        db.disconnect("ssh: connection reset")
        await settle(pilot)
        app = dashboard(pilot)
        assert app.connection.connected, "the current host (web) is still up"
        header = "".join(text for text, _ in app.header_parts)
        assert "hosts 1/2" in header and "db down" in header
        db.reconnect()
        await settle(pilot)
        header = "".join(text for text, _ in dashboard(pilot).header_parts)
        assert "hosts 2/2" in header and "down" not in header


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
