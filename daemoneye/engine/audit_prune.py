"""Audit log retention: prune the oldest entries under a signed checkpoint.

Entries older than `store.audit_retention` go, then the oldest ones while the audit log takes
more than `store.audit_max_bytes` (down to ~90% of it). The newest entry always stays, so the
chain's head is never only in a checkpoint. Each batch is one transaction that checks the
entries it removes against the chain (from the previous checkpoint), writes the new checkpoint
that covers everything pruned so far, signed with the store's key, drops the previous
checkpoint and deletes the entries; the schema's guard refuses to delete an entry that no
checkpoint covers. A previous checkpoint that does not verify stops pruning: re-signing it
would launder a forgery.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import apsw

from daemoneye.config.schema import StoreConfig
from daemoneye.engine.audit import GENESIS_HASH, AuditEntry, check_entry
from daemoneye.engine.audit_checkpoint import (
    Checkpoint,
    insert_sql,
    key_for_signing,
    key_path_for,
    latest,
    row_of,
    signature_problem,
    signed,
)
from daemoneye.errors import StoreError
from daemoneye.store.db import SQLValue
from daemoneye.store.retention import (
    AUDIT_TABLES,
    SIZE_TARGET_FRACTION,
    AuditPruner,
    table_bytes,
)

# Entries per prune transaction.
BATCH_ENTRIES = 2_000


class _Rows:
    """The writer's connection as a RowSource."""

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn

    def fetch_rows(self, sql: str, params: Sequence[SQLValue] = ()) -> list[tuple[SQLValue, ...]]:
        return [tuple(row) for row in self._conn.execute(sql, params)]


def _entry(row: Sequence[SQLValue]) -> AuditEntry:
    seq, ts, kind, actor, detail, prev_hash, digest = row
    return AuditEntry(
        int(str(seq)),
        float(str(ts)),
        str(kind),
        str(actor),
        str(detail),
        str(prev_hash),
        str(digest),
    )


def _age_cut(conn: apsw.Connection, cutoff: float) -> int:
    """The last seq of the prefix whose entries are older than `cutoff` (0 when none is)."""
    first_young = conn.execute("SELECT min(seq) FROM audit_log WHERE ts >= ?", (cutoff,)).get
    if first_young is None:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM audit_log").get)
    return int(first_young) - 1


def _size_cut(conn: apsw.Connection, max_bytes: int) -> int:
    """The last seq to prune so the audit log shrinks to about SIZE_TARGET_FRACTION of
    `max_bytes` (0 when it is within `max_bytes`)."""
    used = table_bytes(conn, AUDIT_TABLES)
    if used <= max_bytes:
        return 0
    target = int(max_bytes * SIZE_TARGET_FRACTION)
    count = int(conn.execute("SELECT count(*) FROM audit_log").get)
    excess = max(1, math.ceil(count * (used - target) / used))
    cut = conn.execute("SELECT seq FROM audit_log ORDER BY seq LIMIT 1 OFFSET ?", (excess - 1,)).get
    if cut is None:
        cut = conn.execute("SELECT max(seq) FROM audit_log").get
    return int(cut or 0)


def audit_pruner(db_path: Path, config: StoreConfig) -> AuditPruner:
    """The pruner a retention pass runs for the store at `db_path` with `config`'s bounds."""
    key_path = key_path_for(db_path)

    def run(conn: apsw.Connection, now: float) -> int:
        return prune(
            conn,
            key_path=key_path,
            max_age_s=config.audit_retention,
            max_bytes=config.audit_max_bytes,
            now=now,
        )

    return run


def prune(
    conn: apsw.Connection, *, key_path: Path, max_age_s: float, max_bytes: int, now: float
) -> int:
    """Prune by age, then by size (module docstring); return how many entries went. Raises
    StoreError when the key cannot be had or the previous checkpoint does not verify."""
    newest = conn.execute("SELECT max(seq) FROM audit_log").get
    if newest is None:
        return 0
    keep_from = int(newest)  # the newest entry stays
    pruned = 0
    key: bytes | None = None
    age_done = False
    while True:
        cut = _age_cut(conn, now - max_age_s) if not age_done else 0
        age_done = True
        cut = min(max(cut, _size_cut(conn, max_bytes)), keep_from - 1)
        previous = latest(_Rows(conn))
        if cut <= (previous.last_seq if previous is not None else 0):
            return pruned
        if key is None:
            try:
                key = key_for_signing(key_path)
            except StoreError as exc:
                raise StoreError(f"audit log not pruned: {exc}") from None
        pruned += _prune_through(conn, key, cut, now)


def _prune_through(conn: apsw.Connection, key: bytes, cut: int, now: float) -> int:
    """Prune every entry with seq <= `cut`, one batch per transaction."""
    pruned = 0
    while True:
        with conn:
            previous = latest(_Rows(conn))
            if previous is not None:
                problem = signature_problem(key, previous)
                if problem is not None:
                    raise StoreError(
                        f"audit log not pruned: the checkpoint of entries {previous.first_seq}"
                        f"-{previous.last_seq} does not verify: {problem}. Run "
                        "`daemoneye audit verify`."
                    )
            after = previous.last_seq if previous is not None else 0
            rows = conn.execute(
                "SELECT seq, ts, kind, actor, detail, prev_hash, hash FROM audit_log "
                "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, cut, BATCH_ENTRIES),
            ).fetchall()
            if not rows:
                return pruned
            batch = [_entry(row) for row in rows]
            checkpoint = signed(key, _extend(previous, batch, now))
            conn.execute(insert_sql(), row_of(checkpoint))
            conn.execute("DELETE FROM audit_checkpoints WHERE id != last_insert_rowid()")
            conn.execute("DELETE FROM audit_log WHERE seq <= ?", (checkpoint.last_seq,))
        pruned += len(batch)


def _extend(previous: Checkpoint | None, batch: list[AuditEntry], now: float) -> Checkpoint:
    """The checkpoint that covers `previous` and `batch`, with the first problem found in the
    pruned entries (checked against the chain as it continued from `previous`)."""
    if previous is None:
        expected_seq, expected_prev = 1, GENESIS_HASH
        problem_seq: int | None = None
        problem: str | None = None
    else:
        expected_seq, expected_prev = previous.last_seq + 1, previous.last_hash
        problem_seq, problem = previous.problem_seq, previous.problem
    for entry in batch:
        if problem is None:
            found = check_entry(entry, expected_seq, expected_prev)
            if found is not None:
                problem_seq, problem = found
        expected_seq, expected_prev = entry.seq + 1, entry.hash
    last = batch[-1]
    return Checkpoint(
        first_seq=previous.first_seq if previous is not None else batch[0].seq,
        last_seq=last.seq,
        count=(previous.count if previous is not None else 0) + len(batch),
        first_ts=previous.first_ts if previous is not None else batch[0].ts,
        last_ts=last.ts,
        last_hash=last.hash,
        pruned_at=now,
        problem_seq=problem_seq,
        problem=problem,
        key_id="",
        signature="",
    )
