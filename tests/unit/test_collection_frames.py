"""The agent's side of procmond's frames: a restarted procmond's full scan, in pieces,
reconciles the store — known instances keep their first sighting, an exec'd one is exec'd,
one that ended meanwhile is ended, a new one is added — and the gap is counted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import apsw
import pytest

from daemoneye.config.schema import Config
from daemoneye.daemon.collection import Collection, merge_deltas
from daemoneye.daemon.startup_evaluation import StartupProgress
from daemoneye.models import ProcessEvent, ProcessKey, ProcessRecord, ScanDelta, ScanStats
from daemoneye.procmond import frames
from daemoneye.store.db import Store

HELLO = frames.Hello(frames.PAIR_VERSION, 10, 0, 1.0, "netlink", "", True, "")


def record(pid: int, argv: tuple[str, ...], seen: float) -> ProcessRecord:
    return ProcessRecord(
        pid=pid,
        ppid=1,
        start_time=1000.0 + pid,
        name=argv[0].rsplit("/", 1)[-1],
        exe=argv[0],
        cmdline=argv,
        cwd="/",
        uid=0,
        user="root",
        gid=0,
        state="S",
        threads=1,
        rss=4096,
        cpu_percent=0.0,
        exe_sha256=None,
        exe_deleted=False,
        first_seen=seen,
        last_seen=seen,
    )


def full_scan(ts: float, *records: ProcessRecord, more: bool = False) -> frames.Scan:
    events = tuple(
        ProcessEvent(ts, "start", r.pid, r.start_time, 1, r.exe, r.cmdline) for r in records
    )
    stats = ScanStats(0.01, len(records), len(records), 0, 0, 0, 0)
    return frames.Scan(ScanDelta(ts, records, (), (), (), events, stats), True, (), more=more)


@pytest.fixture
def collection(tmp_path: Path) -> Collection:
    store = Store.open(tmp_path / "d.db")
    return Collection(store, Config(), mode="user", event_source="starting")


def test_a_restarted_procmond_full_scan_in_pieces_reconciles(collection: Collection) -> None:
    stays = record(11, ("/bin/sleep", "100"), 50.0)
    execs = record(12, ("/bin/sh", "-c", "x"), 50.0)
    ends = record(13, ("/bin/cat",), 50.0)
    collection.apply_frames([HELLO, full_scan(50.0, stays, execs, ends)])
    assert set(collection.mirror) == {stays.key, execs.key, ends.key}

    collection.procmond_lost("procmond closed the pair")
    new_procmond = [
        HELLO,
        full_scan(90.0, dataclasses.replace(stays, first_seen=90.0, last_seen=90.0), more=True),
        full_scan(
            90.0,
            dataclasses.replace(execs, cmdline=("/bin/ls",), exe="/bin/ls", first_seen=90.0),
            record(14, ("/bin/true",), 90.0),
        ),
    ]
    applied = collection.apply_frames(new_procmond)

    assert applied.scans == 1  # the pieces are one scan
    live = collection.store.live_processes()
    assert set(live) == {stays.key, execs.key, ProcessKey(14, 1014.0)}
    assert live[stays.key].first_seen == 50.0  # known before: its first sighting is kept
    assert live[execs.key].cmdline == ("/bin/ls",)
    assert live[execs.key].first_seen == 50.0
    assert collection.mirror == live
    assert collection.gap_s_total > 0.0
    assert collection.collector_down is None
    reader = apsw.Connection(str(collection.store.path), flags=apsw.SQLITE_OPEN_READONLY)
    facts = [(kind, pid) for kind, pid in reader.execute("SELECT kind, pid FROM process_events")]
    reader.close()
    assert ("exit", 13) in facts  # ended while no procmond ran: ended by the full scan
    assert ("start", 14) in facts
    assert ("exec", 12) in facts  # procmond's 'start' of a known instance with a new argv
    assert [f for f in facts if f[1] == 11] == [("start", 11)]  # its second 'start' dropped


def test_a_full_scan_cut_short_ends_nothing(collection: Collection) -> None:
    first = record(21, ("/bin/sleep", "1"), 10.0)
    second = record(22, ("/bin/sleep", "2"), 10.0)
    collection.apply_frames([HELLO, full_scan(10.0, first, second)])
    collection.procmond_lost("procmond closed the pair")
    collection.apply_frames([HELLO, full_scan(20.0, first, more=True)])
    collection.procmond_lost("procmond closed the pair again")
    assert set(collection.store.live_processes()) == {first.key, second.key}


def test_retention_waits_while_the_startup_runs_the_rules_over_history(tmp_path: Path) -> None:
    """History a rule has yet to see at the start is not cleaned away before its turn: the
    first scan's retention pass waits until the startup's full evaluation is done."""
    config = dataclasses.replace(
        Config(), store=dataclasses.replace(Config().store, retention=60.0)
    )
    store = Store.open(tmp_path / "d.db")
    collection = Collection(store, config, mode="user", event_source="starting")
    old = record(11, ("/bin/sleep", "42"), 50.0)
    collection.apply_frames([HELLO, full_scan(50.0, old)])
    collection.apply_frames([frames.Scan(_ended(1000.0, old), False, ())])
    assert _stored_pids(store) == {11}
    progress = StartupProgress(1)
    collection.startup_evaluation = progress
    collection.apply_frames([frames.Scan(_ended(2000.0), False, ())])
    assert _stored_pids(store) == {11}  # past its retention, kept while held
    progress.rule_ended()
    progress.end()
    collection.apply_frames([frames.Scan(_ended(4000.0), False, ())])
    assert _stored_pids(store) == set()


def _ended(ts: float, *records: ProcessRecord) -> ScanDelta:
    return ScanDelta(
        ts, (), (), (), tuple(r.key for r in records), (), ScanStats(0.01, 0, 0, 0, 0, 0, 0)
    )


def _stored_pids(store: Store) -> set[int]:
    return {int(pid) for (pid,) in store.fetch_rows("SELECT pid FROM processes")}  # type: ignore[arg-type]


def events_frame(
    ts: float,
    *,
    added: tuple[ProcessRecord, ...] = (),
    updated: tuple[ProcessRecord, ...] = (),
    execed: tuple[ProcessRecord, ...] = (),
    events: tuple[ProcessEvent, ...] = (),
) -> frames.Events:
    stats = ScanStats(0.0, 0, 0, 0, 0, 0, 0)
    return frames.Events(ScanDelta(ts, added, updated, execed, (), events, stats))


def stored_name(collection: Collection, rec: ProcessRecord) -> str:
    with apsw.Connection(str(collection.store.path), flags=apsw.SQLITE_OPEN_READONLY) as db:
        name = db.execute(
            "SELECT name FROM processes WHERE pid = ? AND start_time = ?",
            (rec.pid, rec.start_time),
        ).get
    return str(name)


def test_a_rename_in_the_second_of_two_queued_event_frames_reaches_the_process_row(
    collection: Collection,
) -> None:
    """Under load the agent takes several of procmond's EVENTS frames in one batch and writes
    them as one transaction. A rename's record (its event's `updated`) was dropped by that
    merge: the event was stored, the process row kept its old name (seen as a flaky
    integration test, one run in ten under load)."""
    shell = record(21, ("/usr/bin/python3", "step.py"), 50.0)
    collection.apply_frames([HELLO, full_scan(50.0, shell)])
    renamed = dataclasses.replace(shell, name="[kworker/0:1]", last_seen=51.0)
    rename = ProcessEvent(51.0, "rename", 21, shell.start_time, 1, shell.exe, shell.cmdline)
    newcomer = record(22, ("/bin/true",), 51.0)
    collection.apply_frames(
        [
            events_frame(50.5, added=(newcomer,)),
            events_frame(51.0, updated=(renamed,), events=(rename,)),
        ]
    )
    assert stored_name(collection, shell) == "[kworker/0:1]"
    assert stored_name(collection, newcomer) == "true"


def test_merged_event_frames_keep_each_instance_s_latest_record_in_its_first_kind() -> None:
    """Later records of an instance win; an instance added or exec'd earlier in the batch
    stays added or exec'd, with the later change in its record."""
    first = record(31, ("/bin/sh",), 60.0)
    second = record(32, ("/bin/sh",), 60.0)
    changed_first = dataclasses.replace(first, name="x", last_seen=61.0)
    changed_second = dataclasses.replace(second, uid=1000, last_seen=61.0)
    third = dataclasses.replace(record(33, ("/bin/sh",), 60.0), name="y")
    deltas = [
        events_frame(60.0, added=(first,), execed=(second,)),
        events_frame(61.0, updated=(changed_first, changed_second, third)),
    ]
    merged = merge_deltas([frame.delta for frame in deltas])
    assert merged.added == (changed_first,)
    assert merged.execed == (changed_second,)
    assert merged.updated == (third,)
