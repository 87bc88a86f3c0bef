"""Changes after start without the kernel: the scan's round over every instance (cwd, deleted
or replaced executable), the kernel events' renames and id changes turned into change events
and new state (collector/events.py, collector/event_feed.py), and the evaluator seeing the
changed instance again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest

from daemoneye.collector import details as details_module
from daemoneye.collector.changes import ChangeSweep, change_events
from daemoneye.collector.event_feed import EventFeed
from daemoneye.collector.event_records import ObservedEvent
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.hashing import ExeHasher
from daemoneye.collector.proc_events import (
    CommEvent,
    GidEvent,
    ProcConnectorEvent,
    PtraceEvent,
    UidEvent,
)
from daemoneye.collector.procfs import CLOCK_TICKS
from daemoneye.collector.scanner import ProcScanner
from daemoneye.engine.evaluator import Evaluator, changed_keys
from daemoneye.models import (
    CHANGE_KINDS,
    EVENT_KINDS,
    ProcessDetails,
    ProcessEvent,
    ProcessKey,
    Rule,
    ScanDelta,
    ScanStats,
)
from daemoneye.store import Store
from daemoneye.store.schema import MIGRATIONS
from tests.unit.conftest import RecordFactory
from tests.unit.test_scanner import BOOT, USERS, Clock, FakeProc

EVENT_NS = time.monotonic_ns()


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def scanner_for(proc: FakeProc, clock: Clock, update_interval: float = 10.0) -> ProcScanner:
    return ProcScanner(
        str(proc.root),
        boot_time=BOOT,
        clock=clock,
        user_names=USERS.get,
        update_interval=update_interval,
    )


def key_of(pid: int, start: int = 1000) -> ProcessKey:
    return ProcessKey(pid, BOOT + start / CLOCK_TICKS)


def relink(proc: FakeProc, pid: int, link: str, target: str) -> None:
    path = proc.root / str(pid) / link
    path.unlink()
    path.symlink_to(target)


def changes_of(delta: ScanDelta) -> list[tuple[str, int, str | None, str | None]]:
    return [(e.kind, e.pid, e.old_value, e.new_value) for e in delta.events]


# -- the scan ---------------------------------------------------------------------------------


def test_a_new_cwd_is_found_within_the_update_interval_without_any_stat_change(
    proc: FakeProc, clock: Clock
) -> None:
    """chdir() need not move the cpu times: the stat bytes stay the same, the round finds it."""
    for pid in range(10, 20):
        proc.spawn(pid, cwd="/srv")
    scanner = scanner_for(proc, clock, update_interval=5.0)
    scanner.scan()
    relink(proc, 13, "cwd", "/tmp/.hidden")
    found: list[tuple[str, int, str | None, str | None]] = []
    updated = []
    for _ in range(5):  # 5 ticks of 1 s: one update interval
        clock.now += 1
        delta = scanner.scan()
        found += changes_of(delta)
        updated += [r.cwd for r in delta.updated]
    assert found == [("cwd", 13, "/srv", "/tmp/.hidden")]
    assert updated == ["/tmp/.hidden"]
    record = scanner.record(key_of(13))
    assert record is not None and record.cwd == "/tmp/.hidden"


def test_the_round_is_bounded_and_reads_in_full_only_what_changed(
    proc: FakeProc, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for pid in range(100, 200):
        proc.spawn(pid)
    scanner = scanner_for(proc, clock, update_interval=10.0)
    scanner.scan()
    full_reads: list[bytes] = []
    real_read = details_module.read_instance

    def counting(root: bytes, name: bytes, user_of: Any, *context: Any, **options: Any) -> Any:
        full_reads.append(name)
        return real_read(root, name, user_of, *context, **options)

    monkeypatch.setattr("daemoneye.collector.scanner.read_instance", counting)
    relink(proc, 150, "cwd", "/var/tmp")
    checked = []
    for _ in range(10):
        clock.now += 1
        before = scanner.sweep.checked_total
        scanner.scan()
        checked.append(scanner.sweep.checked_total - before)
    assert checked == [10] * 10  # 100 processes, a tenth of them per tick
    assert full_reads == [b"150"]


def test_a_deleted_executable_and_a_replaced_one(
    proc: FakeProc, clock: Clock, tmp_path: Path
) -> None:
    replacement = tmp_path / "upgraded"
    replacement.write_text("new build")
    proc.spawn(30, exe="/tmp/dropper")
    proc.spawn(31, exe=str(replacement))
    scanner = scanner_for(proc, clock, update_interval=1.0)
    scanner.scan()
    relink(proc, 30, "exe", "/tmp/dropper (deleted)")
    relink(proc, 31, "exe", f"{replacement} (deleted)")
    clock.now += 1
    delta = scanner.scan()
    assert sorted(changes_of(delta)) == [
        ("exe_deleted", 30, "/tmp/dropper", None),
        ("exe_replaced", 31, str(replacement), None),
    ]
    assert {r.pid: r.exe_deleted for r in delta.updated} == {30: True, 31: True}
    clock.now += 1
    assert scanner.scan().events == ()  # reported once


def test_change_events_compare_what_was_read(make_record: RecordFactory) -> None:
    old = make_record(5, 10.0, name="app", uid=1000, gid=1000, cwd="/srv")
    new = make_record(5, 10.0, name="[kworker/0:1]", uid=0, gid=1000, cwd=None)
    events = change_events(old, new, 9.0, exe_setid=lambda bit: False)
    assert [(e.kind, e.old_value, e.new_value, e.exe_setid) for e in events] == [
        ("rename", "app", "[kworker/0:1]", None),
        ("uid", "1000", "0", False),
    ]  # a cwd that became unreadable did not change


def test_the_sweep_waits_for_a_tick_and_takes_a_share() -> None:
    sweep = ChangeSweep()
    names = [str(i).encode() for i in range(7)]
    assert sweep.take(names, 7, 0.0, 10.0) == []
    taken = [sweep.take(names, 7, 2.0, 10.0) for _ in range(4)]
    assert [len(t) for t in taken] == [2, 2, 2, 1]  # ceil(7 * 0.2), until the round is done
    assert sorted(n for t in taken for n in t) == sorted(names)


# -- the kernel events ------------------------------------------------------------------------


def source_for(root: Path) -> ProcEventSource:
    return ProcEventSource(BOOT, clk_tck=CLOCK_TICKS, proc_root=str(root))


def test_the_source_turns_renames_id_changes_and_attaches_into_change_events(
    proc: FakeProc,
) -> None:
    setuid_exe = proc.root.parent / "setuid-tool"
    setuid_exe.write_text("")
    setuid_exe.chmod(0o4755)
    proc.spawn(42, "worker", exe=str(setuid_exe))
    source = source_for(proc.root)
    messages: list[ProcConnectorEvent] = [
        CommEvent(0, 1, EVENT_NS, 42, 42, "[kworker/0:1]"),
        UidEvent(0, 2, EVENT_NS, 42, 42, 0, 0),
        GidEvent(0, 3, EVENT_NS, 42, 42, 0, 0),
        PtraceEvent(0, 4, EVENT_NS, 42, 42, 77, 77),
        CommEvent(0, 5, EVENT_NS, 43, 42, "thread-name"),  # a thread's own name
        UidEvent(0, 6, EVENT_NS, 43, 42, 0, 0),  # glibc's setuid: every thread, one each
    ]
    handled = [source.handle(m) for m in messages]
    events = [h.event for h in handled if h is not None]
    assert [(e.kind, e.new_value, e.source) for e in events] == [
        ("rename", "[kworker/0:1]", "netlink"),
        ("uid", "0", "netlink"),
        ("gid", "0", "netlink"),
        ("ptrace", "77", "netlink"),
    ]
    assert {e.start_time for e in events} == {BOOT + 1000 / CLOCK_TICKS}
    assert source.threads_ignored_total == 2
    assert (events[1].exe_setid, events[2].exe_setid) == (True, False)  # setuid, not setgid


class QueuedSource:
    """What EventFeed takes from ProcEventSource: queued events, drained in order."""

    def __init__(self) -> None:
        self.queued: list[ObservedEvent] = []

    def drain_observed(self, max_items: int | None = None) -> list[ObservedEvent]:
        taken, self.queued = self.queued, []
        return taken


def change(kind: str, pid: int, new_value: str, setid: bool | None = None) -> ObservedEvent:
    event = ProcessEvent(
        ts=5.0,
        kind=kind,
        pid=pid,
        start_time=key_of(pid).start_time,
        source="netlink",
        new_value=new_value,
        exe_setid=setid,
    )
    return ObservedEvent(event, 1000, None)


def feed_for(proc: FakeProc, clock: Clock) -> tuple[EventFeed, QueuedSource, ProcScanner]:
    scanner = scanner_for(proc, clock)
    queued = QueuedSource()
    feed = EventFeed(cast(ProcEventSource, queued), scanner, USERS.get, clock=clock)
    return feed, queued, scanner


def test_the_feed_writes_the_new_state_with_its_event_and_the_scan_does_not_repeat_it(
    proc: FakeProc, clock: Clock
) -> None:
    proc.spawn(42, "python3", exe="/usr/bin/python3", cmdline=("python3",), uid=1000)
    feed, queued, scanner = feed_for(proc, clock)
    scanner.scan()
    queued.queued = [change("rename", 42, "sshd"), change("uid", 42, "0", setid=False)]
    delta = feed.take()
    assert delta is not None
    assert [(e.kind, e.old_value, e.new_value, e.exe) for e in delta.events] == [
        ("rename", "python3", "sshd", "/usr/bin/python3"),
        ("uid", "1000", "0", "/usr/bin/python3"),
    ]
    (record,) = delta.updated
    assert (record.name, record.uid, record.user) == ("sshd", 0, "root")
    assert changed_keys(delta) == (key_of(42),)
    proc.change(42, comm="sshd")  # what the kernel shows from now on
    clock.now += 11
    assert scanner.scan().events == ()  # adopted: no poll rename on top of the netlink one


def test_a_change_already_known_is_not_an_event_and_an_undone_one_is_kept_once(
    proc: FakeProc, clock: Clock
) -> None:
    proc.spawn(42, "app", exe="/usr/bin/app", cmdline=("app",), uid=1000)
    feed, queued, scanner = feed_for(proc, clock)
    scanner.scan()
    # euid-only changes (a setuid exec, seteuid) arrive with the real uid unchanged
    queued.queued = [change("uid", 42, "1000")]
    delta = feed.take()
    assert delta is not None and delta.events == () and delta.updated == ()
    # a rename loop: one event per batch, first old value and last new one
    queued.queued = [change("rename", 42, f"name-{i}") for i in range(500)]
    delta = feed.take()
    assert delta is not None
    assert [(e.old_value, e.new_value) for e in delta.events] == [("app", "name-499")]
    # renamed away and straight back (a moment as [kworker/0:1]): folding would leave
    # nothing; the first change is kept as it was, once per batch however often it loops
    queued.queued = [change("rename", 42, n) for n in ("x", "name-499", "y", "name-499")]
    delta = feed.take()
    assert delta is not None
    assert [(e.old_value, e.new_value) for e in delta.events] == [("name-499", "x")]
    assert delta.updated == () or delta.updated[0].name == "name-499"


class JobsSeen:
    """The hasher as the feed sees it: the jobs it was given."""

    def __init__(self) -> None:
        self.jobs: list[tuple[ProcessKey, int]] = []

    def submit_many(self, jobs: list[tuple[ProcessKey, int]]) -> int:
        self.jobs += jobs
        return len(jobs)


def exec_of(pid: int, exe: str) -> ObservedEvent:
    details = ProcessDetails(exe, False, (exe, f"run-{pid}"), "/", 0, 0, None)
    event = ProcessEvent(
        ts=5.0,
        kind="exec",
        pid=pid,
        start_time=key_of(pid).start_time,
        ppid=1,
        exe=exe,
        cmdline=details.cmdline,
        source="netlink",
    )
    return ObservedEvent(event, 1000, details)


def exit_of(pid: int) -> ObservedEvent:
    event = ProcessEvent(
        ts=5.0, kind="exit", pid=pid, start_time=key_of(pid).start_time, exit_code=0
    )
    return ObservedEvent(event, 1000, None)


def test_an_executable_is_hashed_unless_its_process_exited_in_the_same_batch(
    proc: FakeProc, clock: Clock
) -> None:
    scanner = scanner_for(proc, clock)
    queued = QueuedSource()
    hasher = JobsSeen()
    feed = EventFeed(
        cast(ProcEventSource, queued), scanner, USERS.get, cast(ExeHasher, hasher), clock=clock
    )
    # 42 lives on; 43 ran and exited before the batch was taken (/bin/true in a storm)
    queued.queued = [exec_of(42, "/usr/bin/sleep"), exec_of(43, "/bin/true"), exit_of(43)]
    delta = feed.take()
    assert delta is not None
    assert {r.key for r in delta.added} == {key_of(42), key_of(43)}  # both stored
    assert delta.ended == (key_of(43),)
    assert hasher.jobs == [(key_of(42), 1000)]  # no job that could only fail
    # an exit in a later batch: the exec's job was sent with its own batch
    queued.queued = [exec_of(44, "/bin/sh")]
    feed.take()
    queued.queued = [exit_of(44)]
    feed.take()
    assert hasher.jobs == [(key_of(42), 1000), (key_of(44), 1000)]


def exit_without_start(pid: int, code: int) -> ObservedEvent:
    """An exit the kernel reported for a process the reader never saw start, reaped before
    its stat could be read: no start time."""
    event = ProcessEvent(
        ts=5.0,
        kind="exit",
        pid=pid,
        start_time=0.0,
        exit_code=code,
        source="netlink",
        partial=True,
    )
    return ObservedEvent(event, None, None)


def test_an_exit_without_a_start_time_ends_the_instance_the_scan_knows(
    proc: FakeProc, clock: Clock
) -> None:
    proc.spawn(42, "pip", exe="/usr/bin/python3", cmdline=("pip", "install", "x"))
    feed, queued, scanner = feed_for(proc, clock)
    scanner.scan()
    proc.kill(42)
    queued.queued = [exit_without_start(42, 3)]
    delta = feed.take()
    assert delta is not None and delta.ended == (key_of(42),)
    (ended,) = delta.events
    assert (ended.start_time, ended.exit_code, ended.partial) == (key_of(42).start_time, 3, False)
    clock.now += 1
    rescanned = feed.without_duplicates(scanner.scan())  # the poller sees it gone too
    assert not [e for e in rescanned.events if e.kind == "exit"]  # not a second time


def test_an_exit_without_a_start_time_under_a_pid_alive_again_stays_partial(
    proc: FakeProc, clock: Clock
) -> None:
    proc.spawn(42, "pip")
    feed, queued, scanner = feed_for(proc, clock)
    scanner.scan()
    proc.kill(42)
    proc.spawn(42, "sleep", start=2000)  # the pid went to another process meanwhile
    queued.queued = [exit_without_start(42, 3)]
    delta = feed.take()
    assert delta is not None and delta.ended == ()
    (kept,) = delta.events
    assert (kept.start_time, kept.partial) == (0.0, True)


# -- the schema and the evaluator -------------------------------------------------------------


def test_the_store_takes_every_kind_the_models_name() -> None:
    assert set(CHANGE_KINDS) <= set(EVENT_KINDS)
    check = MIGRATIONS[-1].sql if "rename" in MIGRATIONS[-1].sql else ""
    for migration in MIGRATIONS:
        if "'exe_replaced'" in migration.sql:
            check = migration.sql
    for kind in EVENT_KINDS:
        assert f"'{kind}'" in check, kind


def test_a_rule_sees_the_changed_instance_again_and_the_change_event(
    store: Store, make_record: RecordFactory
) -> None:
    before = make_record(7, 10.0, name="app")
    store.apply(ScanDelta(1.0, (before,), (), (), (), (), ScanStats(0, 1, 1, 0, 0, 0, 0)))
    rule = Rule(
        id="renamed",
        name="renamed",
        description="",
        severity="high",
        enabled=True,
        tags=(),
        query=(
            "SELECT p.pid, p.start_time, p.name, e.old_value FROM processes p "
            "JOIN process_events e ON e.pid = p.pid AND e.start_time = p.start_time "
            "WHERE e.kind = 'rename' AND p.name = 'sshd'"
        ),
        title=None,
        dedup_window_s=None,
        throttle_s=None,
        source_file="x.toml",
        source_line=1,
    )
    evaluator = Evaluator(store.path, [rule])
    try:
        evaluator.evaluate_changes([])  # catch up with the events so far
        after = make_record(7, 10.0, name="sshd")
        event = ProcessEvent(
            2.0, "rename", 7, before.start_time, exe=after.exe, old_value="app", new_value="sshd"
        )
        delta = ScanDelta(2.0, (), (after,), (), (), (event,), ScanStats(0, 1, 0, 0, 0, 0, 0))
        store.apply(delta)
        result = evaluator.evaluate_changes(changed_keys(delta))
    finally:
        evaluator.close()
    assert [(d.pid, dict(d.row)["old_value"]) for d in result.detections] == [(7, "app")]


def shell_execs_curl(
    proc: FakeProc, clock: Clock
) -> tuple[EventFeed, QueuedSource, ProcScanner, ObservedEvent]:
    """A shell the scan knows, exec'ing curl: the feed, its queue, the scanner, the exec."""
    proc.spawn(42, "sh", exe="/usr/bin/sh", cmdline=("sh",))
    feed, queued, scanner = feed_for(proc, clock)
    scanner.scan()
    proc.exec(42, "curl", "/usr/bin/curl", ("curl", "x"))
    exec_event = ProcessEvent(5.0, "exec", 42, key_of(42).start_time, source="netlink")
    details = ProcessDetails("/usr/bin/curl", False, ("curl", "x"), "/", 1000, 1000, "alice")
    return feed, queued, scanner, ObservedEvent(exec_event, 1000, details)


def test_a_rename_then_an_exec_in_one_batch_leaves_the_exec_state(
    proc: FakeProc, clock: Clock
) -> None:
    """The exec's record was read after the rename: the rename's older state must not be
    written over it, nor handed to the scanner."""
    feed, queued, scanner, execed = shell_execs_curl(proc, clock)
    queued.queued = [change("rename", 42, "sh-renamed"), execed]
    delta = feed.take()
    assert delta is not None and delta.updated == ()
    assert [r.exe for r in delta.execed] == ["/usr/bin/curl"]
    record = scanner.record(key_of(42))
    assert record is not None and record.exe == "/usr/bin/curl"


def test_an_exec_then_a_rename_in_one_batch_is_one_exec_with_the_new_name(
    proc: FakeProc, clock: Clock
) -> None:
    """The rename came after the exec: its record is the exec's with the new name, written
    as the exec (not an exec and an update of the same instance, which the store applies
    update first, so the exec's older name would win)."""
    feed, queued, scanner, execed = shell_execs_curl(proc, clock)
    queued.queued = [execed, change("rename", 42, "[kswapd0]")]
    delta = feed.take()
    assert delta is not None and delta.updated == ()
    assert [(r.exe, r.name) for r in delta.execed] == [("/usr/bin/curl", "[kswapd0]")]
    record = scanner.record(key_of(42))
    assert record is not None and record.name == "[kswapd0]"


def test_a_change_before_the_first_scan_adds_the_instance_as_it_is_now(
    proc: FakeProc, clock: Clock
) -> None:
    """A fork child that renames itself before any scan met it: the feed reads it, so the
    rules have its row (with the new name) beside the event."""
    feed, queued, scanner = feed_for(proc, clock)
    scanner.scan()
    proc.spawn(77, "[kworker/0:1]", exe="/usr/bin/python3", cmdline=("python3", "-c", "x"))
    queued.queued = [change("rename", 77, "[kworker/0:1]")]
    delta = feed.take()
    assert delta is not None
    assert [(r.pid, r.name) for r in delta.added] == [(77, "[kworker/0:1]")]
    assert [(e.kind, e.old_value, e.new_value, e.exe) for e in delta.events] == [
        ("rename", None, "[kworker/0:1]", "/usr/bin/python3")
    ]
    assert changed_keys(delta) == (key_of(77),)
    clock.now += 1
    assert feed.without_duplicates(scanner.scan()).events == ()  # no 'start' on top of it


def test_what_changed_between_the_exec_and_the_first_scan_is_a_change(
    proc: FakeProc, clock: Clock
) -> None:
    """The events read a new program at its exec; the binary deleted (and the cwd moved)
    before the scanner's first read of it are changes, not silently a different row; a later
    uid change knows the uid the exec read."""
    feed, queued, scanner = feed_for(proc, clock)
    scanner.scan()
    proc.spawn(88, "evil", exe="/tmp/evil", cmdline=("./evil",), cwd="/tmp", uid=1000)
    exec_event = ProcessEvent(5.0, "exec", 88, key_of(88).start_time, source="netlink")
    details = ProcessDetails("/tmp/evil", False, ("./evil",), "/tmp", 1000, 1000, "alice")
    queued.queued = [ObservedEvent(exec_event, 1000, details)]
    assert feed.take() is not None
    queued.queued = [change("uid", 88, "0", setid=False)]
    delta = feed.take()
    assert delta is not None
    assert [(e.kind, e.old_value, e.new_value) for e in delta.events] == [("uid", "1000", "0")]
    (proc.root / "88" / "status").write_text("Name:\tevil\nUid:\t0\t0\t0\t0\nGid:\t1000\n")
    relink(proc, 88, "exe", "/tmp/evil (deleted)")
    relink(proc, 88, "cwd", "/dev/shm")
    clock.now += 1
    scanned = feed.without_duplicates(scanner.scan())
    assert sorted((e.kind, e.old_value, e.new_value) for e in scanned.events) == [
        ("cwd", "/tmp", "/dev/shm"),
        ("exe_deleted", "/tmp/evil", None),
    ]  # and not the uid again
