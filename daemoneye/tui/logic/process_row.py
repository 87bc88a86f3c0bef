"""One row of the process table as cells: the columns, and how a record, its state (new,
ended, alerted) and its tree guide become literal, printable cells."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from daemoneye.models import ProcessRecord
from daemoneye.tui.logic.cells import Cell
from daemoneye.tui.logic.detail import container_text
from daemoneye.tui.logic.format import (
    cmd_cell,
    format_bytes,
    format_percent,
    format_started,
    safe_cell,
)
from daemoneye.tui.logic.glyphs import TIMES
from daemoneye.tui.logic.severity import tone


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int  # 0: as wide as the content
    right: bool = False


NAME_WIDTH = 15
PROCESS_COLUMNS: tuple[Column, ...] = (
    Column("mark", " ", 1),
    Column("pid", "PID", 7, right=True),
    Column("user", "USER", 8),
    Column("cpu", "CPU%", 5, right=True),
    Column("rss", "RSS", 7, right=True),
    Column("started", "STARTED", 8),
    Column("name", "NAME", NAME_WIDTH),
    Column("cmd", "COMMAND", 0),
)
# The CONTAINER column (the C key) sits before NAME when shown.
CONTAINER_WIDTH = 19  # "containerd 3f2a9c1b7d20"'s runtime and 12-character id, cut
CONTAINER_COLUMN = Column("container", "CONTAINER", CONTAINER_WIDTH)
_NAME_INDEX = next(i for i, c in enumerate(PROCESS_COLUMNS) if c.key == "name")


def process_columns(show_container: bool) -> tuple[Column, ...]:
    """The process table's columns, with or without CONTAINER."""
    if not show_container:
        return PROCESS_COLUMNS
    return (*PROCESS_COLUMNS[:_NAME_INDEX], CONTAINER_COLUMN, *PROCESS_COLUMNS[_NAME_INDEX:])


def with_container(row: tuple[Cell, ...], record: ProcessRecord, status: str) -> tuple[Cell, ...]:
    """`row` (process_cells) with the CONTAINER cell before NAME: the runtime and short id,
    "host" when the process is in no container, "?" when its cgroup was not read."""
    text = container_text(record)
    if not text:
        cell = Cell("?" if record.cgroup is None else "host", status or "dim")
    else:
        cell = Cell(safe_cell(text, CONTAINER_WIDTH), status)
    return (*row[:_NAME_INDEX], cell, *row[_NAME_INDEX:])


# On a narrow terminal the command line is what a responder reads: these columns give way,
# in this order and down to these widths, until COMMAND has COMMAND_ROOM cells. PID, CPU% and
# STARTED keep theirs (a cut number misleads).
COMMAND_ROOM = 28
GIVE_WAY = (("container", 12), ("name", 8), ("user", 6), ("rss", 6))


def table_width_for_command(padding: int, columns: tuple[Column, ...] = PROCESS_COLUMNS) -> int:
    """The narrowest the process table may be and still give COMMAND its COMMAND_ROOM cells,
    once every column in GIVE_WAY has given way (`padding` blank cells each side of a column)."""
    narrowest = dict(GIVE_WAY)
    fixed = sum(narrowest.get(c.key, c.width) for c in columns if c.width)
    return fixed + COMMAND_ROOM + 2 * padding * len(columns)


def process_column_widths(
    room: int, columns: tuple[Column, ...] = PROCESS_COLUMNS
) -> tuple[int, ...]:
    """Each of `columns`' width for `room` cells of content; COMMAND (0) takes what is left."""
    widths = {column.key: column.width for column in columns}
    for key, narrowest in GIVE_WAY:
        if key not in widths:
            continue
        short = COMMAND_ROOM - (room - sum(widths.values()))
        if short <= 0:
            break
        widths[key] = max(narrowest, widths[key] - short)
    return tuple(widths[column.key] for column in columns)


def plain_cells(record: ProcessRecord, now: float) -> tuple[Cell, ...]:
    """pid, user, cpu, rss, started, name, command without any tone."""
    user = (
        record.user
        if record.user is not None
        else (str(record.uid) if record.uid is not None else "?")
    )
    return (
        Cell(str(record.pid), right=True),
        Cell(safe_cell(user, 8)),
        Cell(format_percent(record.cpu_percent), right=True),
        Cell(format_bytes(record.rss), right=True),
        Cell(format_started(record.start_time, now)),
        Cell(safe_cell(record.name, NAME_WIDTH)),
        Cell(cmd_cell(record), "" if record.cmdline else "dim"),
    )


def process_cells(
    record: ProcessRecord, status: str, guide: str, severity: str, plain: tuple[Cell, ...]
) -> tuple[Cell, ...]:
    """One process row. A 1-character mark carries the state in text as well as colour:
    TIMES ended, "!" has an open alert, "+" new."""
    if status == "ended":
        mark = Cell(TIMES, "ended")
    elif severity:
        mark = Cell("!", tone(severity))
    elif status == "new":
        mark = Cell("+", "new")
    else:
        mark = _BLANK
    if not (guide or status):  # the usual row
        return (mark, *plain)
    cells = list(plain)
    if guide:
        guide = _fitted_guide(guide)
        cells[5] = Cell(guide + _short_name(record.name, NAME_WIDTH - len(guide)))
    if status:  # "new" or "ended" tones the whole row
        cells = [cell._replace(tone=status) for cell in cells]
    return (mark, *cells)


_BLANK = Cell(" ")


@lru_cache(maxsize=8192)
def _short_name(name: str, width: int) -> str:
    """`safe_cell` of a name beside a tree guide: names repeat, and the tree needs thousands."""
    return safe_cell(name, width)


MIN_NAME_CHARS = 6  # of a name beside a tree guide, however deep the process sits


def _fitted_guide(guide: str) -> str:
    """A guide that leaves the name room: deep in a tree its outer levels give way to "…"
    (the last levels, the branch to this process, stay)."""
    room = NAME_WIDTH - MIN_NAME_CHARS
    return guide if len(guide) <= room else "…" + guide[len(guide) - room + 1 :]
