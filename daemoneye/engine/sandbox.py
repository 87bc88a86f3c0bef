"""Sandboxed connections for rules: open them, compile a rule's query without running it, and
run one with a time budget and a row cap.

The policy itself (what may be read, which functions may be called, the connection limits)
lives in `daemoneye.store.sandbox`, shared with `daemoneye query`: one sandbox, not two.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from daemoneye.errors import QueryError
from daemoneye.store.connection import STATEMENT_CACHE_SIZE, configure
from daemoneye.store.readonly import open_sandboxed, single_statement, statement_excerpt
from daemoneye.store.sandbox import (
    BudgetExceeded,
    ReadOnlyAuthorizer,
    UnsafePatternError,
    compile_pattern,
    harden,
)
from daemoneye.store.schema import migrate

SQLValue = int | float | str | bytes | None

DEFAULT_TIME_BUDGET_S = 0.25
DEFAULT_MAX_ROWS = 1_000
# How many SQLite VM steps between two looks at the clock.
PROGRESS_STEPS = 1_000


# `x REGEXP 'literal'` and `regexp('literal', x)`: patterns that can be checked at load time.
_REGEXP_LITERALS = (
    re.compile(r"\bREGEXP\s+'((?:[^']|'')*)'", re.IGNORECASE),
    re.compile(r"\bregexp\s*\(\s*'((?:[^']|'')*)'", re.IGNORECASE),
)


def open_store(path: Path | str) -> apsw.Connection:
    """A sandbox connection to the store at `path` for the rules: read-only, never writes the
    file, and keeping every enabled rule's statement prepared between ticks (a re-prepare
    costs more than running a rule over one tick's rows)."""
    return open_sandboxed(path, statement_cache_size=STATEMENT_CACHE_SIZE)


def open_scratch() -> apsw.Connection:
    """An empty in-memory database with this code's schema, hardened like a store connection:
    rules compile against it offline (`daemoneye rules validate`), with no store at hand."""
    conn = apsw.Connection(":memory:")
    configure(conn)
    migrate(conn, Path(":memory:"))
    harden(conn)
    return conn


def compile_columns(conn: apsw.Connection, sql: str) -> tuple[str, ...]:
    """Compile `sql` in the sandbox without running it and return its result columns.

    QueryError names why it was refused: not exactly one statement, a syntax error, an unknown
    table or column, reading something undocumented, a function not on the allow-list, a
    regexp pattern the sandbox will not run, or anything but a SELECT.
    """
    statement = single_statement(conn, sql)
    for literal in _regexp_literals(statement):
        compile_pattern(literal)  # UnsafePatternError is a QueryError
    authorizer = ReadOnlyAuthorizer()
    columns: list[tuple[str, ...]] = []
    not_a_select: list[str] = []

    def inspect(cursor: apsw.Cursor, text: str, bindings: object) -> bool:
        description = cursor.get_description()
        if not cursor.is_readonly or not description:
            not_a_select.append(text.strip())
        else:
            columns.append(tuple(str(column[0]) for column in description))
        return False  # compiled is enough: never run it

    previous = conn.authorizer
    cursor = conn.cursor()
    cursor.exec_trace = inspect
    conn.authorizer = authorizer
    try:
        cursor.execute(statement, can_cache=False)
    except apsw.ExecTraceAbort:
        pass
    except apsw.Error as exc:
        # A refused table or statement is an AuthError, a refused function an SQLError.
        if authorizer.refused:
            refused = ", ".join(dict.fromkeys(authorizer.refused))
            raise QueryError(f"refused: {refused} in {statement_excerpt(statement)!r}") from exc
        raise QueryError(str(exc)) from exc
    finally:
        cursor.close(force=True)
        conn.authorizer = previous
    if not_a_select or not columns:
        raise QueryError(f"only a SELECT is allowed, not: {statement_excerpt(statement)}")
    return columns[0]


def _regexp_literals(sql: str) -> list[str]:
    return [
        match.group(1).replace("''", "'")
        for expression in _REGEXP_LITERALS
        for match in expression.finditer(sql)
    ]


@dataclass(slots=True)
class Deadline:
    """A progress handler that aborts the running statement once `expires` (monotonic) has
    passed. Installed once per connection; the caller moves `expires` before each statement."""

    expires: float = float("inf")
    interrupted: int = 0

    def __call__(self) -> bool:
        if time.monotonic() > self.expires:
            self.interrupted += 1
            return True
        return False


@dataclass(slots=True)
class GatedAuthorizer:
    """The sandbox authorizer, switched off while the engine runs its own statements (filling
    the shadow tables) and on for everything rule-supplied. Installing an authorizer expires
    every prepared statement, so it stays installed and a flag decides instead."""

    trusted: bool = False
    policy: ReadOnlyAuthorizer = field(default_factory=ReadOnlyAuthorizer)

    def __call__(
        self,
        action: int,
        arg1: str | None,
        arg2: str | None,
        db_name: str | None,
        trigger_or_view: str | None,
    ) -> int:
        if self.trusted:
            return apsw.SQLITE_OK
        return self.policy(action, arg1, arg2, db_name, trigger_or_view)


@dataclass(frozen=True, slots=True)
class Rows:
    """The rows one statement returned, at most the cap; `truncated` says more existed.
    `columns` is empty when there were no rows."""

    columns: tuple[str, ...]
    rows: tuple[tuple[SQLValue, ...], ...]
    truncated: bool


def run_rows(
    conn: apsw.Connection,
    sql: str,
    deadline: Deadline,
    authorizer: GatedAuthorizer,
    *,
    budget_s: float,
    max_rows: int,
) -> Rows:
    """Run one already-validated SELECT on a connection prepared by the caller (authorizer and
    `deadline` installed). Cached statements are reused: validation made them safe once."""
    authorizer.policy.refused.clear()
    deadline.expires = time.monotonic() + budget_s
    cursor = conn.cursor()
    rows: list[tuple[SQLValue, ...]] = []
    columns: tuple[str, ...] = ()
    truncated = False
    try:
        for row in cursor.execute(sql):
            if not rows:
                columns = tuple(str(column[0]) for column in cursor.get_description())
            if len(rows) == max_rows:
                truncated = True
                break
            rows.append(tuple(row))
    except (apsw.InterruptError, BudgetExceeded) as exc:
        # The progress handler interrupted SQLite, or REGEXP refused to start past the deadline.
        raise BudgetExceeded(f"aborted after its time budget of {budget_s * 1000:g} ms") from exc
    except UnsafePatternError:
        raise
    except apsw.Error as exc:
        if authorizer.policy.refused:
            refused = ", ".join(dict.fromkeys(authorizer.policy.refused))
            raise QueryError(f"refused: {refused}") from exc
        raise QueryError(str(exc)) from exc
    finally:
        deadline.expires = float("inf")
        cursor.close(force=True)  # ends the read transaction, so checkpoints can proceed
    return Rows(columns, tuple(rows), truncated)
