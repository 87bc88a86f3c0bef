"""Conversion between the shared records (models.py) and store rows.

Text read from a process (the fields models.py marks hostile: name, argv, exe, cwd, user) is
hostile: it may carry lone surrogates
(undecodable bytes kept with `surrogateescape`) that SQLite cannot store as UTF-8. One such
process must not make the whole tick fail, so those characters are stored backslash-escaped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from operator import attrgetter, itemgetter
from typing import Any

from daemoneye.models import PROCESS_FIELDS, ProcessEvent, ProcessRecord, RecordField
from daemoneye.positional import constructor


def safe_text(value: str) -> str:
    """`value` unchanged when it is valid Unicode; lone surrogates become `\\udcxx` text."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def safe_optional(value: str | None) -> str | None:
    return None if value is None else safe_text(value)


def argv_fields(argv: Sequence[str]) -> tuple[str, str]:
    """(cmdline, argv JSON): argv joined by single spaces for humans and LIKE, and the exact
    list as compact JSON for rules that need argument boundaries."""
    clean = [safe_text(arg) for arg in argv]
    return " ".join(clean), json.dumps(clean, ensure_ascii=False, separators=(",", ":"))


ArgvFields = Callable[[tuple[str, ...]], tuple[str, str]]


class ArgvCache:
    """`argv_fields` computed once per distinct command line, for one write. An exec is written
    as a process row and an event row with the same command line, and a storm of one program
    repeats it thousands of times: the JSON encoding is the dearest part of building a row."""

    def __init__(self) -> None:
        self._fields_by_argv: dict[tuple[str, ...], tuple[str, str]] = {}

    def __call__(self, argv: tuple[str, ...]) -> tuple[str, str]:
        fields = self._fields_by_argv.get(argv)
        if fields is None:
            fields = self._fields_by_argv[argv] = argv_fields(argv)
        return fields


SQLValue = int | float | str | None
ProcessRow = tuple[SQLValue, ...]

# The SQL type of a column by the Python type of its field (ProcessRecord's annotations); a
# `tuple[str, ...]` field is an argument list, stored as two TEXT columns (see argv_fields).
_SQL_TYPES = {
    "int": "INTEGER",
    "bool": "INTEGER",
    "float": "REAL",
    "str": "TEXT",
    "tuple[str, ...]": "TEXT",
}


def column_types(record_field: RecordField) -> tuple[tuple[str, str, bool], ...]:
    """(column, SQL type, NOT NULL) of each `processes` column holding `record_field`."""
    base = record_field.type.removesuffix(" | None")
    sql_type = _SQL_TYPES.get(base)
    if sql_type is None:
        raise TypeError(f"ProcessRecord.{record_field.name}: no SQL type for {base!r}")
    return tuple((column, sql_type, not record_field.optional) for column in record_field.columns)


FIELDS_BY_NAME: dict[str, RecordField] = {f.name: f for f in PROCESS_FIELDS}


class RowPlan:
    """Turns records into statement parameters for a chosen list of fields, computed once per
    statement at import: `columns` are the columns in parameter order (an argument list gives
    two), and calling the plan gives the parameters for one record. Hostile text is made
    storable (`safe_text`), booleans become 0/1."""

    def __init__(self, names: Sequence[str]) -> None:
        described = [FIELDS_BY_NAME[name] for name in names]
        for record_field in described:
            column_types(record_field)  # every field has an SQL type, or fail at import
        self.names = tuple(names)
        self.columns: tuple[str, ...] = tuple(column for f in described for column in f.columns)
        self._values = (
            attrgetter(*self.names)
            if len(self.names) > 1
            else (lambda record: (getattr(record, self.names[0]),))
        )
        self._text = tuple(
            i for i, f in enumerate(described) if f.hostile and f.type.startswith("str")
        )
        self._bools = tuple(i for i, f in enumerate(described) if f.type == "bool")
        # last first, so that splicing two columns in does not move the ones still to do
        self._argv = tuple(
            reversed([i for i, f in enumerate(described) if f.type == "tuple[str, ...]"])
        )

    def __call__(self, record: ProcessRecord, argv_of: ArgvFields = argv_fields) -> ProcessRow:
        values: list[Any] = list(self._values(record))
        for index in self._text:
            text = values[index]
            if text is not None and not text.isascii():
                values[index] = safe_text(text)
        for index in self._bools:
            values[index] = int(values[index])
        for index in self._argv:
            values[index : index + 1] = argv_of(values[index])
        return tuple(values)


# Every field, in record order: the writer's INSERT, the readers' SELECTs, `record_from_row`.
PROCESS_ROW = RowPlan([f.name for f in PROCESS_FIELDS])
PROCESS_COLUMNS: tuple[str, ...] = PROCESS_ROW.columns


def process_row(record: ProcessRecord, argv_of: ArgvFields = argv_fields) -> ProcessRow:
    """The row for `record`, in PROCESS_COLUMNS order."""
    return PROCESS_ROW(record, argv_of)


def _reader() -> Callable[[Sequence[Any]], ProcessRecord]:
    """`record_from_row`, planned once from the description: where each field's value sits in
    a PROCESS_COLUMNS row and what it needs to become a record value again."""
    bools, argvs, picks = [], [], []
    position = 0
    for index, record_field in enumerate(PROCESS_FIELDS):
        picks.append(position)
        if record_field.type == "bool":
            bools.append(index)
        elif record_field.type == "tuple[str, ...]":
            argvs.append(index)
            position += 1  # the joined text column is for SQL; the JSON one is exact
        position += 1
    for index in argvs:
        picks[index] += 1
    pick = itemgetter(*picks)
    make = constructor(ProcessRecord)

    def record_from_row(row: Sequence[Any]) -> ProcessRecord:
        if len(row) != len(PROCESS_COLUMNS):
            raise ValueError(f"a processes row has {len(PROCESS_COLUMNS)} columns, not {len(row)}")
        values = list(pick(row))
        for index in bools:
            values[index] = bool(values[index])
        for index in argvs:
            values[index] = tuple(str(arg) for arg in json.loads(str(values[index])))
        return make(values)

    return record_from_row


record_from_row = _reader()
record_from_row.__doc__ = "Rebuild a ProcessRecord from a row selected in PROCESS_COLUMNS order."


# The process_events columns an event fills, in `event_row` order (id is SQLite's).
EVENT_COLUMNS = (
    "ts",
    "kind",
    "pid",
    "start_time",
    "ppid",
    "exe",
    "cmdline",
    "argv",
    "exit_code",
    "source",
    "partial",
    "old_value",
    "new_value",
    "exe_setid",
)
INSERT_EVENT = (
    f"INSERT INTO process_events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)

EventRow = tuple[
    float,
    str,
    int,
    float,
    int | None,
    str | None,
    str | None,
    str | None,
    int | None,
    str,
    int,
    str | None,
    str | None,
    int | None,
]


def event_row(event: ProcessEvent, argv_of: ArgvFields = argv_fields) -> EventRow:
    """The process_events row for `event` (id assigned by SQLite), in EVENT_COLUMNS order.
    The old and new values of a change are process text (a name, a path): hostile."""
    cmdline: str | None = None
    argv: str | None = None
    if event.cmdline is not None:
        cmdline, argv = argv_of(event.cmdline)
    return (
        event.ts,
        event.kind,
        event.pid,
        event.start_time,
        event.ppid,
        safe_optional(event.exe),
        cmdline,
        argv,
        event.exit_code,
        event.source,
        int(event.partial),
        safe_optional(event.old_value),
        safe_optional(event.new_value),
        None if event.exe_setid is None else int(event.exe_setid),
    )
