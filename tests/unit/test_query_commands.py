"""The query screen's `.tables` and `.schema [TABLE]`: the catalogue of what SQL may read."""

from __future__ import annotations

import pytest

from daemoneye.models import TableColumn, TableSchema
from daemoneye.store import Store
from daemoneye.store.catalogue import readable_schema
from daemoneye.store.readonly import open_readonly
from daemoneye.tui.logic.query_commands import DotCommand, DotCommandError, answer, parse_dot

SCHEMAS = (
    TableSchema("alerts", "table", (TableColumn("id", "INTEGER"),)),
    TableSchema("processes", "table", (TableColumn("pid", "INTEGER"), TableColumn("name", "TEXT"))),
)


def test_the_catalogue_lists_what_the_sandbox_reads_and_nothing_else(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "d.db"
    with Store.open(path):
        pass
    with open_readonly(path) as store:
        schemas = {s.name: s for s in readable_schema(store)}
    assert {"processes", "live_processes", "all_processes", "process_events", "alerts"} <= set(
        schemas
    )
    assert not {"audit_log", "meta", "sink_outbox", "json_each"} & set(schemas)
    processes = [c.name for c in schemas["processes"].columns]
    assert processes[:3] == ["id", "pid", "ppid"] and "cpu_percent" in processes
    assert schemas["live_processes"].kind == "view" and schemas["processes"].kind == "view"
    assert [c.name for c in schemas["all_processes"].columns] == processes


def test_parse() -> None:
    assert parse_dot(".tables") == DotCommand(".tables")
    assert parse_dot("  .schema processes; ") == DotCommand(".schema", "processes")
    assert parse_dot(".schema") == DotCommand(".schema")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (".tabels", "did you mean .tables"),
        (".drop x", "unknown command"),
        (".tables x", "no argument"),
        (".schema a b", "at most one"),
    ],
)
def test_parse_errors(text: str, said: str) -> None:
    with pytest.raises(DotCommandError, match=said):
        parse_dot(text)


def test_answers() -> None:
    assert answer(DotCommand(".tables"), SCHEMAS) == (
        ("name", "kind", "columns"),
        [("alerts", "table", 1), ("processes", "table", 2)],
    )
    _, rows = answer(DotCommand(".schema", "processes"), SCHEMAS)
    assert rows == [("processes", "pid", "INTEGER"), ("processes", "name", "TEXT")]
    assert len(answer(DotCommand(".schema"), SCHEMAS)[1]) == 3
    with pytest.raises(DotCommandError, match=r"did you mean processes\?"):
        answer(DotCommand(".schema", "processs"), SCHEMAS)
