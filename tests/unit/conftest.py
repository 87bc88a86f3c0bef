"""Shared unit-test fixtures: factories for the records the store is fed, and a user
environment of a test's own for the CLI."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from daemoneye.engine.rule_loader import RuleValidator
from daemoneye.models import ProcessEvent, ProcessKey, ProcessRecord, ScanDelta, ScanStats
from daemoneye.store import Store

RecordFactory = Callable[..., ProcessRecord]
DeltaFactory = Callable[..., ScanDelta]


def own_user_env(home: Path, monkeypatch: pytest.MonkeyPatch, *, state: str = "state") -> None:
    """`daemoneye` run in this test finds no daemon, config or state of the user's: every
    DAEMONEYE_, PROCMOND_ and XDG_ variable cleared, HOME and the XDG directories under
    `home` (the state directory named `state`), user mode."""
    for name in list(os.environ):
        if name.startswith(("DAEMONEYE_", "PROCMOND_", "XDG_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / state))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
    monkeypatch.setenv("DAEMONEYE_MODE", "user")


def _record(pid: int, start_time: float, **overrides: Any) -> ProcessRecord:
    base = ProcessRecord(
        pid=pid,
        ppid=1,
        start_time=start_time,
        name="sleep",
        exe="/usr/bin/sleep",
        cmdline=("sleep", "60"),
        cwd="/",
        uid=1000,
        user="alice",
        gid=1000,
        state="S",
        threads=1,
        rss=4096,
        cpu_percent=0.0,
        exe_sha256=None,
        exe_deleted=False,
        first_seen=start_time,
        last_seen=start_time,
    )
    return dataclasses.replace(base, **overrides)


def _delta(
    ts: float,
    *,
    added: Sequence[ProcessRecord] = (),
    updated: Sequence[ProcessRecord] = (),
    execed: Sequence[ProcessRecord] = (),
    ended: Sequence[ProcessKey] = (),
    events: Sequence[ProcessEvent] = (),
) -> ScanDelta:
    stats = ScanStats(0.001, len(added), len(added), len(ended), len(execed), 0, 0)
    return ScanDelta(
        ts, tuple(added), tuple(updated), tuple(execed), tuple(ended), tuple(events), stats
    )


@pytest.fixture
def make_record() -> RecordFactory:
    """`make_record(pid, start_time, **fields)`: a plausible live ProcessRecord."""
    return _record


@pytest.fixture
def make_delta() -> DeltaFactory:
    """`make_delta(ts, added=…, updated=…, execed=…, ended=…, events=…)`: one tick."""
    return _delta


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "daemoneye.db"


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    """A fresh writer store, closed after the test."""
    opened = Store.open(store_path)
    yield opened
    opened.close()


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pin the local time zone to UTC, for what shows times as local time (the dashboard's
    cells): the expected text must not depend on the host."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="module")
def validator() -> Iterator[RuleValidator]:
    """One rule validator per test module: it holds a scratch database."""
    shared = RuleValidator()
    yield shared
    shared.close()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules.d"
    directory.mkdir()
    return directory


@pytest.fixture
def unix_dgram(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A syslog receiver on a Unix datagram socket: (its path, the socket)."""
    path = str(tmp_path / "log")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(5)
    yield path, receiver
    receiver.close()
