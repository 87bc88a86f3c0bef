"""The audit log's hash chain: what it records, and that `verify` names the first entry that
was edited, deleted, reordered or cut off the end."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from pathlib import Path

import apsw
import pytest

from daemoneye.engine import audit
from daemoneye.engine.audit import GENESIS_HASH, HEAD_META_KEY, VerifyResult
from daemoneye.errors import StoreError
from daemoneye.store import Store


def fill(store: Store, count: int) -> None:
    for n in range(1, count + 1):
        audit.record(
            store, "admin.test", f"uid 0 pid {n}", {"n": n, "text": f"entry {n}"}, ts=1000.0 + n
        )


def tamper(path: Path, *statements: str) -> None:
    """What someone with write access to the file can do: drop the guard triggers, edit."""
    conn = apsw.Connection(str(path))
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.close()


def test_an_untouched_chain_is_intact_and_follows_the_documented_encoding(store: Store) -> None:
    fill(store, 5)
    assert audit.verify(store) == VerifyResult(entries=5, intact=True)
    entries = audit.entries(store)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    for previous, entry in itertools.pairwise(entries):
        assert entry.prev_hash == previous.hash
    # Recomputed independently from the spec: SHA-256 over sorted-key compact UTF-8 JSON.
    first = entries[0]
    canonical = json.dumps(
        {
            "seq": 1,
            "ts": 1001.0,
            "kind": "admin.test",
            "actor": "uid 0 pid 1",
            "detail": {"n": 1, "text": "entry 1"},
            "prev_hash": GENESIS_HASH,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert first.hash == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    head = json.loads(str(store.get_meta(HEAD_META_KEY)))
    assert head == {"seq": 5, "hash": entries[-1].hash}


def test_empty_log_is_intact(store: Store) -> None:
    assert audit.verify(store) == VerifyResult(entries=0, intact=True)


def test_edited_entry_is_named(store: Store, store_path: Path) -> None:
    fill(store, 6)
    tamper(store_path, "UPDATE audit_log SET actor = 'uid 1000 pid 1' WHERE seq = 4")
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq, result.entries) == (False, 4, 6)
    assert "does not match its hash" in str(result.reason)


def test_edited_detail_is_named_even_if_only_reformatted(store: Store, store_path: Path) -> None:
    fill(store, 3)
    tamper(
        store_path,
        """UPDATE audit_log SET detail = '{"n": 2, "text": "entry 2"}'
                          WHERE seq = 2""",
    )
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq) == (False, 2)


def test_deleted_entry_is_named(store: Store, store_path: Path) -> None:
    fill(store, 6)
    tamper(store_path, "DELETE FROM audit_log WHERE seq IN (3, 4)")
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq, result.entries) == (False, 3, 4)
    assert "entries 3-4 are missing (deleted)" in str(result.reason)


def test_deleted_first_entry_is_named(store: Store, store_path: Path) -> None:
    fill(store, 3)
    tamper(store_path, "DELETE FROM audit_log WHERE seq = 1")
    assert audit.verify(store).first_bad_seq == 1


def test_deleted_entry_with_the_next_relinked_is_still_named(
    store: Store, store_path: Path
) -> None:
    """Deleting an entry and fixing the next one's prev_hash and hash leaves the seq gap."""
    fill(store, 5)
    entries = {e.seq: e for e in audit.entries(store)}
    nxt = entries[4]
    relinked = audit.entry_hash(
        nxt.seq, nxt.ts, nxt.kind, nxt.actor, json.loads(nxt.detail), entries[2].hash
    )
    tamper(
        store_path,
        "DELETE FROM audit_log WHERE seq = 3",
        f"UPDATE audit_log SET prev_hash = '{entries[2].hash}', hash = '{relinked}' WHERE seq = 4",
    )
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq) == (False, 3)


def test_reordered_entries_are_named(store: Store, store_path: Path) -> None:
    fill(store, 5)
    # Swap the contents of entries 2 and 3 (each keeps its own valid hash and link fields).
    tamper(
        store_path,
        "UPDATE audit_log SET seq = -2 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = -2",
    )
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq) == (False, 2)


def test_truncated_tail_is_caught_by_the_head_in_meta(store: Store, store_path: Path) -> None:
    fill(store, 6)
    tamper(store_path, "DELETE FROM audit_log WHERE seq >= 5")
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq, result.entries) == (False, 5, 4)
    assert "entries 5-6 are missing from the end (truncated)" in str(result.reason)
    # Later appends continue from the recorded head, so the truncation stays visible.
    fill(store, 2)
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq) == (False, 5)
    assert [e.seq for e in audit.entries(store)][-2:] == [7, 8]


def test_whole_log_deleted_is_caught_by_the_head(store: Store, store_path: Path) -> None:
    fill(store, 3)
    tamper(store_path, "DELETE FROM audit_log")
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq, result.entries) == (False, 1, 0)


def test_deleted_head_record_is_reported(store: Store, store_path: Path) -> None:
    fill(store, 3)
    tamper(store_path, f"DELETE FROM meta WHERE key = '{HEAD_META_KEY}'")
    result = audit.verify(store)
    assert not result.intact and result.first_bad_seq is None
    assert "head is missing" in str(result.reason)


def test_replaced_last_entry_disagrees_with_the_head(store: Store, store_path: Path) -> None:
    """A forged last entry with a correct link and hash is caught by the head."""
    fill(store, 3)
    entries = audit.entries(store)
    forged = audit.entry_hash(
        3, 1003.0, "admin.test", "uid 0 pid 3", {"n": 3, "text": "x"}, entries[1].hash
    )
    tamper(
        store_path,
        f"""UPDATE audit_log SET detail = '{{"n":3,"text":"x"}}',
                           hash = '{forged}' WHERE seq = 3""",
    )
    result = audit.verify(store)
    assert (result.intact, result.first_bad_seq) == (False, 3)
    assert "recorded as the head" in str(result.reason)


def test_the_table_refuses_updates_and_deletes_from_code(store: Store) -> None:
    fill(store, 1)
    with pytest.raises(StoreError, match="append-only"), store.transaction("t") as conn:
        conn.execute("DELETE FROM audit_log")
    assert audit.verify(store).intact


def test_unknown_kinds_and_appends_outside_a_transaction_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown audit kind"):
        audit.record(store, "alert.exploded", "daemon", {})
    with pytest.raises(ValueError, match="unknown audit kind"):
        audit.record(store, "admin.", "daemon", {})
    with pytest.raises(RuntimeError, match="inside a write transaction"):
        audit.append(apsw.Connection(str(store.path)), "daemon.start", "daemon", {}, 1.0)
    for kind in (
        "daemon.start",
        "daemon.stop",
        "ruleset.swapped",
        "ruleset.rejected",
        "admin.process.signal",
    ):
        audit.record(store, kind, "daemon", {"why": "test"})
    assert audit.verify(store).entries == 5


def test_detail_with_hostile_values_still_verifies(store: Store) -> None:
    audit.record(
        store,
        "admin.test",
        "uid 0 pid 1 \udcff",
        {
            "text": "a\udc80b\x00\u202e",
            "ratio": float("inf"),
            "nested": {"z": [1, 2.5, None]},
            "tuple": (1, "x"),
            "path": Path("/tmp"),
        },
        ts=1.0,
    )
    assert audit.verify(store).intact
    detail = audit.entries(store)[0].detail_dict()
    assert detail["ratio"] == "inf" and detail["path"] == "/tmp" and detail["tuple"] == [1, "x"]


def test_two_writers_appending_at_once_never_fork_the_chain(store_path: Path) -> None:
    Store.open(store_path).close()
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            with Store.open_existing(store_path) as own:
                for n in range(40):
                    audit.record(own, "admin.test", name, {"n": n})
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Store.open_existing(store_path) as check:
        assert audit.verify(check) == VerifyResult(entries=120, intact=True)
        assert [e.seq for e in audit.entries(check, limit=200)] == list(range(1, 121))


def test_verify_result_maps_to_the_ipc_model() -> None:
    model = VerifyResult(entries=3, intact=False, first_bad_seq=2, reason="x").as_model()
    assert (model.ok, model.entries, model.first_bad_id, model.reason) == (False, 3, 2, "x")
