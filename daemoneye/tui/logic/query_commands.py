"""The query screen's dot commands, as sqlite3's shell has them: `.tables` lists what SQL
may read, `.schema [TABLE]` its columns. Pure: the screen fetches the catalogue (IPC
`query.tables`) and shows what these return as a result table."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from daemoneye.models import TableSchema

COMMANDS = (".tables", ".schema")
HELP = ".tables lists the readable tables and views; .schema [TABLE] shows their columns"


class DotCommandError(ValueError):
    """An unknown dot command or table; the message says what there is."""


@dataclass(frozen=True, slots=True)
class DotCommand:
    name: str  # ".tables" or ".schema"
    table: str | None = None


def is_dot_command(text: str) -> bool:
    return text.lstrip().startswith(".")


def parse_dot(text: str) -> DotCommand:
    """`.tables`, `.schema` or `.schema TABLE` (a trailing `;` is allowed, as in sqlite3)."""
    words = text.strip().rstrip(";").split()
    if not words or words[0] not in COMMANDS:
        close = difflib.get_close_matches(words[0] if words else "", COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise DotCommandError(f"unknown command {(words or [''])[0]!r}{hint}; {HELP}")
    if words[0] == ".tables":
        if len(words) > 1:
            raise DotCommandError(".tables takes no argument")
        return DotCommand(".tables")
    if len(words) > 2:
        raise DotCommandError(".schema takes at most one table name")
    return DotCommand(".schema", words[1] if len(words) == 2 else None)


def answer(
    command: DotCommand, schemas: Sequence[TableSchema]
) -> tuple[tuple[str, ...], list[tuple[str | int, ...]]]:
    """The result table (columns, rows) of `command` over the catalogue."""
    if command.name == ".tables":
        return ("name", "kind", "columns"), [(s.name, s.kind, len(s.columns)) for s in schemas]
    chosen = list(schemas)
    if command.table is not None:
        chosen = [s for s in schemas if s.name == command.table]
        if not chosen:
            names = [s.name for s in schemas]
            close = difflib.get_close_matches(command.table, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise DotCommandError(
                f"no readable table {command.table!r}{hint}; readable: {', '.join(names)}"
            )
    rows: list[tuple[str | int, ...]] = [
        (s.name, column.name, column.type) for s in chosen for column in s.columns
    ]
    return ("table", "column", "type"), rows
