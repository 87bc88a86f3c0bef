"""The store's writer: one connection, one transaction per collection tick.

A `Store` owns a single APSW connection. It must be used from one thread at a time — in the
daemon that is the collection worker thread, which calls every method — because a transaction
opened by one caller must not interleave with another's statements. Readers (CLI, IPC, rules)
open their own connections with `open_readonly`; WAL lets them read while the writer writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Protocol

import apsw

from daemoneye.errors import StoreError, StoreUnwritable
from daemoneye.models import (
    ExeHash,
    ProcessEvent,
    ProcessKey,
    ProcessRecord,
    ScanDelta,
    field_names,
)
from daemoneye.store import retention as retention_mod
from daemoneye.store.connection import (
    STATEMENT_CACHE_SIZE,
    checkpoint,
    configure,
    file_error,
    quick_check,
)
from daemoneye.store.files import enforce_side_file_modes, prepare_store_file, store_exists
from daemoneye.store.retention import RetentionResult
from daemoneye.store.rows import (
    EVENT_COLUMNS,
    PROCESS_COLUMNS,
    ArgvCache,
    RowPlan,
    event_row,
    process_row,
    record_from_row,
)
from daemoneye.store.schema import SCHEMA_VERSION, check_compatible, migrate, read_schema_state
from daemoneye.store.strings import (
    BASE_TABLES,
    COUNT_ADDED,
    LAST_ID,
    StringIds,
    TextPlan,
    base_column,
    interned_positions,
)

SQLValue = int | float | str | bytes | None

# The WAL is truncated back to this size after a checkpoint, so one large retention pass does
# not leave a large -wal file behind for good.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

_COLUMN_LIST = ", ".join(PROCESS_COLUMNS)
_SELECT_PROCESSES = f"SELECT {_COLUMN_LIST} FROM processes"
_WHERE_INSTANCE = "WHERE pid = ? AND start_time = ?"
# Writes go to the base tables with string ids (store/strings.py); reads use the views.
_ROWS = BASE_TABLES["processes"]
_EVENTS = BASE_TABLES["process_events"]
_BASE_LIST = ", ".join(base_column("processes", column) for column in PROCESS_COLUMNS)
_PROCESS_TEXTS = interned_positions("processes", PROCESS_COLUMNS)
_IDENTITY = field_names("identity")

# Added records are upserted: after a restart the collector re-reports the processes the store
# already holds, and those rows must be refreshed, not duplicated or refused. Every column but
# the identity takes the new value, except these, which keep what the store knows.
_UPSERT_KEEPS = {
    "exe_sha256_ref": f"""CASE WHEN {_ROWS}.exe_ref IS excluded.exe_ref
                      THEN coalesce(excluded.exe_sha256_ref, {_ROWS}.exe_sha256_ref)
                      ELSE excluded.exe_sha256_ref END""",
    "first_seen": f"min({_ROWS}.first_seen, excluded.first_seen)",
    "last_seen": f"max({_ROWS}.last_seen, excluded.last_seen)",
}
_UPSERT_PROCESS = f"""
INSERT INTO {_ROWS} ({_BASE_LIST}) VALUES ({", ".join("?" * len(PROCESS_COLUMNS))})
ON CONFLICT ({", ".join(_IDENTITY)}) DO UPDATE SET
    {
    ", ".join(
        f"{column} = {_UPSERT_KEEPS.get(column, f'excluded.{column}')}"
        for column in (base_column("processes", c) for c in PROCESS_COLUMNS)
        if column not in _IDENTITY
    )
}
"""


def _update_plan(
    names: Sequence[str], constants: Mapping[str, str] | None = None
) -> tuple[str, RowPlan, TextPlan]:
    """An UPDATE of one instance's `names` columns (then `constants`, set to SQL expressions),
    the plan of its parameters (the columns' values, then pid and start_time), and where in
    them the texts to intern are."""
    plan = RowPlan([*names, *_IDENTITY])
    assignments = [
        f"{base_column('processes', column)} = ?" for column in plan.columns[: -len(_IDENTITY)]
    ]
    assignments += [
        f"{base_column('processes', column)} = {value}"
        for column, value in (constants or {}).items()
    ]
    sql = f"UPDATE {_ROWS} SET {', '.join(assignments)} {_WHERE_INSTANCE}"
    return sql, plan, interned_positions("processes", plan.columns)


# The per-tick update writes every dynamic field (models.py: what changes without an exec;
# ppid on reparenting, name on prctl(PR_SET_NAME), cwd on chdir, uid/gid on setuid), so what the
# collector counts as a change is what the rules see.
_UPDATE_DYNAMIC, _DYNAMIC_ROW, _DYNAMIC_TEXTS = _update_plan([*field_names("dynamic"), "last_seen"])

# After execve the details change with the dynamic fields; the old hash describes another
# binary: it is cleared until the new one arrives.
_UPDATE_EXECED, _EXECED_ROW, _EXECED_TEXTS = _update_plan(
    [*(name for name in field_names("details", "dynamic") if name != "exe_sha256"), "last_seen"],
    {"exe_sha256": "NULL"},
)

_END_SEEN = f"""
UPDATE {_ROWS} SET ended_at = ?1, last_seen = max(last_seen, ?1)
WHERE pid = ?2 AND start_time = ?3 AND ended_at IS NULL
"""

_END_UNSEEN = f"""
UPDATE {_ROWS} SET ended_at = ?1
WHERE pid = ?2 AND start_time = ?3 AND ended_at IS NULL
"""

_INSERT_EVENT = f"""
INSERT INTO {_EVENTS} ({", ".join(base_column("process_events", c) for c in EVENT_COLUMNS)})
VALUES ({", ".join("?" * len(EVENT_COLUMNS))})
"""
_EVENT_TEXTS = interned_positions("process_events", EVENT_COLUMNS)

# An instance that ends with its exit code known is written once: the two updates above and
# below in one statement (SET expressions all see the row as it was, so each column keeps the
# guard of its own statement).
_END_SEEN_WITH_CODE = f"""
UPDATE {_ROWS} SET ended_at = coalesce(ended_at, ?1),
    last_seen = CASE WHEN ended_at IS NULL THEN max(last_seen, ?1) ELSE last_seen END,
    exit_code = coalesce(exit_code, ?4)
WHERE pid = ?2 AND start_time = ?3 AND (ended_at IS NULL OR exit_code IS NULL)
"""

_SET_EXIT_CODE = f"""
UPDATE {_ROWS} SET exit_code = ? WHERE pid = ? AND start_time = ? AND exit_code IS NULL
"""

_SET_HASH = f"UPDATE {_ROWS} SET exe_sha256_ref = ? WHERE pid = ? AND start_time = ?"

_BOOT_TIME_KEY = "boot_time:"


class RowSource(Protocol):
    """A connection that runs trusted, package-written SELECTs (Store and ReadOnlyStore both
    do): what read-side helpers shared by the daemon, IPC and the CLI take."""

    def fetch_rows(
        self, sql: str, params: Sequence[SQLValue] = ()
    ) -> list[tuple[SQLValue, ...]]: ...


class Store:
    """The writer. Create it with `Store.open`; use it from one thread at a time."""

    def __init__(self, conn: apsw.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path
        self._closed = False
        self._strings = StringIds()

    @classmethod
    def open(cls, path: Path | str, *, file_mode: int = 0o600) -> Store:
        """Open (creating if needed) the store at `path` and migrate it to this code's schema.

        A file that is corrupt, not a DaemonEye store, or from a newer DaemonEye is refused
        with StoreError and left byte-for-byte untouched.
        """
        path = Path(path)
        prepare_store_file(path, file_mode)

        def create_or_migrate(conn: apsw.Connection) -> None:
            # Only reads until the file is known to be ours, healthy and not newer.
            state = read_schema_state(conn)
            check_compatible(state, path)
            quick_check(conn, path)
            if state.is_empty:
                # Must precede the first table; lets retention hand pages back to the OS.
                conn.pragma("auto_vacuum", "INCREMENTAL")
            journal_mode = str(conn.pragma("journal_mode", "WAL")).lower()
            if journal_mode != "wal":
                raise StoreError(
                    f"{path}: cannot use a write-ahead log (journal mode stays {journal_mode!r});"
                    " is the store on a network filesystem? Use a local path."
                )
            _writer_pragmas(conn)
            conn.pragma("journal_size_limit", JOURNAL_SIZE_LIMIT)
            migrate(conn, path)
            enforce_side_file_modes(path, file_mode)

        return cls(_writer_connection(path, create_or_migrate), path)

    @classmethod
    def open_existing(cls, path: Path | str) -> Store:
        """A further writer connection to a store that already exists at this code's schema:
        for a thread of the daemon's own (sink delivery) or a short administrative write from
        the CLI. Never creates, migrates or changes the mode of the file; raises StoreError
        when it is missing, not writable by this user, or at another schema version."""
        path = Path(path).absolute()
        if not store_exists(path):
            raise StoreError(
                f"no store at {path}: the daemon has not created it yet "
                "(start `daemoneye daemon`, or pass --db with the daemon's store)"
            )
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
            raise StoreError(
                f"cannot write the store {path}: permission denied for uid "
                f"{os.geteuid()} (it belongs to the daemon's user)"
            )

        def check_current(conn: apsw.Connection) -> None:
            state = read_schema_state(conn)
            check_compatible(state, path)
            if state.user_version != SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: the store is at schema version {state.user_version}, this "
                    f"command needs {SCHEMA_VERSION}; start the daemon once to migrate it"
                )
            _writer_pragmas(conn)

        return cls(_writer_connection(path, check_current), path)

    @property
    def path(self) -> Path:
        return self._path

    @contextmanager
    def transaction(self, doing: str) -> Iterator[apsw.Connection]:
        """A write transaction for the engine's tables (alerts, outbox, audit log), yielding the
        connection. It starts with BEGIN IMMEDIATE, so what is read inside it is the newest
        committed state and no other writer (another thread, the CLI) can interleave: read-then-
        write sequences such as appending to the audit chain cannot fork. Called while a
        transaction is already open it nests as a savepoint, so a caller can put detections,
        alerts, outbox rows and audit entries into one transaction. SQLite errors roll it back
        and become StoreError."""
        if self._closed:
            raise StoreError(f"{self._path}: {doing} failed: the store is closed")
        conn = self._conn
        try:
            if conn.in_transaction:
                with conn:
                    yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except apsw.Error as exc:
            raise _write_error(self._path, exc, doing) from exc

    def fetch_rows(self, sql: str, params: Sequence[SQLValue] = ()) -> list[tuple[SQLValue, ...]]:
        """The rows of one trusted SELECT written in this package (never user input: it does
        not go through the sandbox)."""
        if self._closed:
            raise StoreError(f"{self._path}: reading failed: the store is closed")
        try:
            return [tuple(row) for row in self._conn.execute(sql, tuple(params))]
        except apsw.Error as exc:
            raise file_error(self._path, exc, "reading") from exc

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[apsw.Connection]:
        """One write transaction; any SQLite error rolls it back and becomes a StoreError."""
        if self._closed:
            raise StoreError(f"{self._path}: {doing} failed: the store is closed")
        try:
            with self._conn:
                yield self._conn
        except apsw.Error as exc:
            raise _write_error(self._path, exc, doing) from exc

    # -- identity ------------------------------------------------------------------------------
    def boot_time(self, boot_id: str, btime: float) -> float:
        """The boot time recorded for `boot_id`, recording `btime` the first time this boot is
        seen, so process identities stay the same across daemon restarts even if the kernel's
        reported boot time jitters."""
        key = _BOOT_TIME_KEY + boot_id
        with self._transaction("recording the boot time") as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, repr(float(btime))),
            )
            recorded = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).get
        return float(recorded)

    def put_meta(self, key: str, value: str) -> None:
        """Set one `meta` value (e.g. the daemon's health report)."""
        with self._transaction(f"writing meta {key!r}") as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def get_meta(self, key: str) -> str | None:
        with self._transaction(f"reading meta {key!r}") as conn:
            value = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).get
        return None if value is None else str(value)

    # -- processes -----------------------------------------------------------------------------
    def live_processes(self) -> dict[ProcessKey, ProcessRecord]:
        """Every row not yet ended: at start-up, what the store believes is still running."""
        with self._transaction("reading live processes") as conn:
            rows = list(conn.execute(f"{_SELECT_PROCESSES} WHERE ended_at IS NULL"))
        records = (record_from_row(row) for row in rows)
        return {record.key: record for record in records}

    def apply(self, delta: ScanDelta, hashes: Sequence[ExeHash] = ()) -> None:
        """Write one collection tick in one transaction: all of it or, on error, none of it.

        Only what changed is written: added rows, the changed fields of updated and execed
        rows, end times, events, and executable hashes that arrived.
        """
        try:
            self._apply(delta, hashes)
        except BaseException:
            self._strings.forget()  # the ids of strings this transaction added are gone
            raise

    def _apply(self, delta: ScanDelta, hashes: Sequence[ExeHash]) -> None:
        argv_of = ArgvCache()
        ids = self._strings.rows
        with self._transaction("writing a collection tick") as conn:
            for added in _one_per_instance(delta.added):
                rows = ids(conn, (process_row(r, argv_of) for r in added), _PROCESS_TEXTS)
                # Counted before anything in this tick can change the new rows' references.
                last = conn.execute(LAST_ID["processes"]).get
                conn.executemany(_UPSERT_PROCESS, rows)
                conn.execute(COUNT_ADDED["processes"], (last,))
            if delta.updated:
                rows = ids(conn, (_DYNAMIC_ROW(r, argv_of) for r in delta.updated), _DYNAMIC_TEXTS)
                conn.executemany(_UPDATE_DYNAMIC, rows)
            if delta.execed:
                rows = ids(conn, (_EXECED_ROW(r, argv_of) for r in delta.execed), _EXECED_TEXTS)
                conn.executemany(_UPDATE_EXECED, rows)
            code_by_instance = _exit_codes(delta.events)
            if delta.ended:
                ended_with_code, ended = [], []
                for key in delta.ended:
                    code = code_by_instance.pop((key.pid, key.start_time), None)
                    if code is None:
                        ended.append((delta.ts, key.pid, key.start_time))
                    else:
                        ended_with_code.append((delta.ts, key.pid, key.start_time, code))
                if ended_with_code:
                    conn.executemany(_END_SEEN_WITH_CODE, ended_with_code)
                if ended:
                    conn.executemany(_END_SEEN, ended)
            if delta.events:
                events = (event_row(event, argv_of) for event in delta.events)
                last = conn.execute(LAST_ID["process_events"]).get
                conn.executemany(_INSERT_EVENT, ids(conn, events, _EVENT_TEXTS))
                conn.execute(COUNT_ADDED["process_events"], (last,))
            if code_by_instance:
                conn.executemany(
                    _SET_EXIT_CODE,
                    [(code, pid, start) for (pid, start), code in code_by_instance.items()],
                )
            known_hashes = [
                (h.sha256, h.key.pid, h.key.start_time) for h in hashes if h.sha256 is not None
            ]
            if known_hashes:
                conn.executemany(_SET_HASH, ids(conn, known_hashes, TextPlan((0,))))

    def mark_ended(self, keys: Iterable[ProcessKey], ts: float) -> int:
        """End rows that are gone (reconciliation after a restart); return how many were still
        open. last_seen is left alone: the process was not seen at `ts`."""
        params = [(ts, key.pid, key.start_time) for key in keys]
        if not params:
            return 0
        with self._transaction("ending processes") as conn:
            before = conn.total_changes()
            conn.executemany(_END_UNSEEN, params)
            return conn.total_changes() - before

    # -- size ----------------------------------------------------------------------------------
    def retention(
        self,
        max_age_s: float,
        max_bytes: int,
        now: float,
        *,
        prune_audit: retention_mod.AuditPruner | None = None,
    ) -> RetentionResult:
        """Delete ended processes, events and alerts older than `max_age_s` (retention.py),
        prune the audit log with `prune_audit`, then the oldest history until the data but
        the audit log is under ~90% of `max_bytes`. Live processes are never deleted."""
        if self._closed:
            raise StoreError(f"{self._path}: retention failed: the store is closed")
        try:
            return retention_mod.run(
                self._conn,
                max_age_s=max_age_s,
                max_bytes=max_bytes,
                now=now,
                prune_audit=prune_audit,
            )
        except apsw.Error as exc:
            raise _write_error(self._path, exc, "retention") from exc
        finally:
            self._strings.forget()  # unused strings were deleted: their ids may be reused

    def size_bytes(self) -> int:
        """The database file's size as SQLite sees it (page_count * page_size), WAL excluded."""
        if self._closed:
            raise StoreError(f"{self._path}: reading its size failed: the store is closed")
        try:
            return retention_mod.database_bytes(self._conn)
        except apsw.Error as exc:
            raise file_error(self._path, exc, "reading its size") from exc

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Checkpoint the WAL into the database and close. Safe to call twice.

        A reader still open elsewhere only postpones the checkpoint; SQLite completes it when
        the last connection closes.
        """
        if self._closed:
            return
        self._closed = True
        try:
            checkpoint(self._conn)
        except apsw.Error as exc:
            raise file_error(self._path, exc, "checkpointing on close") from exc
        finally:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _write_error(path: Path, exc: apsw.Error, doing: str) -> StoreError:
    """`file_error` for a failed write; StoreUnwritable when the disk is full or the device
    fails writes, so the daemon can hold what it could not write and try again later. SQLite
    rolls a transaction back by itself on SQLITE_FULL/IOERR, so the error seen here may be the
    failed ROLLBACK that followed ("no transaction is active"): the cause is in its context."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, apsw.FullError | apsw.IOError):
            return StoreUnwritable(str(file_error(path, cause, doing)))
        cause = cause.__context__
    return file_error(path, exc, doing)


def _one_per_instance(records: Sequence[ProcessRecord]) -> list[list[ProcessRecord]]:
    """`records` in rounds that hold each instance at most once, in order (almost always one
    round). An instance upserted twice in one statement would have its second upsert change a
    row whose references are not counted yet; a round later, it is a re-report like any
    other (the upsert's rules: earliest first_seen, a hash kept for the same exe)."""
    rounds: list[list[ProcessRecord]] = []
    times_seen: dict[ProcessKey, int] = {}
    for record in records:
        times = times_seen.get(record.key, 0)
        times_seen[record.key] = times + 1
        if times == len(rounds):
            rounds.append([])
        rounds[times].append(record)
    return rounds


def _writer_connection(path: Path, setup: Callable[[apsw.Connection], None]) -> apsw.Connection:
    """A read-write connection to the store at `path`, configured, with `setup` run on it.
    When anything fails the connection is closed again and SQLite's error becomes a
    StoreError naming the file."""
    try:
        conn = apsw.Connection(
            str(path), flags=apsw.SQLITE_OPEN_READWRITE, statementcachesize=STATEMENT_CACHE_SIZE
        )
    except apsw.Error as exc:
        raise file_error(path, exc, "opening") from exc
    try:
        configure(conn)
        setup(conn)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, apsw.Error):
            raise file_error(path, exc, "opening") from exc
        raise
    return conn


def _writer_pragmas(conn: apsw.Connection) -> None:
    """What every writer connection runs with: WAL's safe-enough sync, and foreign keys."""
    conn.pragma("synchronous", "NORMAL")
    conn.pragma("foreign_keys", "ON")


def _exit_codes(events: Sequence[ProcessEvent]) -> dict[tuple[int, float], int]:
    """The exit code each instance's exit events carry, the first one when several do (the
    store keeps the first: it never overwrites an exit code)."""
    code_by_instance: dict[tuple[int, float], int] = {}
    for event in events:
        if event.kind == "exit" and event.exit_code is not None:
            code_by_instance.setdefault((event.pid, event.start_time), event.exit_code)
    return code_by_instance
