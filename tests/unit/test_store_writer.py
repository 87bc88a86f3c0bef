"""The writer: one transaction per tick, process identity, hashes, reconciliation."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from daemoneye.errors import StoreError
from daemoneye.models import ExeHash, ProcessEvent, ProcessKey
from daemoneye.store import Store, open_readonly
from tests.unit.conftest import DeltaFactory, RecordFactory


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read with an independent connection, as a rule or the CLI would."""
    with open_readonly(path) as reader:
        return list(reader.query(sql).rows)


def test_added_process_is_live_with_exact_argv(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    argv = ("python3", "-c", "print('a  b')", "")
    store.apply(make_delta(10.0, added=[make_record(42, 5.0, cmdline=argv)]))

    [(cmdline, argv_json)] = rows(store.path, "SELECT cmdline, argv FROM live_processes")
    assert cmdline == "python3 -c print('a  b') "
    assert tuple(json.loads(str(argv_json))) == argv
    assert store.live_processes()[ProcessKey(42, 5.0)].cmdline == argv


def test_update_changes_only_the_dynamic_fields(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    original = make_record(42, 5.0)
    store.apply(make_delta(10.0, added=[original]))
    changed = make_record(
        42,
        5.0,
        state="R",
        threads=4,
        rss=1 << 20,
        cpu_percent=37.5,
        last_seen=11.0,
        exe="/tmp/evil",
        cmdline=("evil",),
    )
    store.apply(make_delta(11.0, updated=[changed]))

    record = store.live_processes()[original.key]
    assert (record.state, record.threads, record.rss, record.cpu_percent, record.last_seen) == (
        "R",
        4,
        1 << 20,
        37.5,
        11.0,
    )
    assert (record.exe, record.cmdline, record.first_seen) == (
        "/usr/bin/sleep",
        ("sleep", "60"),
        5.0,
    )


def test_exec_replaces_the_command_and_forgets_the_old_hash(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    shell = make_record(42, 5.0, name="bash", exe="/usr/bin/bash", cmdline=("bash",))
    store.apply(make_delta(10.0, added=[shell]), [ExeHash(shell.key, "a" * 64)])
    assert store.live_processes()[shell.key].exe_sha256 == "a" * 64

    execed = make_record(
        42,
        5.0,
        name="curl",
        exe="/usr/bin/curl",
        cmdline=("curl", "http://x"),
        uid=0,
        user="root",
        exe_deleted=True,
        last_seen=12.0,
        exe_sha256="stale",
    )
    store.apply(make_delta(12.0, execed=[execed]))

    record = store.live_processes()[shell.key]
    assert (record.name, record.exe, record.cmdline) == (
        "curl",
        "/usr/bin/curl",
        ("curl", "http://x"),
    )
    assert (record.uid, record.user, record.exe_deleted) == (0, "root", True)
    assert record.exe_sha256 is None
    assert record.first_seen == 5.0


def test_ended_process_leaves_the_live_view_but_keeps_its_history(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    record = make_record(42, 5.0)
    store.apply(make_delta(10.0, added=[record]))
    store.apply(
        make_delta(
            20.0,
            ended=[record.key],
            events=[ProcessEvent(19.5, "exit", 42, 5.0, exit_code=3, source="netlink")],
        )
    )

    assert store.live_processes() == {}
    assert rows(store.path, "SELECT ended_at, last_seen, exit_code FROM processes") == [
        (20.0, 20.0, 3)
    ]
    # Ending it again (a late duplicate) does not move the end time.
    store.apply(make_delta(30.0, ended=[record.key]))
    assert rows(store.path, "SELECT ended_at FROM processes") == [(20.0,)]


def test_events_are_appended_with_their_details(store: Store, make_delta: DeltaFactory) -> None:
    store.apply(
        make_delta(
            10.0,
            events=[
                ProcessEvent(9.0, "fork", 50, 8.5, ppid=42, source="netlink"),
                ProcessEvent(
                    9.5,
                    "exec",
                    50,
                    8.5,
                    exe="/bin/sh",
                    cmdline=("sh", "-c", "id"),
                    source="netlink",
                    partial=True,
                ),
            ],
        )
    )
    assert rows(
        store.path,
        "SELECT kind, pid, ppid, exe, cmdline, argv, source, partial FROM process_events "
        "ORDER BY ts",
    ) == [
        ("fork", 50, 42, None, None, None, "netlink", 0),
        ("exec", 50, None, "/bin/sh", "sh -c id", '["sh","-c","id"]', "netlink", 1),
    ]


def test_a_failing_tick_leaves_nothing_behind(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    survivor = make_record(1, 1.0)
    store.apply(make_delta(5.0, added=[survivor]))
    broken = make_delta(
        10.0,
        added=[make_record(42, 5.0)],
        updated=[make_record(1, 1.0, rss=999, last_seen=10.0)],
        ended=[survivor.key],
        events=[
            ProcessEvent(10.0, "start", 42, 5.0),
            ProcessEvent(10.0, "teleport", 42, 5.0),  # not a kind the schema allows
        ],
    )

    with pytest.raises(StoreError, match="writing a collection tick"):
        store.apply(broken)

    assert list(store.live_processes()) == [survivor.key]
    assert store.live_processes()[survivor.key].rss == survivor.rss
    assert rows(store.path, "SELECT count(*) FROM process_events") == [(0,)]


def test_a_reused_pid_is_a_different_process(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    first = make_record(42, 5.0, name="old")
    second = make_record(42, 900.0, name="new")
    store.apply(make_delta(10.0, added=[first]))
    store.apply(make_delta(900.0, added=[second], ended=[first.key]))

    assert rows(store.path, "SELECT name, ended_at FROM processes ORDER BY start_time") == [
        ("old", 900.0),
        ("new", None),
    ]
    assert set(store.live_processes()) == {second.key}


def test_hashes_land_on_their_process_instance_only(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    a, b = make_record(10, 1.0), make_record(11, 1.0)
    store.apply(make_delta(2.0, added=[a, b]))
    store.apply(
        make_delta(3.0),
        [
            ExeHash(a.key, "f" * 64),
            ExeHash(b.key, None, reason="too large"),
            ExeHash(ProcessKey(10, 2.0), "0" * 64),
        ],
    )
    live = store.live_processes()
    assert live[a.key].exe_sha256 == "f" * 64
    assert live[b.key].exe_sha256 is None


def test_restart_re_adding_a_known_process_refreshes_it(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    before = make_record(42, 5.0, first_seen=5.0, last_seen=50.0)
    store.apply(make_delta(50.0, added=[before]), [ExeHash(before.key, "c" * 64)])
    # A new daemon does not know the process yet and reports it as added again.
    again = make_record(42, 5.0, first_seen=100.0, last_seen=100.0, rss=8192)
    store.apply(make_delta(100.0, added=[again]))

    [record] = store.live_processes().values()
    assert (record.first_seen, record.last_seen, record.rss) == (5.0, 100.0, 8192)
    assert record.exe_sha256 == "c" * 64  # same binary: the hash still holds
    assert rows(store.path, "SELECT count(*) FROM processes") == [(1,)]


def test_mark_ended_closes_only_open_rows(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    gone, alive = make_record(1, 1.0, last_seen=7.0), make_record(2, 1.0)
    store.apply(make_delta(7.0, added=[gone, alive]))

    assert store.mark_ended([gone.key, ProcessKey(3, 1.0)], 60.0) == 1
    assert store.mark_ended([gone.key], 70.0) == 0

    assert set(store.live_processes()) == {alive.key}
    assert rows(store.path, "SELECT ended_at, last_seen FROM processes WHERE pid = 1") == [
        (60.0, 7.0)
    ]


def test_undecodable_command_line_does_not_lose_the_tick(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    hostile = make_record(66, 1.0, name="x\udcff", cmdline=("./a\udcffb", "ok"), exe="/tmp/\udc80")
    store.apply(make_delta(2.0, added=[hostile, make_record(67, 1.0)]))

    assert rows(store.path, "SELECT name, exe, cmdline FROM processes WHERE pid = 66") == [
        ("x\\udcff", "/tmp/\\udc80", "./a\\udcffb ok")
    ]
    assert len(store.live_processes()) == 2


def test_meta_values_are_visible_to_readers(store: Store) -> None:
    store.put_meta("health", '{"ok": true}')
    store.put_meta("health", '{"ok": false}')
    with open_readonly(store.path) as reader:
        assert reader.get_meta("health") == '{"ok": false}'
        assert reader.get_meta("missing") is None


def test_reader_sees_only_whole_ticks_while_the_writer_writes(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    ticks, per_tick = 150, 20
    failures: list[str] = []
    done = threading.Event()

    def write() -> None:
        try:
            for tick in range(ticks):
                records = [
                    make_record(tick * per_tick + i + 2, float(tick)) for i in range(per_tick)
                ]
                events = [ProcessEvent(float(tick), "start", r.pid, r.start_time) for r in records]
                store.apply(make_delta(float(tick), added=records, events=events))
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    observed = reads = 0
    with open_readonly(store.path) as reader:
        while True:
            finished = done.is_set()
            [(processes, events)] = reader.query(
                "SELECT (SELECT count(*) FROM processes), (SELECT count(*) FROM process_events)"
            ).rows
            assert isinstance(processes, int)
            if processes != events or processes % per_tick:
                failures.append(f"saw {processes} processes and {events!r} events")
            if processes < observed:
                failures.append(f"went back from {observed} to {processes}")
            observed = processes
            reads += 1
            if finished:
                break
    writer.join()
    assert failures == []
    assert observed == ticks * per_tick
    assert reads > 1


def test_an_exec_storm_of_one_program_keeps_every_command_line_exact(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """Command lines are encoded once per distinct argv within a write: instances that share
    one, and a process row and its event, still each get their own exact argv."""
    shared = ("/bin/true",)
    records = [make_record(100 + n, 50.0, cmdline=shared) for n in range(3)]
    records.append(make_record(200, 50.0, cmdline=("sh", "-c", "a  b")))
    events = [
        ProcessEvent(9.0, "exec", r.pid, 50.0, exe=r.exe, cmdline=r.cmdline, source="netlink")
        for r in records
    ]
    store.apply(make_delta(10.0, added=records, events=events))
    assert rows(store.path, "SELECT pid, cmdline, argv FROM processes ORDER BY pid") == [
        (100, "/bin/true", '["/bin/true"]'),
        (101, "/bin/true", '["/bin/true"]'),
        (102, "/bin/true", '["/bin/true"]'),
        (200, "sh -c a  b", '["sh","-c","a  b"]'),
    ]
    assert rows(store.path, "SELECT pid, cmdline, argv FROM process_events ORDER BY pid") == [
        (100, "/bin/true", '["/bin/true"]'),
        (101, "/bin/true", '["/bin/true"]'),
        (102, "/bin/true", '["/bin/true"]'),
        (200, "sh -c a  b", '["sh","-c","a  b"]'),
    ]


def test_exit_codes_land_whether_the_end_was_seen_before_with_or_without_them(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """An end and its exit code are written together when both come in one delta; an end
    without a code, a code for an instance ended earlier, a second exit code and a late end
    each keep what the first write said."""
    polled, evented, late_code, unknown = (make_record(pid, 5.0) for pid in (1, 2, 3, 4))
    store.apply(make_delta(10.0, added=[polled, evented, late_code, unknown]))
    store.apply(
        make_delta(
            20.0,
            ended=[polled.key, late_code.key],
            events=[
                ProcessEvent(19.0, "exit", 2, 5.0, exit_code=7, source="netlink"),
                ProcessEvent(19.1, "exit", 2, 5.0, exit_code=9, source="netlink"),
                ProcessEvent(19.2, "exit", 3, 5.0, exit_code=None, source="netlink"),
                ProcessEvent(19.3, "exit", 99, 0.0, exit_code=1, source="netlink", partial=True),
            ],
        )
    )
    store.apply(
        make_delta(
            30.0,
            ended=[evented.key, late_code.key],
            events=[
                ProcessEvent(29.0, "exit", 3, 5.0, exit_code=4, source="netlink"),
            ],
        )
    )
    assert rows(
        store.path, "SELECT pid, ended_at, last_seen, exit_code FROM processes ORDER BY pid"
    ) == [
        (1, 20.0, 20.0, None),
        (2, 30.0, 30.0, 7),
        (3, 20.0, 20.0, 4),
        (4, None, unknown.last_seen, None),
    ]
