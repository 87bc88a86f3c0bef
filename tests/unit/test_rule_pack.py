"""The built-in rule pack: every rule loads, carries ATT&CK tags, and names exactly the process
instances its fixtures say it must — both per tick (shadow tables) and in a full evaluation."""

from __future__ import annotations

import json
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemoneye.collector.net_tables import scope_of
from daemoneye.engine.evaluator import Evaluator
from daemoneye.engine.rule_loader import RuleSet, load_rules
from daemoneye.models import (
    Connection,
    ConnectionsDelta,
    ConnectionStats,
    ProcessEvent,
    ProcessKey,
    ProcessRecord,
    ScanDelta,
    ScanStats,
)
from daemoneye.paths import BUILTIN_RULES_DIR
from daemoneye.store import Store
from daemoneye.store.connections import write_delta

FIXTURES = Path(__file__).parent / "fixtures" / "rules"
ATTACK_ID = r"T\d{4}(\.\d{3})?"

GRANDPARENT_PID, PARENT_PID, SIBLING_PID, SUBJECT_PID = 400, 500, 600, 700
PARENT_START, SUBJECT_START = 100.0, 200.0


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.toml"))


def cases() -> Iterator[Any]:
    for path in fixture_files():
        data = tomllib.loads(path.read_text())
        for case in data["case"]:
            yield pytest.param(data["rule"], case, id=f"{data['rule']}: {case['name']}")


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    return load_rules([BUILTIN_RULES_DIR])


# The context fields a case may set (models.py); `environment` is a table of variables.
CONTEXT_FIELDS = (
    "container_runtime",
    "container_id",
    "unit",
    "ns_foreign",
    "tty",
    "loginuid",
    "stdin",
    "stdout",
    "stderr",
)


def record(spec: dict[str, Any], pid: int, start_time: float, ppid: int) -> ProcessRecord:
    name = spec["name"]
    environment = spec.get("environment")
    argv = tuple(spec["argv"]) if "argv" in spec else tuple(shlex.split(spec.get("cmd", name)))
    ended = spec.get("ended", False)
    return ProcessRecord(
        pid=pid,
        ppid=spec.get("ppid", ppid),
        start_time=start_time,
        name=name,
        exe=spec.get("exe", None if "argv" in spec and not argv else f"/usr/bin/{name}"),
        cmdline=argv,
        cwd=spec.get("cwd", "/"),
        uid=spec.get("uid", 0 if spec.get("user", "root") == "root" else 1000),
        user=spec.get("user", "root"),
        gid=0,
        state="S",
        threads=1,
        rss=4096,
        cpu_percent=0.0,
        exe_sha256=None,
        exe_deleted=spec.get("exe_deleted", False),
        first_seen=start_time,
        last_seen=start_time,
        ended_at=start_time + 1.0 if ended else None,
        environment=None if environment is None else json.dumps(environment),
        **{name: spec[name] for name in CONTEXT_FIELDS if name in spec},
    )


def tick(ts: float, added: list[ProcessRecord], events: tuple[ProcessEvent, ...] = ()) -> ScanDelta:
    return ScanDelta(ts, tuple(added), (), (), (), events, ScanStats(0.0, 0, 0, 0, 0, 0, 0))


def change(spec: dict[str, Any], subject: ProcessRecord) -> ProcessEvent:
    """A change after start of the subject (`events` in a case): kind, old, new, setid."""
    return ProcessEvent(
        ts=subject.start_time + 0.25,
        kind=spec["kind"],
        pid=subject.pid,
        start_time=subject.start_time,
        ppid=subject.ppid,
        exe=subject.exe,
        source=spec.get("source", "netlink"),
        old_value=spec.get("old"),
        new_value=spec.get("new"),
        exe_setid=spec.get("setid"),
    )


def world(store: Store, case: dict[str, Any]) -> ProcessKey:
    """Write the case's parent a tick before, then its siblings and subject; the subject's
    key."""
    parent_pid = grandparent_pid = 1
    if "grandparent" in case:
        grandparent = record(case["grandparent"], GRANDPARENT_PID, PARENT_START - 1, 1)
        store.apply(tick(PARENT_START - 1, [grandparent]))
        grandparent_pid = GRANDPARENT_PID
    if "parent" in case:
        parent = record(case["parent"], PARENT_PID, PARENT_START, grandparent_pid)
        store.apply(tick(PARENT_START, [parent]))
        parent_pid = PARENT_PID
    siblings = [
        record(spec, SIBLING_PID + i, SUBJECT_START, parent_pid)
        for i, spec in enumerate(case.get("siblings", []))
    ]
    subject = record(case["process"], SUBJECT_PID, SUBJECT_START + 0.5, parent_pid)
    events = tuple(change(spec, subject) for spec in case.get("events", []))
    store.apply(tick(SUBJECT_START + 1, [*siblings, subject], events))
    held = [connection(spec, subject.key, i) for i, spec in enumerate(case.get("connections", []))]
    if held:
        with store.transaction("fixture connections") as conn:
            write_delta(conn, ConnectionsDelta(SUBJECT_START + 1, tuple(held), (), (), NO_STATS))
    return subject.key


NO_STATS = ConnectionStats(0.0, 0, 0, 0, 0, 0, 0, 0)


def connection(spec: dict[str, Any], key: ProcessKey, index: int) -> Connection:
    """A socket held by the subject: `remote` "ADDR:PORT" (default none), `local` likewise,
    `protocol` (tcp), `state` (ESTABLISHED), `direction` (outbound); the scope is derived."""
    remote_address, _, remote_port = spec.get("remote", "").rpartition(":")
    local_address, _, local_port = spec.get("local", "10.0.0.5:40000").rpartition(":")
    return Connection(
        pid=key.pid,
        start_time=key.start_time,
        protocol=spec.get("protocol", "tcp"),
        local_address=local_address or None,
        local_port=int(local_port) if local_port else None,
        remote_address=remote_address or None,
        remote_port=int(remote_port) if remote_port else None,
        state=spec.get("state", "ESTABLISHED"),
        inode=1000 + index,
        netns=1,
        direction=spec.get("direction", "outbound"),
        remote_scope=scope_of(remote_address or None),
        first_seen=SUBJECT_START + 1,
        last_seen=SUBJECT_START + 1,
    )


@pytest.mark.parametrize(("rule_id", "case"), list(cases()))
def test_builtin_rule_against_its_fixture(
    rule_id: str, case: dict[str, Any], pack: RuleSet, store: Store
) -> None:
    rule = pack.get(rule_id)
    assert rule is not None, f"fixture for unknown rule {rule_id}"
    evaluator = Evaluator(store.path, [rule])
    try:
        key = world(store, case)
        per_tick = evaluator.evaluate_changes([key])
        full = evaluator.evaluate_full()
    finally:
        evaluator.close()
    assert per_tick.failures == () and full.failures == ()
    for result in (per_tick, full):
        named = {(d.pid, d.start_time) for d in result.detections}
        assert ((key.pid, key.start_time) in named) is case["match"], result.detections
    if case["match"]:
        (detection,) = [d for d in per_tick.detections if d.pid == key.pid]
        assert "{" not in detection.title and detection.severity == rule.severity


def test_the_pack_loads_cleanly_and_is_big_enough(pack: RuleSet) -> None:
    assert pack.problems == ()
    assert len(pack.rules) >= 25
    assert all(rule.enabled and rule.description.strip() for rule in pack.rules)


def test_every_rule_carries_attack_tags(pack: RuleSet) -> None:
    import re

    untagged = [r.id for r in pack.rules if not any(re.fullmatch(ATTACK_ID, t) for t in r.tags)]
    assert untagged == []


def test_every_rule_has_a_positive_and_a_negative_fixture(pack: RuleSet) -> None:
    by_rule: dict[str, set[bool]] = {}
    for path in fixture_files():
        data = tomllib.loads(path.read_text())
        assert path.stem == data["rule"], f"{path.name} describes {data['rule']}"
        by_rule[data["rule"]] = {bool(case["match"]) for case in data["case"]}
    ids = {rule.id for rule in pack.rules}
    assert set(by_rule) == ids, (
        f"no fixture: {sorted(ids - set(by_rule))}, no rule: {sorted(set(by_rule) - ids)}"
    )
    one_sided = [rule_id for rule_id, kinds in by_rule.items() if kinds != {True, False}]
    assert one_sided == []


# Command lines shaped to make backtracking patterns slow, each 64 KiB long, under names the
# pack's cheap LIKE/GLOB pre-filters let through to its REGEXPs.
CRAFTED_CMDLINES = [
    " -" + "c" * 65536,
    "a" * 65536 + "!",
    " " * 65536 + "x",
    "-i " * 21845 + ">",
    "/dev/tcp/" + "/" * 65536,
    "curl " + "| " * 32768,
    "stratum+tcp://" + "-" * 65536,
    "bash -c " + "sh" * 32768,
    ">" * 65536 + " authorized_keys /etc/ld.so.preload",
    "-c " + ">" * 65536 + "x",
]
CRAFTED_NAMES = ("bash", "sh", "nc", "python3", "curl", "socat", "perl", "sudo", "chmod", "dd")


# A hang guard, not a timing assertion: on a backtracking engine these rows take minutes.
@pytest.mark.timeout(120)
def test_the_pack_is_not_aborted_by_crafted_64_kib_command_lines(
    pack: RuleSet, store: Store
) -> None:
    """A local user's crafted command lines must not make any built-in rule hit its budget
    (which, three times in a row, would switch the rule off)."""
    records = [
        ProcessRecord(
            pid=1000 + i,
            ppid=1,
            start_time=300.0,
            name=name,
            exe=f"/tmp/{name}",
            cmdline=(name, *cmdline.split(" ", 2)),
            cwd="/tmp",
            uid=1000,
            user="mallory",
            gid=1000,
            state="S",
            threads=1,
            rss=4096,
            cpu_percent=0.0,
            exe_sha256=None,
            exe_deleted=False,
            first_seen=300.0,
            last_seen=300.0,
        )
        for i, (name, cmdline) in enumerate(
            (name, cmdline) for name in CRAFTED_NAMES for cmdline in CRAFTED_CMDLINES
        )
    ]
    evaluator = Evaluator(store.path, pack.rules)
    try:
        store.apply(tick(301.0, records))
        per_tick = evaluator.evaluate_changes([r.key for r in records])
        full = evaluator.evaluate_full()
    finally:
        evaluator.close()
    assert [f for f in per_tick.failures if f.kind != "truncated"] == []
    assert [f for f in full.failures if f.kind != "truncated"] == []
