"""`query.tables` from a real daemon: the readable tables and views with their columns."""

from __future__ import annotations

import asyncio

from daemoneye.ipc.client import DaemonClient
from daemoneye.models import TableSchema

from .conftest import DaemonHarness


def test_query_tables_names_what_query_run_may_read(harness: DaemonHarness) -> None:
    harness.start()

    async def ask() -> list[TableSchema]:
        async with DaemonClient(harness.root / "daemoneye.sock", client_name="t") as client:
            return await client.query_tables()

    schemas = {s.name: s for s in asyncio.run(ask())}
    assert {"processes", "live_processes", "process_events", "alerts"} <= set(schemas)
    assert "audit_log" not in schemas
    assert "argv" in [c.name for c in schemas["processes"].columns]
    for name in schemas:  # each one really is readable by query.run
        done = harness.cli("query", f"SELECT * FROM {name} LIMIT 0")
        assert done.returncode == 0, done.stderr
