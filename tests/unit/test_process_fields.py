"""The process record is described once (models.py `PROCESS_FIELDS`) and every consumer follows
the description: the store's table and statements, the collector's constructors and change
detection, `processes show` and the detail pane. Each test walks the description, so a field
added to it that some consumer misses fails here, named in the test id."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import apsw
import pytest

from daemoneye.collector import records
from daemoneye.collector.procfs import StatFields
from daemoneye.commands.processes import SHOW_FIELDS
from daemoneye.models import (
    FIELD_GROUPS,
    PROCESS_FIELDS,
    ProcessDetails,
    ProcessKey,
    ProcessRecord,
    RecordField,
    describe_fields,
    field_names,
)
from daemoneye.store import Store, open_readonly
from daemoneye.store.rows import (
    PROCESS_COLUMNS,
    column_types,
    process_row,
    record_from_row,
)
from daemoneye.store.strings import base_column
from daemoneye.tui.logic.detail import LEFT_OUT, PLACED, UNPLACED, field_facts, process_facts
from tests.unit.conftest import DeltaFactory, RecordFactory

ALL_NAMES = tuple(f.name for f in PROCESS_FIELDS)
BY_NAME = {f.name: f for f in PROCESS_FIELDS}


def changed(name: str, value: Any) -> Any:
    """A value of field `name`'s type that differs from `value` (also when it is None)."""
    base = BY_NAME[name].type.removesuffix(" | None")
    if base == "bool":
        return not value
    if base == "int":
        return (value or 0) + 7
    if base == "float":
        return (value or 0.0) + 0.5
    if base == "str":
        return (value or "") + "-changed"
    if base == "tuple[str, ...]":
        return (*value, "changed argument")
    raise AssertionError(f"no changed value for {name}: {base}; extend changed()")


def stored(store: Store) -> dict[ProcessKey, ProcessRecord]:
    """Every row of `processes` (ended or not), read as the CLI and rules read."""
    with open_readonly(store.path) as reader:
        result = reader.query(f"SELECT {', '.join(PROCESS_COLUMNS)} FROM processes")
        return {r.key: r for r in map(record_from_row, result.rows)}


# -- the description ----------------------------------------------------------------------------


def test_every_field_is_described_in_a_known_group() -> None:
    assert [f.name for f in dataclasses.fields(ProcessRecord)] == list(ALL_NAMES)
    assert {f.group for f in PROCESS_FIELDS} == set(FIELD_GROUPS)
    assert field_names("identity") == ("pid", "start_time")


def test_a_field_without_a_description_is_refused() -> None:
    @dataclass(frozen=True)
    class Undescribed:
        pid: int

    with pytest.raises(TypeError, match=r"Undescribed\.pid"):
        describe_fields(Undescribed)


# -- the store ----------------------------------------------------------------------------------


def test_the_processes_table_has_a_column_of_the_right_type_for_every_field(
    store: Store,
) -> None:
    """A field added to the description needs a migration that adds its column: to the base
    table `process_rows` (an id into `strings` for the texts kept once) and the view."""
    expected = [column for f in PROCESS_FIELDS for column in column_types(f)]
    connection = apsw.Connection(str(store.path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        info = list(
            connection.execute(
                "SELECT name, type, \"notnull\" FROM pragma_table_info('process_rows')"
            )
        )
        view_columns = [
            (str(row[0]), str(row[1]))
            for row in connection.execute("SELECT name, type FROM pragma_table_info('processes')")
        ]
    finally:
        connection.close()
    actual = [(str(name), str(kind), bool(notnull)) for name, kind, notnull in info if name != "id"]
    # argv_ref may be NULL: an argv the command line gives by splitting on spaces is derived
    assert actual == [
        (
            base_column("processes", name),
            "INTEGER" if name != base_column("processes", name) else kind,
            notnull and name != "argv",
        )
        for name, kind, notnull in expected
    ]
    # an integer kept in `strings` is read back by CAST, whose declared type SQLite calls INT
    assert view_columns[1:] == [
        (name, "INT" if kind == "INTEGER" and base_column("processes", name) != name else kind)
        for name, kind, _ in expected
    ]
    assert tuple(column for column, _, _ in expected) == PROCESS_COLUMNS


def test_a_row_gives_back_the_record_it_was_made_from(make_record: RecordFactory) -> None:
    record = make_record(
        42,
        5.0,
        ended_at=9.0,
        exit_code=3,
        exe_deleted=True,
        exe_sha256="a" * 64,
        cmdline=("a b", "", "c"),
    )
    assert record_from_row(process_row(record)) == record


@pytest.mark.parametrize("name", field_names("dynamic"))
def test_a_change_of_a_dynamic_field_reaches_the_store(
    name: str, store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """What the collector counts as a change (dynamic_fields) is what the per-tick update
    writes: a cwd, uid, user or gid change used to reach IPC and never the rules."""
    original = make_record(42, 5.0)
    store.apply(make_delta(10.0, added=[original]))
    updated = dataclasses.replace(
        original, last_seen=11.0, **{name: changed(name, getattr(original, name))}
    )
    assert records.dynamic_fields(updated) != records.dynamic_fields(original)
    store.apply(make_delta(11.0, updated=[updated]))
    assert stored(store)[original.key] == updated


@pytest.mark.parametrize(
    "name", [n for n in field_names("details", "dynamic") if n != "exe_sha256"]
)
def test_an_exec_writes_every_detail_and_dynamic_field(
    name: str, store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    original = make_record(42, 5.0, exe_sha256="a" * 64)
    store.apply(make_delta(10.0, added=[original]))
    execed = dataclasses.replace(
        original, last_seen=11.0, **{name: changed(name, getattr(original, name))}
    )
    store.apply(make_delta(11.0, execed=[execed]))
    # the old hash described the old image: cleared until the new one arrives
    assert stored(store)[original.key] == dataclasses.replace(execed, exe_sha256=None)


@pytest.mark.parametrize(
    "name", [n for n in ALL_NAMES if n not in field_names("identity") and n != "first_seen"]
)
def test_a_record_reported_again_refreshes_every_field(
    name: str, store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """After a restart the collector re-adds what the store holds: the upsert takes every
    field but the identity (first_seen keeps the earliest, exe_sha256 the known hash)."""
    original = make_record(42, 5.0)
    store.apply(make_delta(10.0, added=[original]))
    again = dataclasses.replace(original, **{name: changed(name, getattr(original, name))})
    store.apply(make_delta(11.0, added=[again]))
    assert stored(store)[original.key] == again


# -- the collector ------------------------------------------------------------------------------


def test_a_new_record_takes_every_detail_the_reader_filled() -> None:
    stat = StatFields(
        pid=42,
        comm="worker",
        state="R",
        ppid=7,
        kernel_thread=False,
        cpu_ticks=10,
        threads=3,
        start_ticks=500,
        rss_bytes=8192,
    )
    details = ProcessDetails(
        exe="/opt/w",
        exe_deleted=True,
        cmdline=("w", "-x"),
        cwd="/srv",
        uid=1001,
        gid=1002,
        user="bob",
    )
    record = records.new_record(
        stat, details, start_time=5.0, cpu_percent=1.5, first_seen=6.0, now=7.0, exe_sha256="b" * 64
    )
    for detail in dataclasses.fields(ProcessDetails):
        assert getattr(record, detail.name) == getattr(details, detail.name), detail.name
    assert (record.pid, record.ppid, record.state, record.threads, record.rss) == (
        42,
        7,
        "R",
        3,
        8192,
    )
    assert (
        record.start_time,
        record.name,
        record.cpu_percent,
        record.first_seen,
        record.last_seen,
        record.exe_sha256,
    ) == (5.0, "worker", 1.5, 6.0, 7.0, "b" * 64)
    assert (record.ended_at, record.exit_code) == (None, None)
    following = StatFields(42, "worker", "S", 1, False, 20, 4, 500, 4096)
    assert records.with_dynamic(record, following, "renamed", 9.5, 8.0) == dataclasses.replace(
        record,
        ppid=1,
        state="S",
        threads=4,
        rss=4096,
        name="renamed",
        cpu_percent=9.5,
        last_seen=8.0,
    )


def test_an_exec_record_takes_every_detail_and_the_exec_s_identity() -> None:
    details = ProcessDetails(
        exe="/opt/w",
        exe_deleted=True,
        cmdline=("w", "-x"),
        cwd="/srv",
        uid=1001,
        gid=1002,
        user=None,  # the event source leaves the name to the feed
        cgroup="/system.slice/w.service",
        unit="w.service",
        stdin="tty:/dev/pts/1",
        environment='{"LD_PRELOAD":"/tmp/x.so"}',
    )
    record = records.exec_record(ProcessKey(42, 5.0), 7, details, name="w", user="bob", seen=6.0)
    for detail in dataclasses.fields(ProcessDetails):
        if detail.name != "user":
            assert getattr(record, detail.name) == getattr(details, detail.name), detail.name
    assert record == ProcessRecord(
        **{f.name: getattr(details, f.name) for f in dataclasses.fields(ProcessDetails)}
        | {
            "pid": 42,
            "ppid": 7,
            "start_time": 5.0,
            "name": "w",
            "user": "bob",
            "state": "R",
            "threads": 1,
            "rss": 0,
            "cpu_percent": 0.0,
            "exe_sha256": None,
            "first_seen": 6.0,
            "last_seen": 6.0,
        }
    )
    assert (record.ended_at, record.exit_code) == (None, None)


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n not in field_names("dynamic")])
def test_only_dynamic_fields_count_as_a_tick_change(name: str, make_record: RecordFactory) -> None:
    original = make_record(42, 5.0)
    other = dataclasses.replace(original, **{name: changed(name, getattr(original, name))})
    assert records.dynamic_fields(other) == records.dynamic_fields(original)


# -- the views ----------------------------------------------------------------------------------


def test_processes_show_lists_every_field_once() -> None:
    assert sorted(SHOW_FIELDS) == sorted(ALL_NAMES)


def test_the_detail_pane_places_leaves_out_or_lists_every_field() -> None:
    assert PLACED.isdisjoint(LEFT_OUT)
    assert set(ALL_NAMES) >= PLACED | LEFT_OUT, "a placed field is no longer in the record"
    assert {f.name for f in UNPLACED} == set(ALL_NAMES) - PLACED - LEFT_OUT


def test_a_field_the_pane_does_not_place_is_listed_escaped(make_record: RecordFactory) -> None:
    hostile = make_record(42, 5.0, cwd="/tmp/\x1b[2J\nuid 0", uid=None)
    facts = field_facts(hostile, [BY_NAME["cwd"], BY_NAME["uid"], BY_NAME["rss"]], 100.0)
    assert [label for label, _, _ in facts] == ["cwd", "uid", "rss"]
    cwd_text = facts[0][1]
    assert "\x1b" not in cwd_text and "\n" not in cwd_text and "uid 0" in cwd_text
    assert facts[1][1:] == ("unknown", "dim")
    assert facts[2][1] == "4.0K"


def test_the_pane_shows_no_generic_lines_for_todays_record(make_record: RecordFactory) -> None:
    labels = [label for label, _, _ in process_facts(make_record(42, 5.0), "", [], [], 100.0)]
    assert labels == [
        "process",
        "exe",
        "sha256",
        "cwd",
        "user",
        "started",
        "usage",
        "ancestry",
        "children",
        "command",
    ], "a new field gets a generic line: place it in tui/logic/detail.py or leave it out"


def test_record_field_helpers() -> None:
    cmdline: RecordField = BY_NAME["cmdline"]
    assert cmdline.columns == ("cmdline", "argv") and cmdline.hostile
    assert BY_NAME["exe"].optional and not BY_NAME["pid"].optional
    assert BY_NAME["rss"].unit == "bytes"
