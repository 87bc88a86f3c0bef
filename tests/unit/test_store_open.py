"""Opening the store: schema and migrations, refusing files it must not touch, permissions."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from daemoneye.errors import StoreError
from daemoneye.store import SCHEMA_VERSION, Store
from daemoneye.store.schema import MIGRATIONS
from tests.unit.conftest import DeltaFactory, RecordFactory


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def raw(path: Path) -> apsw.Connection:
    return apsw.Connection(str(path))


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_new_store_has_the_contract_tables_at_the_current_version(store_path: Path) -> None:
    Store.open(store_path).close()
    conn = raw(store_path)
    objects = {
        (name, kind)
        for name, kind in conn.execute(
            "SELECT name, type FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'"
        )
    }
    assert {
        ("processes", "view"),
        ("process_events", "view"),
        ("process_rows", "table"),
        ("event_rows", "table"),
        ("strings", "table"),
        ("meta", "table"),
        ("live_processes", "view"),
    } <= objects
    assert conn.pragma("user_version") == SCHEMA_VERSION
    assert conn.pragma("journal_mode") == "wal"
    assert conn.pragma("auto_vacuum") == 2  # incremental: retention can return pages to the OS


def test_migrations_form_an_unbroken_chain_ending_at_schema_version() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


def test_reopening_keeps_history(
    store_path: Path, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    with Store.open(store_path) as store:
        store.apply(make_delta(10.0, added=[make_record(42, 5.0)]))
    with Store.open(store_path) as store:
        assert [key.pid for key in store.live_processes()] == [42]


def test_newer_schema_is_refused_and_left_untouched(store_path: Path) -> None:
    Store.open(store_path).close()
    conn = raw(store_path)
    conn.pragma("user_version", SCHEMA_VERSION + 1)
    conn.close()
    before = digest(store_path)

    with pytest.raises(StoreError) as refused:
        Store.open(store_path)

    message = str(refused.value)
    assert f"schema version {SCHEMA_VERSION + 1} is newer than this DaemonEye supports" in message
    assert f"({SCHEMA_VERSION}); upgrade DaemonEye" in message
    assert str(store_path) in message
    assert digest(store_path) == before


@pytest.mark.parametrize("size", [10, 50, 4096, 20_000])
def test_random_bytes_are_refused_as_not_a_store_and_left_untouched(
    store_path: Path, size: int
) -> None:
    store_path.parent.mkdir()
    store_path.write_bytes(os.urandom(size))
    before = digest(store_path)

    with pytest.raises(StoreError, match="corrupt or not a DaemonEye store") as refused:
        Store.open(store_path)

    assert str(store_path) in str(refused.value)
    assert digest(store_path) == before


def test_truncated_store_is_refused_and_left_untouched(
    store_path: Path, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    with Store.open(store_path) as store:
        records = [make_record(pid, 1.0, cmdline=("x" * 200,)) for pid in range(2, 3000)]
        store.apply(make_delta(2.0, added=records))
    data = store_path.read_bytes()
    store_path.write_bytes(data[: len(data) // 2])
    before = digest(store_path)

    with pytest.raises(StoreError, match=r"corrupt|integrity check") as refused:
        Store.open(store_path)

    assert str(store_path) in str(refused.value)
    assert digest(store_path) == before
    assert store_path.stat().st_size == len(data) // 2


def test_another_applications_database_is_refused_and_left_untouched(store_path: Path) -> None:
    store_path.parent.mkdir()
    conn = raw(store_path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY); INSERT INTO invoices VALUES (1)")
    conn.close()
    before = digest(store_path)

    with pytest.raises(StoreError, match="not a DaemonEye store"):
        Store.open(store_path)

    assert digest(store_path) == before


def test_directory_that_is_a_regular_file_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StoreError, match="Not a directory") as refused:
        Store.open(blocker / "daemoneye.db")
    assert str(blocker) in str(refused.value)


def test_directory_that_cannot_be_created_is_reported() -> None:
    # Not even root can create directories in /proc.
    with pytest.raises(
        StoreError,
        match="cannot create the store in /proc/daemoneye-test/state: "
        "cannot create /proc/daemoneye-test: No such file",
    ):
        Store.open(Path("/proc/daemoneye-test/state/daemoneye.db"))


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs mounted at /sys")
def test_directory_where_files_cannot_be_created_is_reported() -> None:
    # sysfs refuses new files even to root.
    with pytest.raises(
        StoreError,
        match=r"cannot create the store in /sys: directory /sys is not "
        r"writable \(Permission denied\)",
    ):
        Store.open(Path("/sys/daemoneye.db"))


def test_store_path_that_is_a_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="Is a directory"):
        Store.open(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses directory permissions")
def test_unwritable_directory_is_reported(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StoreError, match="Permission denied") as refused:
        Store.open(locked / "daemoneye.db")
    assert str(refused.value) == (
        f"cannot create the store in {locked}: directory {locked} is not writable "
        "(Permission denied)"
    )


@pytest.mark.usefixtures("permissive_umask")
def test_store_files_are_private_whatever_the_umask(store_path: Path) -> None:
    with Store.open(store_path):
        assert mode_of(store_path.parent) == 0o700
        assert mode_of(store_path) == 0o600
        for side in ("-wal", "-shm"):
            assert mode_of(Path(f"{store_path}{side}")) == 0o600


def test_existing_store_with_loose_mode_is_tightened(store_path: Path) -> None:
    Store.open(store_path).close()
    os.chmod(store_path, 0o644)
    wal = Path(f"{store_path}-wal")
    wal.write_bytes(b"")
    os.chmod(wal, 0o666)

    with Store.open(store_path):
        assert mode_of(store_path) == 0o600
        assert mode_of(wal) == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_group_readable_store_gets_a_group_searchable_directory(store_path: Path) -> None:
    with Store.open(store_path, file_mode=0o640):
        assert mode_of(store_path) == 0o640
        assert mode_of(store_path.parent) == 0o750


def test_boot_time_is_recorded_once_per_boot(store_path: Path) -> None:
    with Store.open(store_path) as store:
        assert store.boot_time("boot-a", 1_700_000_000.25) == 1_700_000_000.25
        assert store.boot_time("boot-a", 1_700_000_001.0) == 1_700_000_000.25
        assert store.boot_time("boot-b", 1_700_100_000.0) == 1_700_100_000.0
    with Store.open(store_path) as store:  # a daemon restart within the same boot
        assert store.boot_time("boot-a", 1_700_000_000.75) == 1_700_000_000.25


def test_closed_store_refuses_writes(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.apply(make_delta(1.0, added=[make_record(7, 1.0)]))
