"""Strings stored once (schema v7): repeated names, exe paths, command lines, argv, working
directories, users, hashes and context values cost one row of `strings` however many instances
use them; the views read exactly what was written; retention drops strings nothing refers to;
the migration converts a store written by the previous schema (v6, with the change events and
context columns) without losing a byte."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import apsw
import pytest

from daemoneye.models import (
    CHANGE_KINDS,
    LIFECYCLE_KINDS,
    ExeHash,
    ProcessEvent,
    ProcessKey,
    ProcessRecord,
)
from daemoneye.store import Store, open_readonly
from daemoneye.store.changes import _SELECT_CHANGES, changes_of
from daemoneye.store.rows import (
    INSERT_EVENT,
    PROCESS_COLUMNS,
    argv_fields,
    event_row,
    process_row,
)
from daemoneye.store.schema import MIGRATIONS, SCHEMA_VERSION
from daemoneye.store.schema_v7 import V7_CODED, V7_FIRST_CHANGE_CODE
from daemoneye.store.strings import BASE_TABLES, INTERNED_COLUMNS, MAX_CACHED_TEXT, split_argv
from tests.unit.conftest import DeltaFactory, RecordFactory


def scalar(path: Path, sql: str) -> object:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).get
    finally:
        conn.close()


def refs_are_exact(path: Path) -> bool:
    """Every string's `refs` equals the rows that refer to it."""
    every_reference = " + ".join(
        f"(SELECT count(*) FROM {BASE_TABLES[view]} b WHERE b.{column}_ref = s.id)"
        for view, columns in INTERNED_COLUMNS.items()
        for column in sorted(columns)
    )
    counted = (
        "SELECT count(*) FROM strings s JOIN string_refs r USING (id) "
        f"WHERE r.refs != ({every_reference})"
    )
    return scalar(path, counted) == 0


def test_a_thousand_runs_of_one_program_store_its_strings_once(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    argv = ("/usr/bin/python3", "-m", "health check", "--verbose")
    records = [
        make_record(1000 + n, float(n), exe="/usr/bin/python3", cmdline=argv, cwd="/srv")
        for n in range(1000)
    ]
    events = [
        ProcessEvent(float(n), "exec", 1000 + n, float(n), exe="/usr/bin/python3", cmdline=argv)
        for n in range(1000)
    ]
    store.apply(make_delta(1000.0, added=records, events=events))
    store.apply(
        make_delta(1001.0),
        [ExeHash(record.key, "ab" * 32) for record in records[:500]],
    )
    _, argv_json = argv_fields(argv)
    # name, user, exe, cwd, the joined command line, the argv JSON (an argument holds a
    # space), the hash
    assert scalar(store.path, "SELECT count(*) FROM strings") == 7
    assert (
        scalar(
            store.path,
            f"SELECT refs FROM string_refs JOIN strings USING (id) WHERE text = '{argv_json}'",
        )
        == 2000
    )
    assert refs_are_exact(store.path)
    with open_readonly(store.path) as reader:
        back = reader.fetch_processes("pid = 1499")
        shown = reader.query(
            "SELECT count(*) FROM process_events WHERE argv = ?".replace("?", f"'{argv_json}'")
        )
    assert back[0].cmdline == argv and back[0].exe_sha256 == "ab" * 32
    assert back[0] == dataclasses.replace(records[499], exe_sha256="ab" * 32)
    assert shown.rows == ((1000,),)


def test_a_changed_working_directory_moves_its_reference(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    first = make_record(7, 1.0, cwd="/home/a")
    store.apply(make_delta(1.0, added=[first]))
    store.apply(make_delta(2.0, updated=[dataclasses.replace(first, cwd="/tmp/x", last_seen=2.0)]))
    assert (
        scalar(
            store.path,
            "SELECT refs FROM string_refs JOIN strings USING (id) WHERE text = '/home/a'",
        )
        == 0
    )
    assert (
        scalar(
            store.path, "SELECT refs FROM string_refs JOIN strings USING (id) WHERE text = '/tmp/x'"
        )
        == 1
    )
    assert refs_are_exact(store.path)
    with open_readonly(store.path) as reader:
        assert reader.fetch_processes("pid = 7")[0].cwd == "/tmp/x"


def test_retention_drops_unused_strings_and_later_writes_still_read_back(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    old = make_record(1, 1.0, exe="/opt/old", cmdline=("old", "run"), cwd="/old")
    kept = make_record(2, 1.0, exe="/opt/kept", cmdline=("kept",), cwd="/kept")
    store.apply(make_delta(1.0, added=[old, kept]))
    store.apply(make_delta(2.0, ended=[old.key]))
    store.retention(max_age_s=10.0, max_bytes=1 << 30, now=100.0)
    texts = {row[0] for row in apsw.Connection(str(store.path)).execute("SELECT text FROM strings")}
    assert "/opt/old" not in texts and "/old" not in texts
    assert {"/opt/kept", "/kept"} <= texts
    # The writer's cached ids of deleted strings must not be reused for new rows.
    again = make_record(3, 150.0, exe="/opt/old", cmdline=("old", "run"), cwd="/old")
    store.apply(make_delta(150.0, added=[again]))
    with open_readonly(store.path) as reader:
        [back] = reader.fetch_processes("pid = 3")
    assert (back.exe, back.cmdline, back.cwd) == ("/opt/old", ("old", "run"), "/old")
    assert refs_are_exact(store.path)


def test_a_failed_tick_forgets_the_ids_of_strings_it_added(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    fresh = make_record(5, 5.0, exe="/new/bin", cmdline=("/new/bin", "x"), cwd="/new")
    broken = make_delta(5.0, added=[fresh], events=[ProcessEvent(5.0, "teleport", 5, 5.0)])
    with pytest.raises(Exception, match="collection tick"):
        store.apply(broken)
    store.apply(make_delta(6.0, added=[fresh]))
    with open_readonly(store.path) as reader:
        [back] = reader.fetch_processes("pid = 5")
    assert (back.exe, back.cmdline, back.cwd) == ("/new/bin", ("/new/bin", "x"), "/new")


def test_huge_repeated_command_lines_are_stored_once_and_never_cached(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    huge = ("sh", "-c", "x" * (1 << 20))
    records = [make_record(100 + n, float(n), cmdline=huge) for n in range(20)]
    store.apply(make_delta(20.0, added=records[:10]))
    store.apply(make_delta(21.0, added=records[10:]))
    big = f"SELECT count(*) FROM strings WHERE length(text) > {MAX_CACHED_TEXT}"
    assert scalar(store.path, big) == 1  # the joined text once; the view derives the JSON
    with open_readonly(store.path) as reader:
        assert all(r.cmdline == huge for r in reader.fetch_processes("pid >= 100"))


def test_writes_through_the_views_keep_strings_and_references_right(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """Anything that writes the views (tests, a person with sqlite3) goes through their
    INSTEAD OF triggers into the same tables."""
    store.apply(make_delta(1.0, added=[make_record(1, 1.0, exe="/bin/a")]))
    with store.transaction("by hand") as conn:
        conn.execute("UPDATE processes SET exe = '/bin/b', rss = 5 WHERE pid = 1")
        conn.execute(
            "INSERT INTO process_events (ts, kind, pid, start_time, cmdline, source) "
            "VALUES (2.0, 'exec', 1, 1.0, 'b', 'poll')"
        )
    with open_readonly(store.path) as reader:
        [back] = reader.fetch_processes("pid = 1")
        [event] = reader.fetch_rows("SELECT cmdline, partial FROM process_events")
    assert (back.exe, back.rss, event) == ("/bin/b", 5, ("b", 0))
    assert refs_are_exact(store.path)
    with store.transaction("by hand") as conn:
        conn.execute("DELETE FROM processes")
        conn.execute("DELETE FROM process_events")
    assert scalar(store.path, "SELECT count(*) FROM string_refs WHERE refs > 0") == 0


def test_the_migration_converts_a_previous_store_exactly(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    """A v6 store as main's writer left it (context columns, change events with old and new
    values, a connection) reads back row for row, column for column after v7."""
    path = tmp_path / "old.db"
    conn = apsw.Connection(str(path))
    conn.pragma("journal_mode", "WAL")
    for migration in MIGRATIONS[:-1]:
        conn.execute(migration.sql)
    conn.pragma("user_version", SCHEMA_VERSION - 1)
    context = {
        "cgroup": "/system.slice/ssh.service",
        "unit": "ssh.service",
        "pid_ns": 4026531836,
        "mnt_ns": 4026531841,
        "net_ns": 4026531840,
        "user_ns": 4026531837,
        "session_id": 42,
        "tty": "pts/3",
        "loginuid": 1000,
        "ssh_client": "10.0.0.7 51234",
        "ssh_source": "process",
        "stdin": "tty:/dev/pts/3",
        "stdout": "pipe:[123]",
        "stderr": "tty:/dev/pts/3",
        "environment": '{"SSH_CONNECTION":"10.0.0.7 51234 10.0.0.1 22"}',
    }
    records = [
        make_record(10, 1.0, exe="/usr/bin/ssh", cmdline=("ssh", "host"), cwd="/root", **context),
        make_record(
            11,
            2.0,
            exe="/usr/bin/ssh",
            cmdline=("ssh", "host"),
            cwd="/root",
            exe_sha256="cd" * 32,
            ended_at=9.0,
            exit_code=255,
            container_runtime="docker",
            container_id="ab" * 32,
            ns_foreign="pid mnt",
            **context,
        ),
        make_record(12, 3.0, exe=None, cmdline=(), cwd=None, user=None, uid=None),
        make_record(13, 4.0, cmdline=("evil\udcff", "a b"), name="x\x1b[31m"),
    ]
    marks = ", ".join("?" * len(PROCESS_COLUMNS))
    for record in records:
        conn.execute(
            f"INSERT INTO processes ({', '.join(PROCESS_COLUMNS)}) VALUES ({marks})",
            process_row(record),
        )
    events = [
        ProcessEvent(2.0, "exec", 11, 2.0, 1, "/usr/bin/ssh", ("ssh", "host"), source="netlink"),
        ProcessEvent(3.0, "rename", 11, 2.0, old_value="ssh", new_value="evil\udcff"),
        ProcessEvent(4.0, "uid", 11, 2.0, old_value="1000", new_value="0", exe_setid=False),
        ProcessEvent(5.0, "exe_deleted", 11, 2.0, exe="/usr/bin/ssh", old_value="/usr/bin/ssh"),
        ProcessEvent(9.0, "exit", 11, 2.0, exit_code=255, source="netlink"),
    ]
    conn.executemany(INSERT_EVENT, [event_row(event) for event in events])
    conn.execute(
        "INSERT INTO connections (pid, start_time, protocol, state, inode, first_seen, last_seen)"
        " VALUES (11, 2.0, 'tcp', 'ESTABLISHED', 77, 2.0, 2.0)"
    )
    before = list(conn.execute("SELECT * FROM processes ORDER BY id"))
    events_before = list(conn.execute("SELECT * FROM process_events ORDER BY id"))
    conn.close()

    Store.open(path).close()

    with open_readonly(path) as reader:
        after = reader.fetch_rows("SELECT * FROM processes ORDER BY id")
        events_after = reader.fetch_rows("SELECT * FROM process_events ORDER BY id")
        live = reader.fetch_rows("SELECT pid FROM live_processes ORDER BY pid")
        changes = reader.query("SELECT kind, old_value, new_value FROM process_events WHERE id > 1")
    assert after == before and events_after == events_before
    assert [type(v) for v in after[1]] == [type(v) for v in before[1]]
    assert live == [(10,), (12,), (13,)]
    assert changes.rows[0] == ("rename", "ssh", "evil\\udcff")
    assert scalar(path, "PRAGMA user_version") == SCHEMA_VERSION
    interned = [PROCESS_COLUMNS.index(c) + 1 for c in INTERNED_COLUMNS["processes"] if c != "argv"]
    distinct = {str(row[i]) for row in before for i in interned if row[i] is not None}
    # An argv that splitting its command line on spaces gives is derived, not stored.
    argv, cmdline = PROCESS_COLUMNS.index("argv") + 1, PROCESS_COLUMNS.index("cmdline") + 1
    distinct |= {row[argv] for row in before if row[argv] != split_argv(row[cmdline])}
    assert scalar(path, "SELECT count(*) FROM strings") == len(distinct)
    assert refs_are_exact(path)
    # The instance's connections still go with it when retention deletes it.
    with Store.open(path) as store:
        store.retention(max_age_s=1.0, max_bytes=1 << 30, now=100.0)
    assert scalar(path, "SELECT count(*) FROM connections") == 0
    assert refs_are_exact(path)


def test_an_argv_the_command_line_gives_is_derived_exactly_not_stored(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    plain = ("ls", "-la", "/tmp", "", "x\ty", 'q"uote', "back\\slash", "\u00e9\u2028\x7f")
    spaced = ("sh", "-c", "echo hi")
    empty: tuple[str, ...] = ()
    records = [
        make_record(1, 1.0, cmdline=plain),
        make_record(2, 1.0, cmdline=spaced),
        make_record(3, 1.0, cmdline=empty),
    ]
    events = [ProcessEvent(1.0, "exec", 1, 1.0, cmdline=plain), ProcessEvent(1.0, "fork", 4, 1.0)]
    store.apply(make_delta(1.0, added=records, events=events))
    stored = {argv_fields(r.cmdline)[1] for r in records} & {
        row[0] for row in apsw.Connection(str(store.path)).execute("SELECT text FROM strings")
    }
    assert stored == {argv_fields(spaced)[1], argv_fields(empty)[1]}
    with open_readonly(store.path) as reader:
        assert [r.cmdline for r in reader.fetch_processes("pid <= 3")] == [plain, spaced, empty]
        rows = reader.fetch_rows("SELECT kind, argv FROM process_events ORDER BY id")
        same = reader.query(
            "SELECT count(*) FROM processes WHERE argv = json_array('ls', '-la', "
            "'/tmp', '', 'x' || char(9) || 'y', 'q\"uote', 'back\\slash', "
            "char(233, 8232, 127))"
        )
    assert rows == [("exec", argv_fields(plain)[1]), ("fork", None)]
    assert same.rows == ((1,),)


def test_strings_alike_but_for_their_middle_cost_a_bounded_lookup_and_read_back_right(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """A process can start thousands of command lines of one length and one prefix: a lookup
    compares at most the newest V7_STRINGS_CANDIDATES of them, so an old one is stored again
    rather than searched for, and every row still reads back exactly."""
    alike = [("/bin/sh", "-c", f"{'x' * 40}{n:04d}{'y' * 40}") for n in range(3 * 32)]
    records = [make_record(1000 + n, 1.0, cmdline=argv) for n, argv in enumerate(alike)]
    store.apply(make_delta(1.0, added=records))
    joined = f"SELECT count(*) FROM strings WHERE text = '{' '.join(alike[0])}'"
    assert scalar(store.path, joined) == 1
    # Written again by a fresh writer (no cached ids): the oldest is past the bound.
    again = make_record(5000, 2.0, cmdline=alike[0])
    fresh = Store.open(store.path)
    try:
        fresh.apply(make_delta(2.0, added=[again]))
    finally:
        fresh.close()
    assert scalar(store.path, joined) == 2
    newest = make_record(5001, 3.0, cmdline=alike[-1])
    store.apply(make_delta(3.0, added=[newest]))
    assert (
        scalar(store.path, f"SELECT count(*) FROM strings WHERE text = '{' '.join(alike[-1])}'")
        == 1
    )
    with open_readonly(store.path) as reader:
        back = {r.pid: r.cmdline for r in reader.fetch_processes("pid >= 1000")}
    assert back == {
        **{1000 + n: argv for n, argv in enumerate(alike)},
        5000: alike[0],
        5001: alike[-1],
    }
    assert refs_are_exact(store.path)


def test_change_events_are_found_by_their_own_index_and_codes_follow_the_kinds(
    store: Store, make_delta: DeltaFactory
) -> None:
    """The kind codes after the lifecycle ones are exactly models.CHANGE_KINDS (the partial
    index of change events relies on it), and an instance's changes are read along it."""
    assert V7_CODED["kind"][:V7_FIRST_CHANGE_CODE] == LIFECYCLE_KINDS
    assert V7_CODED["kind"][V7_FIRST_CHANGE_CODE:] == CHANGE_KINDS
    key = ProcessKey(7, 1.0)
    events = [
        ProcessEvent(2.0, "exec", 7, 1.0, cmdline=("a",)),
        ProcessEvent(3.0, "rename", 7, 1.0, old_value="a", new_value="b"),
        ProcessEvent(4.0, "exit", 7, 1.0, exit_code=0),
        ProcessEvent(5.0, "rename", 8, 1.0, old_value="c", new_value="d"),
    ]
    store.apply(make_delta(5.0, events=events))
    with open_readonly(store.path) as reader:
        assert [(c.kind, c.new_value) for c in changes_of(reader, key)] == [("rename", "b")]
        plan = reader.fetch_rows(
            f"EXPLAIN QUERY PLAN {_SELECT_CHANGES}", (key.pid, key.start_time, 20)
        )
    assert any("event_rows_changes" in str(row[-1]) for row in plan), plan


def test_the_writer_counts_added_rows_before_the_same_tick_changes_them(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """References of added rows are counted in bulk right after they are written: a row added
    and exec'd in one tick, and a re-reported row whose texts changed, keep exact counts."""
    kept = make_record(1, 1.0, exe="/bin/old", cwd="/old")
    store.apply(make_delta(1.0, added=[kept]))
    born = make_record(2, 2.0, exe="/bin/sh", cmdline=("sh",), cwd="/a")
    execed = dataclasses.replace(born, exe="/bin/ls", cmdline=("ls", "-l"), name="ls")
    again = dataclasses.replace(kept, exe="/bin/new", cwd="/new", last_seen=2.0)
    store.apply(
        make_delta(
            2.0,
            added=[born, again],
            execed=[execed],
            events=[ProcessEvent(2.0, "exec", 2, 2.0, exe="/bin/ls", cmdline=("ls", "-l"))],
        )
    )
    assert refs_are_exact(store.path)
    unused = "SELECT text FROM strings JOIN string_refs USING (id) WHERE refs = 0 ORDER BY text"
    conn = apsw.Connection(str(store.path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert [row[0] for row in conn.execute(unused)] == ["/bin/old", "/bin/sh", "/old", "sh"]
    finally:
        conn.close()


def test_references_stay_exact_over_ticks_of_new_re_reported_and_ended_processes(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """Ticks as the collector writes them: new instances sharing texts with each other and
    with the store, events, an instance reported twice in one tick, re-reported ones whose
    texts changed, ends and exec hashes. After each tick every count is exact, whichever
    way the tick's rows were counted."""
    shared = ("/usr/bin/env", "python3", "job")
    rng = random.Random(7)
    known: list[ProcessRecord] = []
    for tick in range(1, 25):
        ts = float(tick)
        added = [
            make_record(
                100 * tick + n,
                ts,
                exe=rng.choice(["/bin/sh", "/usr/bin/env", f"/opt/t{tick}"]),
                cmdline=shared if n % 2 else ("sh", "-c", f"echo {n % 3}"),
                cwd=rng.choice(["/", "/srv", None]),
            )
            for n in range(rng.randrange(0, 12))
        ]
        if known and tick % 3 == 0:  # re-reported with new texts, as after a restart
            again = rng.choice(known)
            added.append(dataclasses.replace(again, cwd=f"/moved/{tick}", last_seen=ts))
        if added and tick % 5 == 0:  # the same instance twice in one tick
            added.append(dataclasses.replace(added[0], cwd="/twice", last_seen=ts))
        events = [
            ProcessEvent(ts, "exec", r.pid, r.start_time, exe=r.exe, cmdline=r.cmdline)
            for r in added[: len(added) // 2]
        ]
        ended = [r.key for r in known[: tick % 4]]
        known = [r for r in known if r.key not in ended] + added
        hashes = [ExeHash(r.key, f"{tick:02x}" * 32) for r in added[:2]]
        store.apply(make_delta(ts, added=added, ended=ended, events=events), hashes)
        assert refs_are_exact(store.path), f"tick {tick}"


def test_an_instance_added_twice_in_one_tick_is_stored_as_two_ticks_would_store_it(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory, tmp_path: Path
) -> None:
    first = make_record(7, 5.0, exe="/bin/a", exe_sha256="ab" * 32, first_seen=5.0)
    second = dataclasses.replace(first, cwd="/later", exe_sha256=None, first_seen=6.0)
    store.apply(make_delta(6.0, added=[first, second]))
    apart = Store.open(tmp_path / "apart.db")
    try:
        apart.apply(make_delta(6.0, added=[first]))
        apart.apply(make_delta(6.0, added=[second]))
        read = "SELECT cwd, exe_sha256, first_seen, last_seen FROM processes"
        with open_readonly(store.path) as together, open_readonly(apart.path) as separate:
            assert (
                together.fetch_rows(read)
                == separate.fetch_rows(read)
                == [("/later", "ab" * 32, 5.0, 5.0)]
            )
    finally:
        apart.close()
    assert refs_are_exact(store.path)
