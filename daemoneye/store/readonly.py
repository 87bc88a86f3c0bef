"""Read-only access to the store: the CLI's fallback when no daemon runs, and the connection
user SQL (`daemoneye query`, later rules) runs on.

A ReadOnlyStore is one connection: use it from one thread at a time, and open one per thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import apsw

from daemoneye.errors import QueryError, StoreError
from daemoneye.models import ProcessRecord
from daemoneye.store.connection import configure, file_error
from daemoneye.store.files import side_files, store_exists
from daemoneye.store.rows import PROCESS_COLUMNS, record_from_row
from daemoneye.store.sandbox import (
    BudgetExceeded,
    ReadOnlyAuthorizer,
    StatementDeadline,
    harden,
    register_functions,
)
from daemoneye.store.schema import APPLICATION_ID, read_schema_state

SQLValue = int | float | str | bytes | None

# How many SQLite VM steps between two looks at the clock.
PROGRESS_STEPS = 1_000

# Errors that are about the file, not about the query.
_FILE_ERRORS = (
    apsw.CorruptError,
    apsw.NotADBError,
    apsw.IOError,
    apsw.CantOpenError,
    apsw.FullError,
)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The rows of one query, at most `max_rows` of them; `truncated` says more existed."""

    columns: tuple[str, ...]
    rows: tuple[tuple[SQLValue, ...], ...]
    truncated: bool


def open_readonly(path: Path | str) -> ReadOnlyStore:
    """Open the store at `path` read-only. Never creates, migrates or writes the file."""
    path = Path(path).absolute()
    return ReadOnlyStore(open_sandboxed(path), path)


def open_sandboxed(path: Path | str, *, statement_cache_size: int = 100) -> apsw.Connection:
    """The one way to open the store for SQL a user wrote (rules, `query`): read-only, hardened
    by the sandbox (store/sandbox.py), checked to be a DaemonEye store.

    While a daemon runs, its WAL and shared-memory files exist and the reader joins them. When
    none runs and this user cannot create them (another user's store), the file is opened as
    immutable instead: nothing writes it, so the snapshot is exact.
    """
    path = Path(path).absolute()
    if not store_exists(path):
        raise StoreError(
            f"no store at {path}: the daemon has not created it yet "
            "(start `daemoneye daemon`, or pass --db with the daemon's store)"
        )
    if not os.access(path, os.R_OK):
        raise StoreError(f"cannot read the store {path}: permission denied")
    try:
        return _connect_readonly(path, immutable=False, cache=statement_cache_size)
    except apsw.ReadOnlyError as exc:
        cannot_create_side_files = getattr(exc, "extendedresult", None) in _NO_SHARED_MEMORY
        if not cannot_create_side_files or any(side.exists() for side in side_files(path)):
            raise file_error(path, exc, "opening read-only") from exc
        return _connect_readonly(path, immutable=True, cache=statement_cache_size)


# SQLite cannot create the -shm file next to a WAL database this user may only read.
_NO_SHARED_MEMORY = frozenset({apsw.SQLITE_READONLY_CANTINIT, apsw.SQLITE_READONLY_DIRECTORY})


def _connect_readonly(path: Path, *, immutable: bool, cache: int) -> apsw.Connection:
    """A hardened read-only connection to a file checked to be a DaemonEye store. Raises
    apsw.ReadOnlyError when SQLite cannot set up WAL reading, StoreError otherwise."""
    uri = "file:" + quote(str(path)) + "?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        conn = apsw.Connection(
            uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI, statementcachesize=cache
        )
    except apsw.Error as exc:
        raise file_error(path, exc, "opening read-only") from exc
    try:
        configure(conn)
        harden(conn)
        if not conn.readonly("main"):
            raise StoreError(f"{path}: SQLite did not open the store read-only")
        state = read_schema_state(conn)
        if state.application_id != APPLICATION_ID:
            raise StoreError(
                f"{path} is not a DaemonEye store (no DaemonEye schema in it); "
                "pass --db with the daemon's store"
            )
    except BaseException as exc:
        conn.close()
        if isinstance(exc, apsw.ReadOnlyError) and not immutable:
            raise
        if isinstance(exc, apsw.Error):
            raise file_error(path, exc, "opening read-only") from exc
        raise
    return conn


class ReadOnlyStore:
    """A read-only connection to the store. Create it with `open_readonly`."""

    def __init__(self, conn: apsw.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path
        # REGEXP stops at the query's deadline too (the progress handler never runs inside it).
        self._regexp_deadline = StatementDeadline()
        register_functions(conn, self._regexp_deadline)

    @property
    def path(self) -> Path:
        return self._path

    def query(self, sql: str, *, max_rows: int = 10_000, time_budget_s: float = 5.0) -> QueryResult:
        """Run exactly one read-only statement written by a person.

        Refused with QueryError: more than one statement, anything but reading (writes, ATTACH,
        PRAGMA, CREATE, temp objects, transactions), syntax errors, and queries that run past
        `time_budget_s`. At most `max_rows` rows are returned.
        """
        if max_rows < 0:
            raise QueryError(f"max_rows must be 0 or more, not {max_rows}")
        statement = single_statement(self._conn, sql)
        authorizer = ReadOnlyAuthorizer()
        deadline = time.monotonic() + time_budget_s
        columns: list[tuple[str, ...]] = []
        not_a_select: list[str] = []

        def over_budget() -> bool:
            return time.monotonic() > deadline

        def inspect(cursor: apsw.Cursor, text: str, bindings: object) -> bool:
            description = cursor.get_description()
            if not cursor.is_readonly or not description:
                not_a_select.append(text.strip())
                return False
            columns.append(tuple(str(column[0]) for column in description))
            return True

        rows: list[tuple[SQLValue, ...]] = []
        cursor = self._conn.cursor()
        cursor.exec_trace = inspect
        self._conn.authorizer = authorizer
        self._conn.set_progress_handler(over_budget, PROGRESS_STEPS)
        self._regexp_deadline.expires = deadline
        try:
            for row in cursor.execute(statement, can_cache=False):
                if len(rows) == max_rows:
                    return QueryResult(columns[0], tuple(rows), truncated=True)
                rows.append(tuple(row))
        except apsw.AuthError as exc:
            refused = ", ".join(dict.fromkeys(authorizer.refused)) or str(exc)
            raise QueryError(
                f"refused: {refused} in {statement_excerpt(statement)!r} (queries may only read)"
            ) from exc
        except apsw.ExecTraceAbort as exc:
            offending = not_a_select[0] if not_a_select else sql.strip()
            raise QueryError(f"only SELECT statements are allowed, not: {offending}") from exc
        except (apsw.InterruptError, BudgetExceeded) as exc:
            raise QueryError(
                f"query exceeded its time budget of {time_budget_s:g} s; narrow it or add a LIMIT"
            ) from exc
        except _FILE_ERRORS as exc:
            raise file_error(self._path, exc, "reading") from exc
        except apsw.Error as exc:
            raise QueryError(str(exc)) from exc
        finally:
            cursor.close(force=True)  # ends the read transaction, so checkpoints can proceed
            self._conn.authorizer = None
            self._conn.set_progress_handler(None)
            self._regexp_deadline.expires = float("inf")
        return QueryResult(columns[0] if columns else (), tuple(rows), truncated=False)

    def get_meta(self, key: str) -> str | None:
        """One value of the `meta` table, or None."""
        try:
            value = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).get
        except apsw.Error as exc:
            raise file_error(self._path, exc, f"reading meta {key!r}") from exc
        return None if value is None else str(value)

    def fetch_processes(
        self, where: str, params: Sequence[SQLValue] = (), *, order_by: str = "id"
    ) -> list[ProcessRecord]:
        """Process rows matching a trusted `where` clause (package code only, never user
        input: it does not go through the sandbox)."""
        sql = (
            f"SELECT {', '.join(PROCESS_COLUMNS)} FROM processes WHERE {where} ORDER BY {order_by}"
        )
        try:
            return [record_from_row(row) for row in self._conn.execute(sql, tuple(params))]
        except apsw.Error as exc:
            raise file_error(self._path, exc, "reading processes") from exc

    def fetch_rows(self, sql: str, params: Sequence[SQLValue] = ()) -> list[tuple[SQLValue, ...]]:
        """The rows of one trusted SELECT written in this package (alerts, audit log, outbox
        counters); never user input: it does not go through the sandbox."""
        try:
            return [tuple(row) for row in self._conn.execute(sql, tuple(params))]
        except apsw.Error as exc:
            raise file_error(self._path, exc, "reading") from exc

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ReadOnlyStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def statement_excerpt(statement: str, limit: int = 80) -> str:
    """The statement on one line, shortened for an error message."""
    flat = " ".join(statement.split()).rstrip(";").strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def single_statement(conn: apsw.Connection, sql: str) -> str:
    """The one statement in `sql`, as SQLite's own parser splits it; QueryError if there is
    none or more than one.

    Each piece is compiled but never run (the trace callback aborts before the first step), so
    a second statement is refused before anything executes. Empty pieces (whitespace, comments,
    stray semicolons) are not statements.
    """
    first: str | None = None
    remaining = sql
    while remaining.strip():
        try:
            piece = _next_piece(conn, remaining)
        except apsw.Error as exc:
            if first is not None:
                break  # text after the first statement that does not even compile
            if isinstance(exc, apsw.BindingsError):
                raise QueryError(f"query parameters (?, :name) are not supported: {exc}") from exc
            if isinstance(exc, _FILE_ERRORS):
                raise StoreError(f"cannot read the store: {exc}") from exc
            raise QueryError(str(exc)) from exc
        if piece is None:
            return _only(first, remaining="")
        text, has_vdbe = piece
        if not text or not remaining.startswith(text):
            raise QueryError("cannot split the query into statements")
        if has_vdbe:
            if first is not None:
                break
            first = text
        remaining = remaining[len(text) :]
    return _only(first, remaining)


def _next_piece(conn: apsw.Connection, sql: str) -> tuple[str, bool] | None:
    """(text, does-something) of the first piece of `sql`, compiled without running it."""
    pieces: list[tuple[str, bool]] = []

    def capture(cursor: apsw.Cursor, text: str, bindings: object) -> bool:
        pieces.append((text, cursor.has_vdbe))
        return False

    cursor = conn.cursor()
    cursor.exec_trace = capture
    try:
        cursor.execute(sql, can_cache=False)
    except apsw.ExecTraceAbort:
        pass
    finally:
        cursor.close(force=True)
    return pieces[0] if pieces else None


def _only(first: str | None, remaining: str) -> str:
    if first is None:
        raise QueryError("no SQL statement to run")
    if remaining.strip():
        raise QueryError(
            f"a query must be exactly one statement; found another after {first.strip()!r}"
        )
    return first
