"""A real daemon whose store sits on a small tmpfs that fills up: an attack started while the
disk is full reaches the file sink (on another filesystem) at once and the store once space
returns; `health` fails steadily meanwhile and the log stays short. Root only (mount)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from tests.integration.conftest import DaemonHarness, Sleeper, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs for the store needs root"
)

RULE = """
[[rule]]
id = "test.diskfull"
name = "Marker"
description = "a process carrying the test marker"
severity = "high"
query = "SELECT pid, start_time, name FROM processes WHERE cmdline LIKE '%{mark}%'"
"""


@pytest.fixture
def small_disk(harness: DaemonHarness) -> Iterator[Path]:
    """The store's directory on its own 32 MiB tmpfs, unmounted afterwards."""
    mount = harness.db.parent
    mount.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        if harness.process is not None and harness.process.poll() is None:
            harness.process.kill()
            harness.process.wait()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` with one file; the file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError:  # ENOSPC: full, as wanted (a short write comes first)
                break
    finally:
        os.close(fd)
    return filler


def sink_alerts(path: Path, rule_id: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [alert for alert in map(json.loads, lines) if alert["rule_id"] == rule_id]


def stored(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [tuple(row) for row in conn.execute(sql)]
    finally:
        conn.close()


def test_an_alert_raised_while_the_disk_is_full_is_delivered_and_stored_later(
    harness: DaemonHarness, small_disk: Path, sleeper: Sleeper
) -> None:
    sink_file = harness.root / "alerts.jsonl"  # not on the full filesystem
    config = harness.root / "config" / "daemoneye"
    (config / "rules.d").mkdir(parents=True)
    (config / "rules.d" / "mine.toml").write_text(RULE.format(mark="zz-disk-full-zz"))
    (config / "config.toml").write_text(f'[sinks.file]\nenabled = true\npath = "{sink_file}"\n')
    harness.start(interval="0.2")
    filler = fill(small_disk)

    child = sleeper("zz-disk-full-zz")
    (alert,) = wait_for(
        lambda: [a for a in sink_alerts(sink_file, "test.diskfull") if a["pid"] == child.pid],
        "the alert in the file sink",
    )
    assert stored(harness.db, "SELECT count(*) FROM alerts WHERE rule_id = 'test.diskfull'") == [
        (0,)
    ]  # not in the store: it is full
    wait_for(lambda: harness.cli("health").returncode == 1, "health to report the outage")
    for _ in range(3):  # then it fails every time, and says why
        result = harness.cli("health")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "the store cannot be written" in result.stdout
        assert "alerts held in memory" in result.stdout

    filler.unlink()
    rows = wait_for(
        lambda: stored(
            harness.db,
            "SELECT a.id, o.sink, o.state FROM alerts a JOIN sink_outbox o "
            f"ON o.alert_id = a.id WHERE a.rule_id = 'test.diskfull' AND a.pid = "
            f"{child.pid}",
        ),
        "the alert in the store",
    )
    assert rows == [(alert["alert_id"], "file", "delivered")]  # same id, not sent again
    wait_for(lambda: harness.cli("health").returncode == 0, "health to be ok again")
    assert len(sink_alerts(sink_file, "test.diskfull")) == 1
    assert stored(harness.db, f"SELECT count(*) FROM processes WHERE pid = {child.pid}") == [(1,)]
    log = harness.log()
    assert log.count("store_outage") <= 3, log  # first failure (+ a summary per 30 s)
    assert "the store is writable again after" in log
    assert "nothing of it was written" not in log  # no line per failed tick
    assert harness.stop() == 0
