"""The audit log: an append-only hash chain in the store's `audit_log` table.

Each entry's hash is SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8) of
{seq, ts, kind, actor, detail, prev_hash}, and prev_hash is the previous entry's hash (64 zeros
for the first). `verify` recomputes the chain and names the first entry that does not fit:
an edited entry no longer matches its hash; a deleted one leaves a gap in seq and breaks the
next entry's link; reordered or replaced entries break links. A chain alone cannot see its own
tail cut off, so the head (seq and hash of the last entry) is also written to `meta` with every
append: a truncated tail disagrees with it, and appends continue from the recorded head, so a
truncation stays visible after later appends.

What this does not do: someone with write access to the file can rewrite the whole chain and
the head consistently. The chain makes tampering evident to anyone who did not recompute it;
against a root-level attacker, ship the log off the host (the sinks) or record the head
elsewhere.

Retention prunes the oldest entries (store.audit_retention, store.audit_max_bytes) under a
signed checkpoint (audit_checkpoint.py, audit_prune.py); verify then starts from the
checkpoint's hash, checks its signature and says what was pruned.

Every entry's detail is bounded (audit_detail.py: at most 4 KiB of JSON, long strings cut
with a visible marker and their length, deep nesting flattened), so no caller, and no peer
whose refused admin call is audited, can make one entry large.

Kinds: daemon.start, daemon.stop, ruleset.swapped, ruleset.rejected, alert.raised,
alert.reopened, alert.acknowledged, alert.closed, and admin.* (actor "uid N pid M").
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import apsw

from daemoneye.engine.audit_checkpoint import (
    PrunedPrefix,
    check_checkpoint,
    key_path_for,
    latest,
)
from daemoneye.engine.audit_detail import MAX_ACTOR_CHARS, bounded_detail, bounded_text
from daemoneye.engine.audit_detail import canonical_json as canonical_json
from daemoneye.models import AuditVerification
from daemoneye.store.db import RowSource, SQLValue, Store
from daemoneye.store.readonly import ReadOnlyStore

GENESIS_HASH = "0" * 64
HEAD_META_KEY = "audit_head"
KINDS = frozenset(
    {
        "daemon.start",
        "daemon.stop",
        "ruleset.swapped",
        "ruleset.rejected",
        "alert.raised",
        "alert.reopened",
        "alert.acknowledged",
        "alert.closed",
    }
)
ADMIN_PREFIX = "admin."
# Entries read per statement while verifying.
_VERIFY_BATCH = 2_000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One link of the chain as stored; `detail` is its canonical JSON text."""

    seq: int
    ts: float
    kind: str
    actor: str
    detail: str
    prev_hash: str
    hash: str

    def detail_dict(self) -> dict[str, Any]:
        value = json.loads(self.detail)
        return value if isinstance(value, dict) else {"value": value}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of `verify`: how many entries the log holds and, when it is not intact,
    the first bad entry (None when no single entry can be named) and why."""

    entries: int
    intact: bool
    first_bad_seq: int | None = None
    reason: str | None = None
    pruned: PrunedPrefix | None = None  # set when entries were pruned under a checkpoint

    def as_model(self) -> AuditVerification:
        """The IPC record of this result."""
        return AuditVerification(
            ok=self.intact,
            entries=self.entries,
            first_bad_id=self.first_bad_seq,
            reason=self.reason,
            pruned=None if self.pruned is None else self.pruned.line(),
        )


def actor_for(uid: int, pid: int, via: str | None = None) -> str:
    """How an administrator is named in the log: "uid 0 pid 123", "uid 0 pid 123 (cli)"."""
    return f"uid {uid} pid {pid}" + (f" ({via})" if via else "")


def entry_hash(seq: int, ts: float, kind: str, actor: str, detail: Any, prev_hash: str) -> str:
    """SHA-256 (hex) of the canonical encoding of one entry; `detail` as parsed JSON."""
    record = {
        "seq": seq,
        "ts": ts,
        "kind": kind,
        "actor": actor,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(record).encode("utf-8")).hexdigest()


def _check_kind(kind: str) -> None:
    if kind not in KINDS and not (kind.startswith(ADMIN_PREFIX) and len(kind) > len(ADMIN_PREFIX)):
        raise ValueError(f"unknown audit kind {kind!r}")


def _read_head(conn: apsw.Connection) -> tuple[int, str] | None:
    raw = conn.execute("SELECT value FROM meta WHERE key = ?", (HEAD_META_KEY,)).get
    if raw is None:
        return None
    try:
        head = json.loads(str(raw))
        return int(head["seq"]), str(head["hash"])
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: verify reports it; appending continues from the last row


def append(
    conn: apsw.Connection, kind: str, actor: str, detail: Mapping[str, Any], ts: float
) -> AuditEntry:
    """Append one entry on `conn`, which must be inside a write transaction (Store.transaction
    takes the write lock first, so two writers cannot both extend the same head)."""
    _check_kind(kind)
    if not conn.in_transaction:
        raise RuntimeError("audit.append must run inside a write transaction")
    last = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    head = _read_head(conn)
    if head is not None:
        prev_seq, prev_hash = head
    elif last is not None:
        prev_seq, prev_hash = int(last[0]), str(last[1])
    else:
        prev_seq, prev_hash = 0, GENESIS_HASH
    # Never reuse a seq, even one that was deleted or inserted by hand: verify names those.
    seq = max(prev_seq, int(last[0]) if last is not None else 0) + 1
    detail_text = bounded_detail(detail)  # the one place every entry's size is bounded
    ts = float(ts)
    actor = bounded_text(actor, MAX_ACTOR_CHARS)
    digest = entry_hash(seq, ts, kind, actor, json.loads(detail_text), prev_hash)
    conn.execute(
        "INSERT INTO audit_log (seq, ts, kind, actor, detail, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, ts, kind, actor, detail_text, prev_hash, digest),
    )
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (HEAD_META_KEY, canonical_json({"seq": seq, "hash": digest})),
    )
    return AuditEntry(seq, ts, kind, actor, detail_text, prev_hash, digest)


def record(
    store: Store, kind: str, actor: str, detail: Mapping[str, Any], ts: float | None = None
) -> AuditEntry:
    """Append one entry in a transaction of its own (or the caller's, when one is open): for
    daemon.start/stop, ruleset.* and admin.* entries."""
    with store.transaction(f"appending {kind} to the audit log") as conn:
        return append(conn, kind, actor, detail, time.time() if ts is None else ts)


_ENTRY_COLUMNS = "seq, ts, kind, actor, detail, prev_hash, hash"


def _entry(row: Sequence[SQLValue]) -> AuditEntry:
    seq, ts, kind, actor, detail, prev_hash, digest = row
    return AuditEntry(
        int(cast(int, seq)),
        float(cast(float, ts)),
        str(kind),
        str(actor),
        str(detail),
        str(prev_hash),
        str(digest),
    )


def entries(source: RowSource, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
    """Entries with seq greater than `after_seq`, oldest first."""
    rows = source.fetch_rows(
        f"SELECT {_ENTRY_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    )
    return [_entry(row) for row in rows]


def _recorded_head(source: RowSource) -> tuple[bool, tuple[int, str] | None]:
    """(present, (seq, hash)) of the head in meta; present but None when unreadable."""
    rows = source.fetch_rows("SELECT value FROM meta WHERE key = ?", (HEAD_META_KEY,))
    if not rows:
        return False, None
    try:
        head = json.loads(str(rows[0][0]))
        return True, (int(head["seq"]), str(head["hash"]))
    except (ValueError, KeyError, TypeError):
        return True, None


def _describe(entry: AuditEntry) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.ts))
    return f"entry {entry.seq} ({entry.kind} by {entry.actor} at {when})"


def _span(first: int, last: int) -> str:
    return f"entry {first} is" if first == last else f"entries {first}-{last} are"


def check_entry(
    entry: AuditEntry,
    expected_seq: int,
    expected_prev: str,
) -> tuple[int, str] | None:
    """(first bad seq, why) when `entry` does not fit the chain so far, else None."""
    try:
        detail = json.loads(entry.detail)
        canonical = canonical_json(detail)
    except ValueError:
        return entry.seq, f"{_describe(entry)} has a detail that is not valid JSON: edited"
    digest = entry_hash(entry.seq, entry.ts, entry.kind, entry.actor, detail, entry.prev_hash)
    if digest != entry.hash or canonical != entry.detail:
        return entry.seq, (
            f"{_describe(entry)} does not match its hash: it was changed after it was written"
        )
    if entry.seq > expected_seq:
        return expected_seq, (
            f"{_span(expected_seq, entry.seq - 1)} missing (deleted): {_describe(entry)} comes next"
        )
    if entry.seq < expected_seq:  # unreachable with an INTEGER PRIMARY KEY; kept for safety
        return entry.seq, f"{_describe(entry)} repeats a sequence number"
    if entry.prev_hash != expected_prev:
        if entry.seq == 1:
            return 1, f"{_describe(entry)} does not start the chain (its prev_hash is not zeros)"
        return entry.seq, (
            f"{_describe(entry)} does not follow entry {entry.seq - 1}: its "
            "prev_hash differs from that entry's hash (an entry was replaced, "
            "reordered or rewritten)"
        )
    return None


def verify(source: RowSource, key_path: Path | None = None) -> VerifyResult:
    """Recompute the chain and compare its end with the head recorded in meta.

    When entries were pruned, the chain starts from the newest checkpoint: its signature is
    checked with the key in `key_path` (by default the store's `<db>.audit-key`), and the
    first remaining entry must follow the last pruned one. The head is read first and
    entries after it are fine (a daemon may append while this runs), so verifying a live
    store is safe without a long read transaction.
    """
    head_present, head = _recorded_head(source)
    if key_path is None and isinstance(source, Store | ReadOnlyStore):
        key_path = key_path_for(source.path)
    checkpoint = latest(source)
    pruned = None if checkpoint is None else check_checkpoint(checkpoint, key_path)
    count = 0
    problem: tuple[int | None, str] | None = None
    expected_seq, expected_prev = 1, GENESIS_HASH
    if checkpoint is not None and pruned is not None:
        problem = pruned.problem()
        expected_seq, expected_prev = checkpoint.last_seq + 1, checkpoint.last_hash
    base = (expected_seq - 1, expected_prev)
    last: AuditEntry | None = None
    head_entry: AuditEntry | None = None
    after = 0
    while True:
        batch = entries(source, after_seq=after, limit=_VERIFY_BATCH)
        if not batch:
            break
        for entry in batch:
            count += 1
            if head is not None and entry.seq == head[0]:
                head_entry = entry
            if problem is None and entry.seq < base[0] + 1:
                problem = (
                    entry.seq,
                    (
                        f"{_describe(entry)} is still present although the checkpoint says it "
                        "was pruned (inserted)"
                    ),
                )
            if entry.seq <= base[0]:
                continue
            if problem is None:
                found = check_entry(entry, expected_seq, expected_prev)
                if found is not None:
                    problem = found
            expected_seq, expected_prev = entry.seq + 1, entry.hash
            last = entry
        after = batch[-1].seq
    if problem is None:
        problem = _check_head(head_present, head, head_entry, last, base)
    if problem is None:
        return VerifyResult(entries=count, intact=True, pruned=pruned)
    return VerifyResult(
        entries=count, intact=False, first_bad_seq=problem[0], reason=problem[1], pruned=pruned
    )


def _check_head(
    present: bool,
    head: tuple[int, str] | None,
    head_entry: AuditEntry | None,
    last: AuditEntry | None,
    base: tuple[int, str],
) -> tuple[int | None, str] | None:
    """The problem, if any, between an otherwise intact chain and its recorded head; `base`
    is the (seq, hash) the chain continues from (the last pruned entry's, or genesis)."""
    if not present:
        if last is None and base[0] == 0:
            return None  # an empty log that never had an entry
        return None, (
            "the record of the chain's head is missing from meta (deleted), so a "
            "truncated end could not be noticed"
        )
    if head is None:
        return None, "the record of the chain's head in meta is unreadable (edited)"
    head_seq, head_hash = head
    last_seq = last.seq if last is not None else base[0]
    if last is None and head_seq == base[0] and head_hash == base[1]:
        return None  # every entry was pruned, up to the head
    if last_seq < head_seq:
        return last_seq + 1, (
            f"{_span(last_seq + 1, head_seq)} missing from the end "
            f"(truncated): the recorded head is entry {head_seq}"
        )
    if head_entry is None or head_entry.hash != head_hash:
        return head_seq, (
            f"entry {head_seq} is not the entry recorded as the head when it was written (replaced)"
        )
    return None
