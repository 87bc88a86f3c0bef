"""Reading a live daemon's store from outside, read-only: its size three ways, row counts and
the health report the daemon writes every tick."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw


@dataclass(frozen=True, slots=True)
class StoreSize:
    logical_bytes: int  # page_count * page_size as a reader sees it (committed WAL included)
    used_bytes: int | None  # bytes of pages actually holding data (dbstat), None without dbstat
    file_bytes: int  # the .db file plus its -wal on disk
    processes: int
    events: int


def _connect(db: Path) -> apsw.Connection:
    return apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)


def size(db: Path) -> StoreSize:
    conn = _connect(db)
    try:
        page_size = int(conn.execute("PRAGMA page_size").get)
        page_count = int(conn.execute("PRAGMA page_count").get)
        try:
            used = conn.execute("SELECT sum(pgsize - unused) FROM dbstat").get
        except apsw.SQLError:
            used = None
        processes = int(conn.execute("SELECT count(*) FROM processes").get)
        events = int(conn.execute("SELECT count(*) FROM process_events").get)
    finally:
        conn.close()
    on_disk = sum(os.path.getsize(path) for path in (db, Path(f"{db}-wal")) if path.exists())
    return StoreSize(
        page_size * page_count, int(used) if used is not None else None, on_disk, processes, events
    )


def health(db: Path) -> dict[str, Any] | None:
    """The daemon's last health report (meta key 'health'), or None when there is none."""
    conn = _connect(db)
    try:
        raw = conn.execute("SELECT value FROM meta WHERE key = 'health'").get
    except apsw.SQLError:
        return None
    finally:
        conn.close()
    return json.loads(raw) if isinstance(raw, str) else None
