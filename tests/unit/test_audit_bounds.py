"""One audit entry is bounded whatever its caller passes: a refused admin call from any peer
cannot grow the store by more than a few KiB, and the entry still verifies."""

from __future__ import annotations

import json
from typing import Any

from daemoneye.engine import audit
from daemoneye.engine.audit_detail import MAX_DETAIL_BYTES, MORE_KEY, bounded_detail
from daemoneye.store import Store

MIB = 1024 * 1024


def refusal(params: Any) -> dict[str, Any]:
    """The detail the daemon audits for a refused admin call (daemon/service.py)."""
    return {
        "method": "alerts.ack",
        "params": params,
        "outcome": "refused: not an admin",
        "client": "attacker",
    }


def stored_detail_bytes(store: Store) -> int:
    rows = store.fetch_rows("SELECT length(CAST(detail AS BLOB)) FROM audit_log")
    return max(int(str(row[0])) for row in rows)


def test_a_refused_call_with_a_1_mib_param_is_stored_within_the_cap_and_verifies(
    store: Store,
) -> None:
    entry = audit.record(store, "admin.alerts.ack", "uid 65534 pid 9", refusal({"id": "A" * MIB}))

    assert stored_detail_bytes(store) <= MAX_DETAIL_BYTES
    assert audit.verify(store).intact
    detail = entry.detail_dict()
    kept = detail["params"]["id"]
    assert kept.startswith("AAAA") and kept.endswith(f"…[{MIB} chars, truncated]")
    assert detail["outcome"] == "refused: not an admin"  # what matters is still there


def test_many_params_and_deep_nesting_are_bounded_without_recursion(store: Store) -> None:
    deep: Any = "bottom"
    for _ in range(100_000):  # deeper than the interpreter's recursion limit
        deep = [deep]
    wide = {f"k{n}": "v" * 1000 for n in range(100_000)}
    audit.record(store, "admin.rules.enable", "uid 1000 pid 2", refusal({"a": deep, "b": wide}))
    audit.record(store, "admin.rules.enable", "uid 1000 pid 2", refusal([wide] * 1000))

    assert stored_detail_bytes(store) <= MAX_DETAIL_BYTES
    assert audit.verify(store).intact
    first = audit.entries(store)[0].detail_dict()
    nested = first["params"]["a"]
    assert nested[0][0] == "<list of 1 items>"  # flattened below the depth cap
    assert MORE_KEY in first["params"]["b"]  # the cut is visible


def test_the_actor_and_multibyte_text_are_bounded_too(store: Store) -> None:
    entry = audit.record(store, "admin.test", "uid 0 pid 1 " + "é" * MIB, {"t": "€\udc80" * MIB})
    assert len(entry.actor) < 300 and f"{MIB + 12} chars, truncated" in entry.actor
    assert stored_detail_bytes(store) <= MAX_DETAIL_BYTES
    assert audit.verify(store).intact


def test_small_details_are_stored_unchanged() -> None:
    detail = {"alert_id": 7, "title": "x" * 500, "nested": {"z": [1, 2.5, None]}}
    assert json.loads(bounded_detail(detail)) == detail


def test_huge_integers_are_noted_not_printed() -> None:
    assert json.loads(bounded_detail({"n": 1 << 4000})) == {"n": "<integer of 4001 bits>"}


def test_a_refused_callers_values_are_not_kept_only_their_names_and_sizes() -> None:
    from daemoneye.daemon.service import _shapes

    shapes = _shapes({"id": "ATTACKER TEXT " * 100, "n": 7, "k" * 500: [1, 2]})
    assert all("ATTACKER" not in value for value in shapes.values())
    assert shapes["id"] == "str, 1400 chars" and shapes["n"] == "int, 1 chars"
    assert max(len(name) for name in shapes) == 64
