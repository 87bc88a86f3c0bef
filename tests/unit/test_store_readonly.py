"""Read-only access: user SQL may read one statement's worth of rows and change nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from daemoneye.errors import QueryError, StoreError
from daemoneye.models import ProcessEvent
from daemoneye.store import ReadOnlyStore, Store, open_readonly
from daemoneye.store.records import ancestry, children_of, live_records, records_for_pid
from tests.unit.conftest import DeltaFactory, RecordFactory

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"


@pytest.fixture
def populated(store: Store, make_record: RecordFactory, make_delta: DeltaFactory) -> Store:
    """25 live processes and one event each; the writer is closed by the `store` fixture."""
    records = [make_record(pid, 1.0, name=f"p{pid}") for pid in range(100, 125)]
    store.apply(
        make_delta(
            2.0,
            added=records,
            events=[ProcessEvent(2.0, "start", r.pid, r.start_time) for r in records],
        )
    )
    return store


@pytest.fixture
def reader(populated: Store) -> Iterator[ReadOnlyStore]:
    with open_readonly(populated.path) as opened:
        yield opened


def fingerprint(path: Path) -> tuple[str, object]:
    """The file's bytes and the data as another connection sees it (WAL included)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    data = (
        conn.execute("SELECT count(*), sum(rss) FROM processes").fetchall(),
        conn.execute("SELECT count(*) FROM process_events").fetchall(),
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall(),
        conn.pragma("user_version"),
    )
    conn.close()
    return hashlib.sha256(path.read_bytes()).hexdigest(), data


def test_missing_store_says_the_daemon_has_not_created_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "daemoneye.db"
    with pytest.raises(StoreError, match="the daemon has not created it yet") as refused:
        open_readonly(missing)
    assert str(missing) in str(refused.value)
    assert not missing.parent.exists()


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a DaemonEye store"):
        open_readonly(junk)


def test_query_returns_columns_and_rows(reader: ReadOnlyStore) -> None:
    result = reader.query("SELECT pid, name FROM live_processes WHERE pid < 102 ORDER BY pid")
    assert result.columns == ("pid", "name")
    assert result.rows == ((100, "p100"), (101, "p101"))
    assert result.truncated is False


def test_query_with_no_rows_still_names_its_columns(reader: ReadOnlyStore) -> None:
    result = reader.query("SELECT pid, exe FROM processes WHERE pid = -1")
    assert (result.columns, result.rows) == (("pid", "exe"), ())


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM processes;",
        "  SELECT count(*) FROM processes ;  \n",
        "SELECT count(*) FROM processes; -- trailing comment",
        "/* leading */ SELECT count(*) FROM processes /* trailing */;",
        "; SELECT count(*) FROM processes;;",
    ],
)
def test_trailing_semicolons_whitespace_and_comments_are_fine(
    reader: ReadOnlyStore, sql: str
) -> None:
    assert reader.query(sql).rows == ((25,),)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; SELECT 2",
        "SELECT 1; DROP TABLE processes",
        "SELECT 1; DELETE FROM processes;",
        "SELECT 1; garbage that does not parse",
        "SELECT 1; SELECT ?",
    ],
)
def test_more_than_one_statement_is_refused_before_anything_runs(
    populated: Store, sql: str
) -> None:
    before = fingerprint(populated.path)
    with (
        open_readonly(populated.path) as reader,
        pytest.raises(QueryError, match="exactly one statement"),
    ):
        reader.query(sql)
    assert fingerprint(populated.path) == before


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("INSERT INTO meta VALUES ('k', 'v')", "INSERT into 'meta'"),
        ("UPDATE processes SET rss = 0", "UPDATE of 'processes'"),
        ("DELETE FROM processes", "DELETE from 'processes'"),
        ("REPLACE INTO meta VALUES ('k', 'v')", "INSERT into 'meta'"),
        ("WITH x AS (SELECT 1) DELETE FROM process_events", "DELETE from 'process_events'"),
        ("DROP TABLE process_rows", "DROP TABLE"),
        ("DROP VIEW processes", "DROP VIEW"),
        ("SELECT text FROM strings", "reading 'strings'"),
        ("SELECT exe_ref FROM process_rows", "reading 'process_rows'"),
        ("SELECT cmdline_ref FROM event_rows", "reading 'event_rows'"),
        ("DROP VIEW live_processes", "DROP VIEW"),
        ("CREATE TABLE t (x)", "changing the schema"),
        ("CREATE TEMP TABLE t (x)", "temporary objects"),
        ("CREATE TEMP VIEW v AS SELECT 1", "temporary objects"),
        ("ATTACH DATABASE '/tmp/daemoneye-attack.db' AS evil", "ATTACH"),
        ("PRAGMA user_version = 99", "PRAGMA user_version = 99"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode"),
        ("PRAGMA query_only = 0", "PRAGMA query_only"),
        ("SELECT * FROM pragma_table_info('processes')", "PRAGMA table_info"),
        ("BEGIN IMMEDIATE", "TRANSACTION"),
        ("SAVEPOINT s", "SAVEPOINT"),
        ("ANALYZE", "ANALYZE"),
    ],
)
def test_anything_but_reading_is_refused_by_name_and_changes_nothing(
    populated: Store, sql: str, named: str
) -> None:
    before = fingerprint(populated.path)
    with open_readonly(populated.path) as reader, pytest.raises(QueryError) as refused:
        reader.query(sql)
    assert named in str(refused.value)
    assert fingerprint(populated.path) == before


def test_vacuum_into_cannot_copy_the_store_out(populated: Store, tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    with (
        open_readonly(populated.path) as reader,
        pytest.raises(QueryError, match="only SELECT statements"),
    ):
        reader.query(f"VACUUM INTO '{target}'")
    assert not target.exists()


def test_syntax_errors_carry_sqlites_message(reader: ReadOnlyStore) -> None:
    with pytest.raises(QueryError, match='near "SELEKT": syntax error'):
        reader.query("SELEKT 1")
    with pytest.raises(QueryError, match="no such column: nope"):
        reader.query("SELECT nope FROM processes")
    with pytest.raises(QueryError, match="no SQL statement"):
        reader.query("  -- only a comment\n")


def test_runaway_query_is_stopped_by_its_time_budget(reader: ReadOnlyStore) -> None:
    with pytest.raises(QueryError, match=r"exceeded its time budget of 0\.05 s"):
        reader.query(RUNAWAY, time_budget_s=0.05)
    # The connection is usable afterwards.
    assert reader.query("SELECT count(*) FROM processes").rows == ((25,),)


def test_regexp_stops_at_the_querys_deadline(reader: ReadOnlyStore) -> None:
    """Too few VM steps for the progress handler to look at the clock: REGEXP itself refuses
    to start a search past the budget."""
    sql = "SELECT name FROM processes WHERE cmdline REGEXP 'sleep'"
    with pytest.raises(QueryError, match=r"exceeded its time budget"):
        reader.query(sql, time_budget_s=1e-9)
    assert len(reader.query(sql).rows) == 25  # no deadline left behind


def test_a_query_cannot_build_huge_values(reader: ReadOnlyStore) -> None:
    with pytest.raises(QueryError, match="too big"):
        reader.query("SELECT length(zeroblob(1000000000))")
    with pytest.raises(QueryError, match="too big"):
        reader.query("SELECT printf('%.*c', 100000000, 'x')")


def test_max_rows_truncates_and_says_so(reader: ReadOnlyStore) -> None:
    sql = "SELECT pid FROM processes ORDER BY pid"
    truncated = reader.query(sql, max_rows=10)
    assert truncated.rows == tuple((pid,) for pid in range(100, 110))
    assert truncated.truncated is True
    exact = reader.query(sql, max_rows=25)
    assert (len(exact.rows), exact.truncated) == (25, False)


def test_an_interrupted_query_does_not_block_the_writer(
    populated: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    with open_readonly(populated.path) as reader:
        reader.query("SELECT pid FROM processes", max_rows=1)
        populated.apply(make_delta(3.0, added=[make_record(7, 3.0)]))
        result = populated.retention(1e9, 1 << 30, 4.0)
        assert result.bytes_after > 0
        assert reader.query("SELECT count(*) FROM processes WHERE pid = 7").rows == ((1,),)


def test_process_lookups_follow_instances_not_pids(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    init = make_record(1, 0.0, ppid=0, name="init")
    old_shell = make_record(200, 10.0, name="old-sh")  # pid 200, ended; its pid gets reused
    shell = make_record(200, 50.0, name="sh")
    child = make_record(300, 60.0, ppid=200, name="curl")  # started after old-sh ended
    ended_child = make_record(301, 61.0, ppid=200, name="id")
    store.apply(make_delta(10.0, added=[init, old_shell]))
    store.apply(make_delta(50.0, added=[shell], ended=[old_shell.key]))
    store.apply(make_delta(61.0, added=[child, ended_child]))
    store.apply(make_delta(62.0, ended=[ended_child.key]))

    with open_readonly(store.path) as reader:
        assert [r.pid for r in live_records(reader)] == [1, 200, 300]
        assert [r.name for r in records_for_pid(reader, 200)] == ["sh", "old-sh"]
        assert [r.name for r in ancestry(reader, child)] == ["sh", "init"]
        assert [r.name for r in children_of(reader, shell)] == ["curl"]
        assert [r.name for r in children_of(reader, shell, include_ended=True)] == ["curl", "id"]
        stored_old_shell = records_for_pid(reader, 200)[1]
        assert children_of(reader, stored_old_shell, include_ended=True) == []


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to read as another user",
)
def test_another_user_can_read_a_stopped_daemons_store(
    make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """`daemoneye query` by a group member works while the daemon is stopped, although that
    user cannot create the WAL's shared-memory file next to the store."""
    top = Path(tempfile.mkdtemp(prefix="daemoneye-ro-"))
    try:
        top.chmod(0o755)
        path = top / "state" / "daemoneye.db"
        with Store.open(path, file_mode=0o644) as store:
            store.apply(make_delta(1.0, added=[make_record(4242, 1.0)]))
        assert not Path(f"{path}-shm").exists()
        script = (
            "import sys; from daemoneye.store import open_readonly; "
            "print(open_readonly(sys.argv[1]).query('SELECT pid FROM processes').rows)"
        )
        result = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                script,
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert (result.returncode, result.stdout.strip()) == (0, "((4242,),)"), result.stderr
        assert not Path(f"{path}-shm").exists()
    finally:
        shutil.rmtree(top)
