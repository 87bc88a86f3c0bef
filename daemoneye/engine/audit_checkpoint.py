"""Signed checkpoints: what stands in for the pruned prefix of the audit log's hash chain.

A checkpoint records the pruned entries' first and last seq, their count, their time range,
the hash of the last pruned entry (the remaining chain continues from it), when pruning ran,
and the first problem pruning found in them (pruning checks what it deletes and carries the
finding forward, so it never launders tampering). It is signed with HMAC-SHA256 over the
canonical JSON of those fields, with a per-store key of 32 random bytes kept outside the
database in `<db>.audit-key` (hex, mode 0600, created by the writer at first use: in system
mode, the daemon's user). Only the newest checkpoint is kept; each one covers everything
pruned so far.

What the signature guarantees: whoever can write the database but cannot read the key cannot
forge or edit a checkpoint, nor delete more entries under an old one unseen. Whoever can read
the key (root, the daemon's user) can forge one: ship alerts and audit entries off the host
to guard against that.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import hmac
import os
import secrets
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from daemoneye.engine.audit_detail import canonical_json
from daemoneye.errors import StoreError
from daemoneye.store.db import RowSource, SQLValue

KEY_SUFFIX = ".audit-key"
KEY_BYTES = 32
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed summary of the pruned prefix (the columns of `audit_checkpoints`)."""

    first_seq: int
    last_seq: int
    count: int
    first_ts: float
    last_ts: float
    last_hash: str
    pruned_at: float
    problem_seq: int | None
    problem: str | None
    key_id: str
    signature: str

    def signed_text(self) -> str:
        """The canonical JSON the signature covers: every field but the signature."""
        fields = asdict(self)
        del fields["signature"]
        return canonical_json({"format": CHECKPOINT_FORMAT, **fields})


def key_path_for(db_path: Path) -> Path:
    """Where the store at `db_path` keeps its checkpoint key."""
    return db_path.with_name(db_path.name + KEY_SUFFIX)


def key_id(key: bytes) -> str:
    """A short public name of a key, so a checkpoint signed with another key says so."""
    return hashlib.sha256(b"daemoneye audit key id\0" + key).hexdigest()[:16]


def signature(key: bytes, checkpoint: Checkpoint) -> str:
    return hmac.new(key, checkpoint.signed_text().encode("utf-8"), hashlib.sha256).hexdigest()


def signed(key: bytes, checkpoint: Checkpoint) -> Checkpoint:
    """`checkpoint` with its key id and signature set for `key`."""
    unsigned = dataclasses.replace(checkpoint, key_id=key_id(key), signature="")
    return dataclasses.replace(unsigned, signature=signature(key, unsigned))


def signature_problem(key: bytes, checkpoint: Checkpoint) -> str | None:
    """Why `checkpoint` does not verify with `key`, or None when it does."""
    if checkpoint.key_id != key_id(key):
        return (
            f"it names key {checkpoint.key_id!r} but the key file holds {key_id(key)!r} "
            "(forged, or the key file was replaced)"
        )
    if not hmac.compare_digest(checkpoint.signature, signature(key, checkpoint)):
        return "its signature does not match its fields (forged or edited)"
    return None


def read_key(path: Path) -> bytes:
    """The key in `path`. Raises FileNotFoundError, PermissionError, or StoreError for a file
    that is not a key (a symlink, not a regular file, not 64 hex digits)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreError(f"{path}: the audit key file is a symlink; refusing it") from None
        raise
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"{path}: the audit key file is not a regular file")
        raw = file.read(KEY_BYTES * 2 + 2)
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise StoreError(f"{path}: the audit key file does not hold {KEY_BYTES * 2} hex digits")
    return key


def key_for_signing(path: Path) -> bytes:
    """The key to sign with: read it, or create it (0600, atomically) at first use. A key
    that others may read is refused: with it they could forge checkpoints."""
    try:
        key = read_key(path)
    except FileNotFoundError:
        return _create_key(path)
    except PermissionError as exc:
        raise StoreError(f"{path}: cannot read the audit key file: {exc.strerror}") from None
    mode = path.lstat().st_mode
    if mode & 0o077:
        raise StoreError(
            f"{path}: the audit key file is readable or writable by others (mode "
            f"{stat.S_IMODE(mode):o}); with it they could forge audit checkpoints. "
            f"Run: chmod 600 {path}"
        )
    return key


def _create_key(path: Path) -> bytes:
    key = secrets.token_bytes(KEY_BYTES)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(fd, key.hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # never replaces a key another writer just made
        except FileExistsError:
            return read_key(path)
        finally:
            os.unlink(temporary)
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the audit key file: {exc.strerror}") from None
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return key


CHECKPOINT_COLUMNS = (
    "first_seq, last_seq, count, first_ts, last_ts, last_hash, pruned_at, problem_seq, problem, "
    "key_id, signature"
)


def has_checkpoint_table(source: RowSource) -> bool:
    """Stores older than schema version 3 have no checkpoints."""
    rows = source.fetch_rows(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'audit_checkpoints'"
    )
    return bool(rows)


def latest(source: RowSource) -> Checkpoint | None:
    """The newest checkpoint (the one that covers every pruned entry), or None."""
    if not has_checkpoint_table(source):
        return None
    rows = source.fetch_rows(
        f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints "
        "ORDER BY last_seq DESC, id DESC LIMIT 1"
    )
    return _checkpoint(rows[0]) if rows else None


def _checkpoint(row: tuple[SQLValue, ...]) -> Checkpoint:
    (
        first_seq,
        last_seq,
        count,
        first_ts,
        last_ts,
        last_hash,
        pruned_at,
        problem_seq,
        problem,
        key,
        sig,
    ) = row
    return Checkpoint(
        first_seq=int(cast(int, first_seq)),
        last_seq=int(cast(int, last_seq)),
        count=int(cast(int, count)),
        first_ts=float(cast(float, first_ts)),
        last_ts=float(cast(float, last_ts)),
        last_hash=str(last_hash),
        pruned_at=float(cast(float, pruned_at)),
        problem_seq=None if problem_seq is None else int(cast(int, problem_seq)),
        problem=None if problem is None else str(problem),
        key_id=str(key),
        signature=str(sig),
    )


def insert_sql() -> str:
    return f"INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) VALUES ({', '.join('?' * 11)})"


def row_of(checkpoint: Checkpoint) -> tuple[SQLValue, ...]:
    return (
        checkpoint.first_seq,
        checkpoint.last_seq,
        checkpoint.count,
        checkpoint.first_ts,
        checkpoint.last_ts,
        checkpoint.last_hash,
        checkpoint.pruned_at,
        checkpoint.problem_seq,
        checkpoint.problem,
        checkpoint.key_id,
        checkpoint.signature,
    )


SIGNATURE_VERIFIED = "verified"
SIGNATURE_UNCHECKED = "unchecked"
SIGNATURE_BAD = "bad"


@dataclass(frozen=True, slots=True)
class PrunedPrefix:
    """What `verify` says about the pruned prefix: the checkpoint and whether it verified."""

    checkpoint: Checkpoint
    signature_state: str  # SIGNATURE_VERIFIED, SIGNATURE_UNCHECKED or SIGNATURE_BAD
    note: str | None = None  # why it is bad or unchecked

    def line(self) -> str:
        """One line for people: "entries 1-5000 pruned on …, checkpoint verified"."""
        cp = self.checkpoint
        span = (
            f"entry {cp.first_seq}"
            if cp.first_seq == cp.last_seq
            else (f"entries {cp.first_seq}-{cp.last_seq}")
        )
        text = f"{span} pruned on {_when(cp.pruned_at)} ({cp.count} from {_when(cp.first_ts)}"
        text += f" to {_when(cp.last_ts)}), "
        if self.signature_state == SIGNATURE_VERIFIED:
            return text + "checkpoint verified"
        if self.signature_state == SIGNATURE_UNCHECKED:
            return text + f"checkpoint signature NOT checked: {self.note}"
        return text + f"BAD checkpoint: {self.note}"

    def problem(self) -> tuple[int | None, str] | None:
        """(first bad seq, why) when the pruned prefix does not verify, else None."""
        cp = self.checkpoint
        if self.signature_state == SIGNATURE_BAD:
            return None, (
                f"bad checkpoint: the checkpoint of pruned entries {cp.first_seq}-{cp.last_seq} "
                f"does not verify: {self.note}"
            )
        if cp.problem is not None:
            return cp.problem_seq, (
                f"found when entries up to {cp.last_seq} were pruned on {_when(cp.pruned_at)}: "
                f"{cp.problem}"
            )
        return None


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def check_checkpoint(checkpoint: Checkpoint, key_path: Path | None) -> PrunedPrefix:
    """Check `checkpoint`'s signature with the key in `key_path`. A key that exists but this
    user may not read leaves the signature unchecked (said so); a missing key is bad: without
    it nobody can tell a checkpoint from a forgery."""
    if key_path is None:
        return PrunedPrefix(checkpoint, SIGNATURE_UNCHECKED, "no key file to check it with")
    try:
        key = read_key(key_path)
    except FileNotFoundError:
        return PrunedPrefix(
            checkpoint, SIGNATURE_BAD, f"the key file {key_path} is missing (deleted)"
        )
    except PermissionError:
        return PrunedPrefix(
            checkpoint,
            SIGNATURE_UNCHECKED,
            f"cannot read the key file {key_path} (run as root or as the daemon's user)",
        )
    except StoreError as exc:
        return PrunedPrefix(checkpoint, SIGNATURE_BAD, str(exc))
    problem = signature_problem(key, checkpoint)
    if problem is not None:
        return PrunedPrefix(checkpoint, SIGNATURE_BAD, problem)
    return PrunedPrefix(checkpoint, SIGNATURE_VERIFIED)
