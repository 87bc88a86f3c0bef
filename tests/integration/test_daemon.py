"""The daemon as a user runs it: start it, start and end processes, ask the store what ran."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import DaemonHarness, Sleeper, steer_pid_reuse, wait_for


def marker() -> str:
    return f"daemoneye-test-{uuid.uuid4().hex[:12]}"


def sha256_of(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def rows_for(
    harness: DaemonHarness, child: subprocess.Popen[bytes], mark: str, table: str = "processes"
) -> list[dict]:  # type: ignore[type-arg]
    """The child's rows. Matching on the pid too: the querying CLI's own argv holds the mark."""
    return harness.query(
        f"SELECT * FROM {table} WHERE pid = {child.pid} AND cmdline LIKE '%{mark}%'"
    )


def test_child_is_recorded_with_exe_cmdline_hash_and_end(
    harness: DaemonHarness, sleeper: Sleeper
) -> None:
    harness.start()
    mark = marker()
    child = sleeper(mark)
    (row,) = wait_for(lambda: rows_for(harness, child, mark), "the child in the store")
    exe = os.path.realpath(sys.executable)
    assert row["pid"] == child.pid
    assert row["ppid"] == os.getpid()
    assert row["exe"] == exe
    assert row["cmdline"] == f"{sys.executable} -c import time; time.sleep(120) {mark}"
    assert row["cwd"] == os.getcwd()
    assert row["uid"] == os.getuid()
    assert row["ended_at"] is None
    wait_for(lambda: rows_for(harness, child, mark)[0]["exe_sha256"], "the executable's hash")
    assert rows_for(harness, child, mark)[0]["exe_sha256"] == sha256_of(exe)
    assert [r["pid"] for r in rows_for(harness, child, mark, "live_processes")] == [child.pid]

    child.kill()
    child.wait()
    (ended,) = wait_for(
        lambda: [r for r in rows_for(harness, child, mark) if r["ended_at"] is not None],
        "ended_at to be set",
    )
    assert ended["ended_at"] >= ended["first_seen"]
    assert rows_for(harness, child, mark, "live_processes") == []
    kinds = [
        e["kind"]
        for e in harness.query(
            f"SELECT kind FROM process_events WHERE pid = {child.pid} "
            f"AND start_time = {ended['start_time']!r} ORDER BY id"
        )
    ]
    assert kinds[0] in ("start", "exec") and kinds[-1] == "exit"


def test_processes_command_lists_and_filters(harness: DaemonHarness, sleeper: Sleeper) -> None:
    harness.start()
    mark = marker()
    child = sleeper(mark)
    wait_for(lambda: rows_for(harness, child, mark), "the child in the store")
    # The CLI's own earlier runs hold the mark in their argv: negate them out.
    listed = harness.cli("processes", f"cmd:{mark}", "-cmd:'-m daemoneye'", check=True).stdout
    assert str(child.pid) in listed and mark in listed
    assert len(listed.strip().splitlines()) == 2  # header and the child
    shown = harness.cli("processes", "show", str(child.pid), check=True).stdout
    assert os.path.realpath(sys.executable) in shown and "ANCESTRY" in shown
    bad = harness.cli("processes", "usr:root")
    assert bad.returncode == 2 and "did you mean 'user'" in bad.stderr


def test_health_reports_a_running_daemon_and_fails_when_it_stops(harness: DaemonHarness) -> None:
    harness.start()
    harness.wait_ticks(1)
    ok = harness.cli("health")
    assert ok.returncode == 0, ok.stderr
    assert "status" in ok.stdout and "ok" in ok.stdout and "denied" in ok.stdout
    assert harness.stop() == 0
    stopped = harness.cli("health")
    assert stopped.returncode == 1
    assert "unhealthy" in stopped.stdout and "the daemon stopped" in stopped.stdout


def test_sigterm_is_graceful_and_releases_the_store(harness: DaemonHarness) -> None:
    harness.start()
    assert harness.stop(signal.SIGTERM) == 0
    log = harness.log()
    assert "SIGTERM: stopping" in log and "stopped" in log
    harness.start()  # the lock was released: a new daemon starts on the same store
    assert harness.stop(signal.SIGINT) == 0


def test_two_senders_of_one_stop_still_get_a_graceful_stop(harness: DaemonHarness) -> None:
    """The dashboard stopping its private daemon as it dies, and the kernel's parent-death
    signal, arrive together: that is one request, not an operator forcing an exit."""
    harness.start()
    assert harness.process is not None
    harness.process.send_signal(signal.SIGINT)  # two kinds: the kernel would merge two TERMs
    assert harness.stop(signal.SIGTERM) == 0
    log = harness.log()
    assert "already stopping" in log and "forcing exit" not in log and "stopped" in log


def test_second_daemon_on_the_same_store_refuses(harness: DaemonHarness) -> None:
    harness.start()
    second = subprocess.run(
        [sys.executable, "-m", "daemoneye", "--db", str(harness.db), "daemon"],
        env=harness.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert second.returncode == 1
    assert "another daemon" in second.stderr and str(harness.process.pid) in second.stderr  # type: ignore[union-attr]


def test_kill_9_then_restart_keeps_one_row_per_instance(
    harness: DaemonHarness, sleeper: Sleeper
) -> None:
    harness.start(interval="0.1")
    mark_alive, mark_dies = marker(), marker()
    survivor = sleeper(mark_alive)
    victim = sleeper(mark_dies)
    wait_for(
        lambda: rows_for(harness, survivor, mark_alive) and rows_for(harness, victim, mark_dies),
        "both children in the store",
    )
    harness.stop(signal.SIGKILL)  # mid-tick or between ticks: both must be safe
    victim.kill()
    victim.wait()
    harness.start(interval="0.1")
    harness.wait_ticks(2)
    alive_rows = rows_for(harness, survivor, mark_alive)
    assert len(alive_rows) == 1 and alive_rows[0]["ended_at"] is None
    assert alive_rows[0]["pid"] == survivor.pid
    dead_rows = rows_for(harness, victim, mark_dies)
    assert len(dead_rows) == 1 and dead_rows[0]["ended_at"] is not None
    check = harness.query(
        "SELECT count(*) AS n FROM processes GROUP BY pid, start_time HAVING n > 1"
    )
    assert check == []


def test_query_refuses_writes_and_leaves_the_store_unchanged(harness: DaemonHarness) -> None:
    harness.start()
    harness.stop()
    before = harness.db.read_bytes()
    for sql in (
        "DELETE FROM processes",
        "SELECT 1; DROP TABLE processes",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "PRAGMA user_version = 99",
        "SELEC pid FROM processes",
    ):
        result = harness.cli("query", sql)
        assert result.returncode == 2, sql
        assert result.stderr.startswith("daemoneye: "), sql
        assert "Traceback" not in result.stderr
    assert harness.db.read_bytes() == before


def test_query_output_formats(harness: DaemonHarness) -> None:
    harness.start()
    harness.stop()
    sql = "SELECT 1 AS one, 'a,b' AS two"
    assert harness.cli("-o", "csv", "query", sql, check=True).stdout == 'one,two\n1,"a,b"\n'
    assert (
        harness.cli("-o", "ndjson", "query", sql, check=True).stdout == '{"one": 1, "two": "a,b"}\n'
    )
    table = harness.cli("query", sql, check=True).stdout.splitlines()
    assert table[0].split() == ["ONE", "TWO"] and table[1].split() == ["1", "a,b"]


def test_broken_config_on_sighup_keeps_the_running_configuration(harness: DaemonHarness) -> None:
    config = harness.root / "config" / "daemoneye" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[store]\nretention = '2d'\n")
    harness.start()
    config.write_text("[store]\nretention = = 3\n")
    assert harness.process is not None
    harness.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in harness.log(), "the refused reload in the log")
    assert harness.process.poll() is None
    assert "config.toml" in harness.log() and "line 2" in harness.log()
    # The CLI refuses the broken file too; read the daemon's progress with a good one.
    good = harness.root / "good.toml"
    good.write_text("")
    harness.cli_args = ["--config", str(good)]
    harness.wait_ticks(1)  # still scanning
    config.write_text("[store]\nretention = '3d'\n")
    harness.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in harness.log(), "the good reload in the log")


def test_corrupt_store_is_refused_and_left_alone(harness: DaemonHarness) -> None:
    harness.db.parent.mkdir(parents=True)
    harness.db.write_bytes(b"this is not a database, it is a precious file" * 100)
    before = harness.db.read_bytes()
    harness.start(wait_ready=False)
    assert harness.process is not None
    code = harness.process.wait(timeout=60)
    assert code == 1
    assert str(harness.db) in harness.log() and "Traceback" not in harness.log()
    assert harness.db.read_bytes() == before


def test_deleted_executable_is_hashed_and_flagged(
    harness: DaemonHarness,
    sleeper: Sleeper,
    tmp_path: Path,
) -> None:
    binary = tmp_path / "sleeper-bin"
    shutil.copy("/bin/sleep", binary)
    expected = sha256_of(str(binary))
    child = sleeper("", argv=[str(binary), "120"])
    binary.unlink()
    harness.start()
    (row,) = wait_for(
        lambda: harness.query(
            f"SELECT * FROM processes WHERE pid = {child.pid} AND exe_sha256 IS NOT NULL"
        ),
        "the deleted binary's hash",
    )
    assert row["exe_deleted"] == 1
    assert row["exe"] == str(binary)
    assert row["exe_sha256"] == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="steering pid reuse needs root (ns_last_pid)")
def test_reused_pid_is_a_new_instance(harness: DaemonHarness, sleeper: Sleeper) -> None:
    harness.start(interval="0.1")
    first = sleeper(marker())
    wait_for(
        lambda: harness.query(f"SELECT 1 FROM processes WHERE pid = {first.pid}"),
        "the first instance",
    )
    first.kill()
    first.wait()
    wait_for(
        lambda: harness.query(
            f"SELECT 1 FROM processes WHERE pid = {first.pid} AND ended_at IS NOT NULL"
        ),
        "the first instance to end",
    )
    steer_pid_reuse(first.pid, lambda: sleeper(marker()))

    def both_instances() -> list[dict[str, Any]] | None:
        rows = harness.query(
            f"SELECT start_time, ended_at FROM processes "
            f"WHERE pid = {first.pid} ORDER BY start_time"
        )
        return rows if len(rows) == 2 else None

    rows = wait_for(both_instances, "two instances of one pid")
    assert rows[0]["ended_at"] is not None and rows[1]["ended_at"] is None
    assert rows[0]["start_time"] < rows[1]["start_time"]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the daemon as another user",
)
def test_unprivileged_daemon_records_what_it_may_and_says_so(harness: DaemonHarness) -> None:
    """As nobody the daemon still sees every process, but not other users' exe and cwd."""
    home = Path(tempfile.mkdtemp(prefix="de-nobody-"))  # pytest's tmp is root-only
    os.chown(home, 65534, 65534)  # theirs alone: the daemon refuses a world-writable socket dir
    env = {
        **harness.env,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_RUNTIME_DIR": str(home),
    }
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    log = home / "nobody.log"
    process = subprocess.Popen(
        [
            *nobody,
            sys.executable,
            "-m",
            "daemoneye",
            "--db",
            str(home / "n.db"),
            "daemon",
            "--interval",
            "0.2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: "ready:" in log.read_text() or process.poll() is not None,
            "the unprivileged daemon to be ready",
        )
        text = log.read_text()
        assert "running as uid 65534 without privileges" in text, text

        def init_row() -> str | None:
            result = subprocess.run(
                [
                    *nobody,
                    sys.executable,
                    "-m",
                    "daemoneye",
                    "--db",
                    str(home / "n.db"),
                    "-o",
                    "json",
                    "query",
                    "SELECT pid, uid, exe FROM processes WHERE pid = 1",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            found = result.returncode == 0 and result.stdout.strip() != "[]"
            return result.stdout if found else None

        (init,) = json.loads(wait_for(init_row, "pid 1 in the unprivileged store"))
        assert init["exe"] is None  # root's process: seen, but its exe is not ours to read
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def test_an_explicit_db_is_read_while_a_daemon_runs_on_another_store(
    harness: DaemonHarness, tmp_path: Path
) -> None:
    """`--db PATH` means that store: `query` and `alerts list` read the file named, not the
    running daemon (whose store is another file)."""
    from daemoneye.store import Store

    other = tmp_path / "other" / "o.db"
    with Store.open(other):
        pass
    harness.start()
    harness.wait_ticks(1)
    assert harness.query("SELECT count(*) AS n FROM processes")[0]["n"] > 0
    result = harness.cli(
        "query", "SELECT count(*) AS n FROM processes", "--db", str(other), "-o", "json", check=True
    )
    assert json.loads(result.stdout) == [{"n": 0}]
    assert "reading the store" not in result.stderr
    listed = harness.cli("alerts", "list", "--db", str(other), "-o", "json", check=True)
    assert json.loads(listed.stdout) == []
