"""Audit log retention: the oldest entries are pruned under a signed checkpoint, the rest of the
chain still verifies from it, and every way of abusing pruning is named by `verify`."""

from __future__ import annotations

import dataclasses
import os
import secrets
import stat
from pathlib import Path

import apsw
import pytest

from daemoneye import cli
from daemoneye.config.schema import StoreConfig
from daemoneye.engine import audit
from daemoneye.engine.audit_checkpoint import (
    CHECKPOINT_COLUMNS,
    SIGNATURE_BAD,
    SIGNATURE_UNCHECKED,
    SIGNATURE_VERIFIED,
    key_path_for,
    latest,
    row_of,
    signed,
)
from daemoneye.engine.audit_prune import audit_pruner
from daemoneye.errors import StoreError
from daemoneye.store import Store, open_readonly

DAY = 86400.0
T0 = 1_000_000.0  # entry n is written at T0 + n


def fill(store: Store, first: int, last: int, *, size: int = 40) -> None:
    for n in range(first, last + 1):
        audit.record(store, "admin.test", f"uid 0 pid {n}", {"n": n, "pad": "p" * size}, ts=T0 + n)


def prune(store: Store, *, now: float, age: float = 90 * DAY, max_bytes: int = 1 << 30) -> int:
    pruner = audit_pruner(store.path, StoreConfig(audit_retention=age, audit_max_bytes=max_bytes))
    return store.retention(3650 * DAY, 1 << 40, now, prune_audit=pruner).audit_entries_pruned


def after_day(n: int) -> float:
    """A `now` at which entries 1..n are older than one day and n+1.. are not."""
    return T0 + n + 0.5 + DAY


def tamper(path: Path, *statements: str) -> None:
    """What someone with write access to the database (not to the key) can do."""
    conn = apsw.Connection(str(path))
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.close()


def test_age_pruning_writes_a_signed_checkpoint_and_the_rest_still_verifies(
    store: Store,
) -> None:
    fill(store, 1, 50)

    assert prune(store, now=after_day(30), age=DAY) == 30

    assert [e.seq for e in audit.entries(store)] == list(range(31, 51))
    result = audit.verify(store)
    assert (result.intact, result.entries) == (True, 20)
    assert result.pruned is not None and result.pruned.signature_state == SIGNATURE_VERIFIED
    line = result.pruned.line()
    assert line.startswith("entries 1-30 pruned on ") and line.endswith("checkpoint verified")
    assert "(30 from " in line
    key_file = key_path_for(store.path)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.stat().st_uid == os.geteuid()
    # Appending continues the chain, and the next prune extends the one checkpoint.
    fill(store, 51, 60)
    assert prune(store, now=after_day(55), age=DAY) == 25
    checkpoint = latest(store)
    assert checkpoint is not None
    assert (checkpoint.first_seq, checkpoint.last_seq, checkpoint.count) == (1, 55, 55)
    assert store.fetch_rows("SELECT count(*) FROM audit_checkpoints") == [(1,)]
    assert audit.verify(store).intact


def test_the_newest_entry_is_never_pruned(store: Store) -> None:
    fill(store, 1, 5)
    assert prune(store, now=T0 + 1000 * DAY, age=DAY) == 4
    assert [e.seq for e in audit.entries(store)] == [5]
    audit.record(store, "daemon.start", "daemon", {})
    assert audit.verify(store).intact


def test_size_pruning_brings_the_audit_log_under_its_own_bound(store: Store) -> None:
    fill(store, 1, 3000, size=1000)
    pruned = prune(store, now=T0 + 3001, max_bytes=1024 * 1024)
    assert 0 < pruned < 3000
    audit_bytes = store.fetch_rows(
        "SELECT sum(pgsize) FROM dbstat('main', 1) WHERE name = 'audit_log'"
    )[0][0]
    assert int(str(audit_bytes)) <= 1024 * 1024
    assert audit.verify(store).intact
    assert audit.entries(store, limit=1)[0].seq == pruned + 1


def test_deleting_more_entries_after_pruning_names_the_first_missing(
    store: Store, store_path: Path
) -> None:
    fill(store, 1, 20)
    prune(store, now=after_day(10), age=DAY)
    tamper(store_path, "DELETE FROM audit_log WHERE seq <= 13")
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq) == (False, 11)
    assert "entries 11-13 are missing (deleted)" in str(result.reason)


def test_an_edited_checkpoint_is_a_bad_checkpoint(store: Store, store_path: Path) -> None:
    fill(store, 1, 20)
    prune(store, now=after_day(10), age=DAY)
    # Hide entries 11-13 by claiming they were pruned too, with entry 13's hash.
    entry_13 = audit.entries(store, after_seq=12, limit=1)[0]
    tamper(
        store_path,
        "DELETE FROM audit_log WHERE seq <= 13",
        f"UPDATE audit_checkpoints SET last_seq = 13, count = 13, last_hash = '{entry_13.hash}'",
    )
    result = audit.verify(store)
    assert result.intact is False
    assert str(result.reason).startswith("bad checkpoint: ")
    assert "signature does not match" in str(result.reason)
    assert result.pruned is not None and result.pruned.signature_state == SIGNATURE_BAD


def test_a_checkpoint_forged_with_another_key_is_a_bad_checkpoint(
    store: Store, store_path: Path
) -> None:
    fill(store, 1, 20)
    prune(store, now=after_day(10), age=DAY)
    real = latest(store)
    assert real is not None
    # The forger signs, with a key of their own, a checkpoint that hides entries 11-13.
    entry_13 = audit.entries(store, after_seq=12, limit=1)[0]
    forged = signed(
        secrets.token_bytes(32),
        dataclasses.replace(
            real, last_seq=13, count=13, last_hash=entry_13.hash, last_ts=entry_13.ts
        ),
    )
    values = ", ".join(repr(v) if v is not None else "NULL" for v in row_of(forged))
    tamper(
        store_path,
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_log WHERE seq <= 13",
        f"INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) VALUES ({values})",
    )
    result = audit.verify(store)
    assert result.intact is False
    assert "bad checkpoint" in str(result.reason) and "names key" in str(result.reason)
    # Nor will the daemon re-sign it: pruning stops with an error.
    pruner = audit_pruner(store.path, StoreConfig(audit_retention=DAY))
    later = store.retention(3650 * DAY, 1 << 40, after_day(18), prune_audit=pruner)
    assert later.audit_entries_pruned == 0 and "names key" in str(later.audit_error)
    # A prune on a key-less store (key file deleted) would sign with a new key: also refused.
    key_path_for(store_path).unlink()
    assert "bad checkpoint" in str(audit.verify(store).reason)


def test_a_deleted_checkpoint_leaves_the_pruned_entries_missing(
    store: Store, store_path: Path
) -> None:
    fill(store, 1, 20)
    prune(store, now=after_day(10), age=DAY)
    tamper(store_path, "DELETE FROM audit_checkpoints")
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq) == (False, 1)
    assert "entries 1-10 are missing (deleted)" in str(result.reason)


def test_a_missing_key_is_bad_and_an_unreadable_one_is_said_unchecked(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store, 1, 20)
    prune(store, now=after_day(10), age=DAY)
    key_file = key_path_for(store.path)

    def denied(path: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("daemoneye.engine.audit_checkpoint.read_key", denied)
    unchecked = audit.verify(store)
    assert unchecked.intact and unchecked.pruned is not None
    assert unchecked.pruned.signature_state == SIGNATURE_UNCHECKED
    assert "signature NOT checked: cannot read the key file" in unchecked.pruned.line()
    monkeypatch.undo()
    key_file.unlink()
    missing = audit.verify(store)
    assert missing.intact is False and "is missing (deleted)" in str(missing.reason)


def test_tampering_before_pruning_is_carried_by_the_checkpoint_not_laundered(
    store: Store, store_path: Path
) -> None:
    fill(store, 1, 20)
    tamper(
        store_path,
        "UPDATE audit_log SET actor = 'nobody' WHERE seq = 3",
        "DELETE FROM audit_log WHERE seq = 7",
    )
    prune(store, now=after_day(10), age=DAY)
    assert audit.entries(store, limit=1)[0].seq == 11
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq) == (False, 3)
    assert "found when entries up to 10 were pruned" in str(result.reason)
    assert "entry 3 (admin.test by nobody" in str(result.reason)


def test_a_bad_checkpoint_stops_pruning_instead_of_being_re_signed(
    store: Store, store_path: Path
) -> None:
    fill(store, 1, 20)
    prune(store, now=after_day(10), age=DAY)
    tamper(store_path, "UPDATE audit_checkpoints SET count = 1")
    pruner = audit_pruner(store.path, StoreConfig(audit_retention=DAY))
    result = store.retention(3650 * DAY, 1 << 40, after_day(15), prune_audit=pruner)
    assert result.audit_entries_pruned == 0
    assert "audit log not pruned" in str(result.audit_error)
    assert audit.entries(store, limit=1)[0].seq == 11
    assert "bad checkpoint" in str(audit.verify(store).reason)


def test_code_may_delete_only_entries_a_checkpoint_covers(store: Store) -> None:
    fill(store, 1, 5)
    with pytest.raises(StoreError, match="append-only"), store.transaction("t") as conn:
        conn.execute("DELETE FROM audit_log WHERE seq = 1")
    assert audit.verify(store).intact


def test_a_key_file_others_can_read_is_refused_for_signing(store: Store) -> None:
    fill(store, 1, 20)
    prune(store, now=after_day(5), age=DAY)
    key_path_for(store.path).chmod(0o644)
    pruner = audit_pruner(store.path, StoreConfig(audit_retention=DAY))
    result = store.retention(3650 * DAY, 1 << 40, after_day(15), prune_audit=pruner)
    assert result.audit_entries_pruned == 0
    assert str(result.audit_error).startswith("audit log not pruned: ")
    assert "readable or writable by others" in str(result.audit_error)


def test_cli_verify_says_what_was_pruned(
    store: Store, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(store, 1, 20)
    prune(store, now=after_day(10), age=DAY)
    code = cli.main(["--db", str(store_path), "audit", "verify"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == "10 entries, intact"
    assert out[1].startswith("entries 1-10 pruned on ")
    assert out[1].endswith(", checkpoint verified")
    tamper(store_path, "UPDATE audit_checkpoints SET first_ts = 0")
    code = cli.main(["--db", str(store_path), "audit", "verify"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith("10 entries, NOT intact: bad checkpoint: ")
    assert "BAD checkpoint" in out[1]


def test_verify_over_a_read_only_store_checks_the_key_and_the_ipc_model_says_so(
    store: Store,
) -> None:
    fill(store, 1, 20)
    prune(store, now=after_day(10), age=DAY)
    with open_readonly(store.path) as reader:  # what the daemon's audit.verify reads with
        model = audit.verify(reader).as_model()
    assert model.ok and model.entries == 10
    assert str(model.pruned).startswith("entries 1-10 pruned on ")
    assert str(model.pruned).endswith("checkpoint verified")


def test_a_version_2_store_without_its_delete_guard_still_migrates(tmp_path: Path) -> None:
    from daemoneye.store.schema import MIGRATIONS

    path = tmp_path / "v2.db"
    conn = apsw.Connection(str(path))
    for migration in MIGRATIONS[:2]:
        conn.execute(migration.sql)
        conn.execute(f"PRAGMA user_version = {migration.version}")
    conn.execute("DROP TRIGGER audit_log_no_delete")  # tampered with before the upgrade
    conn.close()
    with Store.open(path) as store:
        fill(store, 1, 3)
        with pytest.raises(StoreError, match="append-only"), store.transaction("t") as c:
            c.execute("DELETE FROM audit_log WHERE seq = 1")
