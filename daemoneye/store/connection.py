"""Opening SQLite files: settings every connection shares and turning SQLite's errors about a
file into sentences that name it and say what to do."""

from __future__ import annotations

from pathlib import Path

import apsw

from daemoneye.errors import StoreError

BUSY_TIMEOUT_MS = 5_000
# apsw's statement cache is a ring that every finished statement enters anew, and an
# `executemany` enters it once per row: a statement survives while fewer statements than this
# finish between two of its uses. 512 is the most apsw keeps (it caps larger sizes); the writer
# and the rules' connections use it, so a collection tick of a few hundred rows does not
# prepare every statement again.
STATEMENT_CACHE_SIZE = 512


def configure(conn: apsw.Connection) -> None:
    """Settings for every connection, writer or reader: wait rather than fail on a brief lock,
    treat "double-quoted" text as an identifier only (a misspelt column is an error, not a
    string), and refuse schema tricks that could corrupt the file."""
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    conn.config(apsw.SQLITE_DBCONFIG_DQS_DML, 0)
    conn.config(apsw.SQLITE_DBCONFIG_DQS_DDL, 0)
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    conn.config(apsw.SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0)


def file_error(path: Path, exc: apsw.Error, doing: str) -> StoreError:
    """A StoreError for `exc`, raised while `doing` something with the store at `path`."""
    if isinstance(exc, apsw.NotADBError | apsw.CorruptError):
        if not doing.startswith("opening"):
            return StoreError(
                f"{path}: {doing} failed: the store is corrupt (SQLite: {exc}). Stop the "
                "daemon, move the file aside (or restore a backup) and start it again."
            )
        return StoreError(
            f"{path} is corrupt or not a DaemonEye store (SQLite: {exc}). DaemonEye left it "
            "untouched: move it aside (or restore a backup) or point --db at another file."
        )
    if isinstance(exc, apsw.FullError):
        return StoreError(f"{path}: {doing} failed: the disk is full")
    if isinstance(exc, apsw.ReadOnlyError | apsw.PermissionsError):
        return StoreError(f"{path}: {doing} failed: the file or its directory is not writable")
    if isinstance(exc, apsw.CantOpenError):
        return StoreError(f"cannot open the store {path}: {exc}")
    return StoreError(f"{path}: {doing} failed: {exc}")


def quick_check(conn: apsw.Connection, path: Path) -> None:
    """Run `PRAGMA quick_check` and raise StoreError listing the first problems it finds."""
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise StoreError(
            f"{path} failed its integrity check and was left untouched: "
            + "; ".join(problems)
            + ". Move it aside (or restore a backup) or point --db at another file."
        )


def checkpoint(conn: apsw.Connection, *, wait_ms: int = 200) -> bool:
    """Copy the WAL into the database and truncate it; True when that completed.

    A reader holding an old snapshot makes a full checkpoint wait for it. Waiting the whole busy
    timeout would stall the collection tick (or shutdown), so wait at most `wait_ms` and leave
    the rest to a later checkpoint: the pragma reports "busy" instead of failing.
    """
    conn.set_busy_timeout(wait_ms)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
    finally:
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    return busy == 0
