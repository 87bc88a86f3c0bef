"""Conversion between the shared records (models.py) and store rows.

Text read from a process (name, argv, exe, cwd, user) is hostile: it may carry lone surrogates
(undecodable bytes kept with `surrogateescape`) that SQLite cannot store as UTF-8. One such
process must not make the whole tick fail, so those characters are stored backslash-escaped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from daemoneye.models import ProcessEvent, ProcessRecord

# Column order shared by the writer's INSERT, the readers' SELECTs and `record_from_row`.
PROCESS_COLUMNS: tuple[str, ...] = (
    "pid",
    "ppid",
    "start_time",
    "name",
    "exe",
    "cmdline",
    "argv",
    "cwd",
    "uid",
    "user",
    "gid",
    "state",
    "threads",
    "rss",
    "cpu_percent",
    "exe_sha256",
    "exe_deleted",
    "first_seen",
    "last_seen",
    "ended_at",
    "exit_code",
)

ProcessRow = tuple[
    int,
    int,
    float,
    str,
    str | None,
    str,
    str,
    str | None,
    int | None,
    str | None,
    int | None,
    str,
    int,
    int,
    float,
    str | None,
    int,
    float,
    float,
    float | None,
    int | None,
]


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


def process_row(record: ProcessRecord, argv_of: ArgvFields = argv_fields) -> ProcessRow:
    """The row for `record`, in PROCESS_COLUMNS order."""
    cmdline, argv = argv_of(record.cmdline)
    return (
        record.pid,
        record.ppid,
        record.start_time,
        safe_text(record.name),
        safe_optional(record.exe),
        cmdline,
        argv,
        safe_optional(record.cwd),
        record.uid,
        safe_optional(record.user),
        record.gid,
        record.state,
        record.threads,
        record.rss,
        record.cpu_percent,
        record.exe_sha256,
        int(record.exe_deleted),
        record.first_seen,
        record.last_seen,
        record.ended_at,
        record.exit_code,
    )


def record_from_row(row: Sequence[object]) -> ProcessRecord:
    """Rebuild a ProcessRecord from a row selected in PROCESS_COLUMNS order."""
    values = dict(zip(PROCESS_COLUMNS, row, strict=True))
    argv = json.loads(str(values.pop("argv")))
    values.pop("cmdline")
    values["exe_deleted"] = bool(values["exe_deleted"])
    return ProcessRecord(cmdline=tuple(str(arg) for arg in argv), **values)  # type: ignore[arg-type]


def event_row(
    event: ProcessEvent, argv_of: ArgvFields = argv_fields
) -> tuple[
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
]:
    """The process_events row for `event` (id assigned by SQLite)."""
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
    )
