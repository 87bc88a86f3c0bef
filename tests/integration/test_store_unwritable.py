"""A store that cannot be created or reached is one line naming the path and the problem, and
exit code 1 — never a traceback: for an unprivileged user in a read-only directory, as root on
a read-only mount or in an immutable directory, and for the CLI's read-only `--db` path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.errors import StoreError
from daemoneye.store import Store

REPO = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
needs_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run as an unprivileged user",
)


@pytest.fixture
def home() -> Iterator[Path]:
    """A home for user 65534 (pytest's tmp_path is root-only)."""
    top = Path(tempfile.mkdtemp(prefix="de-unwritable-"))
    top.chmod(0o755)
    home = top / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    try:
        yield home
    finally:
        for path in (top, *top.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)


def _as_nobody(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_RUNTIME_DIR": str(home),
    }
    return subprocess.run(
        [
            *NOBODY,
            sys.executable,
            "-m",
            "daemoneye",
            "--mode",
            "user",
            "--socket",
            str(home / "de.sock"),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )


def _error_lines(stderr: str) -> list[str]:
    """stderr without the daemon's INFO/WARNING log lines."""
    return [
        line for line in stderr.splitlines() if " INFO " not in line and " WARNING " not in line
    ]


@pytest.mark.root
@needs_nobody
def test_daemon_in_a_read_only_directory_says_so_in_one_line(home: Path) -> None:
    state = home / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    state.chmod(0o555)  # theirs, but not writable: $XDG_STATE_HOME/daemoneye cannot be made
    result = _as_nobody(home, "daemon")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert _error_lines(result.stderr) == [
        f"daemoneye: cannot create the store in {state / 'daemoneye'}: directory {state} is "
        "not writable (Permission denied)"
    ]


@pytest.mark.root
@needs_nobody
def test_daemon_with_the_store_file_in_a_read_only_directory(home: Path) -> None:
    """The store itself may be writable: its lock, WAL and -shm files still need the directory."""
    directory = home / "db"
    directory.mkdir()
    os.chown(directory, 65534, 65534)
    store = directory / "de.db"
    with Store.open(store):
        pass
    os.chown(store, 65534, 65534)
    directory.chmod(0o555)
    result = _as_nobody(home, "--db", str(store), "daemon")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert _error_lines(result.stderr) == [
        f"daemoneye: cannot use the store {store}: directory {directory} is not writable "
        "(Permission denied); the daemon keeps its lock, WAL and shared-memory files next to "
        "the store"
    ]


@pytest.mark.root
@needs_nobody
def test_cli_with_a_store_behind_an_unsearchable_directory(home: Path) -> None:
    """`--db` read-only fallback (query) and the CLI's direct store write (alerts ack) both name
    the store when a directory on the way cannot be searched."""
    directory = home / "private"
    directory.mkdir(mode=0o700)  # root's: user 65534 cannot look inside
    store = directory / "de.db"
    with Store.open(store):
        pass
    for args in (("query", "SELECT 1"), ("alerts", "ack", "1")):
        result = _as_nobody(home, "--db", str(store), *args)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert (
            f"cannot reach the store {store}: a directory on the way is not searchable for uid "
            "65534 (Permission denied)"
        ) in result.stderr.splitlines()[-1]


@pytest.fixture
def read_only_mount() -> Iterator[Path]:
    """An empty directory bind-mounted read-only on itself."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a read-only bind mount")
    top = Path(tempfile.mkdtemp(prefix="de-rofs-"))
    try:
        bound = subprocess.run(
            ["mount", "--bind", str(top), str(top)], capture_output=True, check=False
        )
        if bound.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {bound.stderr.decode(errors='replace')}")
        try:
            remounted = subprocess.run(
                ["mount", "-o", "remount,ro,bind", str(top)], capture_output=True, check=False
            )
            if remounted.returncode != 0:
                pytest.skip("cannot remount read-only here")
            yield top
        finally:
            subprocess.run(["umount", str(top)], check=False)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.root
def test_store_on_a_read_only_mount_is_a_store_error(read_only_mount: Path) -> None:
    for path, directory in (
        (read_only_mount / "de.db", read_only_mount),
        (read_only_mount / "sub" / "de.db", read_only_mount / "sub"),
    ):
        with pytest.raises(StoreError) as caught:
            Store.open(path)
        assert str(caught.value) == (
            f"cannot create the store in {directory}: directory {read_only_mount} is not "
            "writable (Read-only file system)"
        )


@pytest.mark.root
def test_daemon_on_a_read_only_mount_exits_1_with_one_line(
    read_only_mount: Path, tmp_path: Path
) -> None:
    store = read_only_mount / "de.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemoneye",
            "--mode",
            "user",
            "--db",
            str(store),
            "--socket",
            str(tmp_path / "s.sock"),
            "daemon",
        ],
        env={
            **os.environ,
            "DAEMONEYE_DAEMON__USER": "root",  # as root: stay uid 0 (tests/daemon_env.py)
            "XDG_CONFIG_HOME": str(tmp_path / "c"),
            "XDG_STATE_HOME": str(tmp_path / "s"),
            "XDG_RUNTIME_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert _error_lines(result.stderr) == [
        f"daemoneye: cannot create the store in {read_only_mount}: directory {read_only_mount} "
        "is not writable (Read-only file system)"
    ]


@pytest.mark.root
def test_store_in_an_immutable_directory_is_a_store_error() -> None:
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr(1)")
    top = Path(tempfile.mkdtemp(prefix="de-immutable-"))
    try:
        if (
            subprocess.run(["chattr", "+i", str(top)], capture_output=True, check=False).returncode
            != 0
        ):
            pytest.skip("this filesystem has no immutable attribute")
        with pytest.raises(StoreError) as caught:
            Store.open(top / "de.db")
        assert str(caught.value) == (
            f"cannot create the store in {top}: directory {top} is not writable "
            "(Operation not permitted)"
        )
    finally:
        subprocess.run(["chattr", "-i", str(top)], check=False)
        shutil.rmtree(top, ignore_errors=True)
