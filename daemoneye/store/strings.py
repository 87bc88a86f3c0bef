"""Strings stored once (schema v7): every value a busy host repeats (name, exe path, command
line, argv, working directory, user, hash, cgroup, unit, namespaces, stdio, environment) lives
in `strings` and rows refer to it by id; an event's kind and source are small codes.
`processes` and `process_events` are views that put the values back, so rules and `query` read
the same columns as ever; the writer writes the base tables (`process_rows`, `event_rows`)
with ids and codes, which it finds here.

A busy host runs the same few hundred programs over and over: a week of 2 new processes a
second repeats the same exe, cwd and command lines hundreds of thousands of times, and each was
stored up to four times per instance before (cmdline and argv in the row and in its event).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import apsw

from daemoneye.store.schema_v7 import (
    V7_BASE_TABLES,
    V7_CODED,
    V7_INTERNED,
    v7_count_refs,
    v7_lookup,
)

# Which columns of each view are kept in `strings` (the base table calls them `<name>_ref`),
# as the newest migration laid them out.
INTERNED_COLUMNS = {view: frozenset(columns) for view, columns in V7_INTERNED.items()}
BASE_TABLES = V7_BASE_TABLES
# Columns kept as the index of their value in a fixed vocabulary (an event's kind and source).
CODES = {column: {value: code for code, value in enumerate(vocabulary)}
         for column, vocabulary in V7_CODED.items()}  # fmt: skip

_LOOKUP = f"SELECT {v7_lookup('?1')}"
# The base tables have no insert trigger that counts references (one per row is the dearest
# part of a write): the writer counts the rows it added, by id, in one statement per table.
COUNT_ADDED = {view: v7_count_refs(view, "id > ?1") for view in BASE_TABLES}
LAST_ID = {view: f"SELECT coalesce(max(id), 0) FROM {base}" for view, base in BASE_TABLES.items()}
_INSERT = "INSERT INTO strings (text) VALUES (?)"
# A tick's texts not in the cache are looked up, and the missing ones added, in one statement
# each (a JSON array of them), not in two round trips per text.
_FIND_MANY = f"SELECT j.key, {v7_lookup('j.value')} FROM json_each(?1) AS j"
_ADD_MANY = "INSERT INTO strings (text) SELECT j.value FROM json_each(?1) AS j RETURNING text, id"
_UNUSED_BATCH = 5_000
# No index on refs: keeping one current costs every write, and this runs only in retention,
# where one pass over the counts (one small row per distinct string) is cheap.
_DROP_UNUSED = (
    "DELETE FROM strings WHERE id IN "
    f"(SELECT id FROM string_refs WHERE refs <= 0 LIMIT {_UNUSED_BATCH})"
)

# The cache never holds long strings (a 2 MiB argv is looked up in SQL, by index) nor more
# than this many characters in all, so a flood of distinct huge command lines cannot grow it.
MAX_CACHED_TEXT = 4096
MAX_CACHED_CHARS = 16 * 1024 * 1024


def base_column(view: str, column: str) -> str:
    """The base table's name for a view column (`exe` → `exe_ref` where it is interned)."""
    return f"{column}_ref" if column in INTERNED_COLUMNS[view] else column


@dataclass(frozen=True, slots=True)
class TextPlan:
    """Where in a statement's parameters the texts to intern are, where its command line
    and argv JSON are (an argv that splitting the command line on spaces gives is not stored:
    the view derives it), and which are coded (position, code of each value)."""

    positions: tuple[int, ...]
    argv_pair: tuple[int, int] | None = None
    coded: tuple[tuple[int, dict[str, int]], ...] = ()


def interned_positions(view: str, columns: Sequence[str]) -> TextPlan:
    """The TextPlan of a parameter list of `columns`."""
    positions = tuple(i for i, column in enumerate(columns) if column in INTERNED_COLUMNS[view])
    pair = None
    if "cmdline" in columns and "argv" in columns:
        pair = (list(columns).index("cmdline"), list(columns).index("argv"))
    coded = tuple(
        (i, CODES[column])
        for i, column in enumerate(columns)
        if column in CODES and view == "process_events"
    )
    return TextPlan(positions, pair, coded)


def split_argv(cmdline: str) -> str:
    """What the views derive for a NULL argv_ref (schema.py `_v7_split_argv`), in Python."""
    return json.dumps(cmdline.split(" "), ensure_ascii=False, separators=(",", ":"))


_DERIVED = "SELECT ('[' || replace(json_quote(?1), ' ', '\",\"') || ']') IS ?2"
_QUOTED = frozenset('"\\')


class StringIds:
    """Text → id for one writer connection, adding texts `strings` lacks. Ids are cached; the
    cache must be forgotten whenever ids it holds may be gone: after a transaction that rolled
    back (the strings it added are gone) and after unused strings were deleted."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._cached_chars = 0
        self._derived: set[str] = set()  # argv JSON texts the view derives exactly

    def forget(self) -> None:
        self._ids.clear()
        self._cached_chars = 0

    def derivable(self, conn: apsw.Connection, cmdline: str, argv: str) -> bool:
        """Whether the view gives exactly `argv` from `cmdline` (checked by SQLite itself
        unless the text is plain printable ASCII without quotes or backslashes, which both
        quote alike, so its JSON quoting and Python's can never disagree unnoticed)."""
        if argv in self._derived:
            return True
        if cmdline.isascii() and cmdline.isprintable() and not _QUOTED & set(cmdline):
            # nothing to escape: the JSON is the text with its spaces as separators
            return argv == '["' + cmdline.replace(" ", '","') + '"]'
        if argv != split_argv(cmdline):
            return False
        if not bool(conn.execute(_DERIVED, (cmdline, argv)).get):
            return False
        if len(argv) <= MAX_CACHED_TEXT:
            if len(self._derived) >= 100_000:
                self._derived.clear()
            self._derived.add(argv)
        return True

    def id_of(self, conn: apsw.Connection, text: str) -> int:
        found = self._ids.get(text)
        if found is not None:
            return found
        row = conn.execute(_LOOKUP, (text,)).fetchone()
        if row is None or row[0] is None:
            conn.execute(_INSERT, (text,))
            found = int(conn.last_insert_rowid())
        else:
            found = int(row[0])
        self._remember(text, found)
        return found

    def _remember(self, text: str, found: int) -> None:
        if len(text) <= MAX_CACHED_TEXT:
            if self._cached_chars + len(text) > MAX_CACHED_CHARS:
                self.forget()
            self._ids[text] = found
            self._cached_chars += len(text)

    def ids_of(self, conn: apsw.Connection, texts: Iterable[str]) -> dict[str, int]:
        """The id of each of `texts`, adding those `strings` lacks: the ones not cached are
        looked up in one statement and the missing ones added in another."""
        found: dict[str, int] = {}
        unknown: list[str] = []
        for text in texts:
            cached = self._ids.get(text)
            if cached is not None:
                found[text] = cached
            elif "\0" in text:  # JSON would carry it, but SQLite text stops at NUL
                found[text] = self.id_of(conn, text)
            else:
                unknown.append(text)
        if not unknown:
            return found
        payload = json.dumps(unknown, ensure_ascii=False)
        missing: list[str] = []
        for index, text_id in conn.execute(_FIND_MANY, (payload,)):
            text = unknown[int(index)]
            if text_id is None:
                missing.append(text)
            else:
                found[text] = int(text_id)
        if missing:
            # RETURNING names no order: each added row says which text it holds
            payload = json.dumps(missing, ensure_ascii=False)
            found.update(
                (str(text), int(text_id)) for text, text_id in conn.execute(_ADD_MANY, (payload,))
            )
        for text in unknown:
            self._remember(text, found[text])
        return found

    def rows(
        self, conn: apsw.Connection, rows: Iterable[Sequence[Any]], plan: TextPlan
    ) -> list[tuple[Any, ...]]:
        """`rows` with the values at the plan's positions replaced by the ids of their texts
        (None stays None; a derivable argv becomes None; an integer is kept as its decimal
        text) and coded values by their codes (an unknown one by None, which the table
        refuses)."""
        if not plan.positions and not plan.coded:
            return [tuple(row) for row in rows]
        pair, positions = plan.argv_pair, plan.positions
        pending: list[list[Any]] = []
        texts: dict[str, None] = {}
        for row in rows:
            values = list(row)
            if pair is not None:
                cmdline, argv = values[pair[0]], values[pair[1]]
                if cmdline is not None and argv is not None and self.derivable(conn, cmdline, argv):
                    values[pair[1]] = None
            for index in positions:
                value = values[index]
                if value is not None:
                    text = values[index] = value if isinstance(value, str) else str(value)
                    texts[text] = None
            for index, codes in plan.coded:
                values[index] = codes.get(values[index])
            pending.append(values)
        found = self.ids_of(conn, texts)
        for values in pending:
            for index in positions:
                text = values[index]
                if text is not None:
                    values[index] = found[text]
        return [tuple(values) for values in pending]


def drop_unused(conn: apsw.Connection) -> int:
    """Delete strings no row refers to any more, in batches; returns how many went."""
    dropped = 0
    while True:
        with conn:
            conn.execute(_DROP_UNUSED)
            batch = conn.changes()
        dropped += batch
        if batch < _UNUSED_BATCH:
            return dropped
