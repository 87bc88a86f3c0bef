"""`process.signal` signals exactly the instance the client saw (pid + start time)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from daemoneye.collector.procfs import read_boot_time
from daemoneye.daemon.process_signal import parse_signal
from daemoneye.procmond.signals import (
    SignalRefused,
    StaleProcess,
    signal_instance,
    start_time_of,
)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_signal_names_and_numbers() -> None:
    assert parse_signal("TERM") is signal.SIGTERM
    assert parse_signal("sigkill") is signal.SIGKILL
    assert parse_signal(" hup ") is signal.SIGHUP
    assert parse_signal(15) is signal.SIGTERM
    for bad in ("TERMINATE", "", 0, 999):
        with pytest.raises(ValueError):
            parse_signal(bad)


def test_the_instance_seen_is_signalled(child: subprocess.Popen[bytes]) -> None:
    boot = read_boot_time()
    started = start_time_of(child.pid, boot)
    how = signal_instance(child.pid, started, signal.SIGTERM, boot_time=boot)
    assert how in ("pidfd", "kill")
    assert child.wait(timeout=10) == -signal.SIGTERM


def test_another_instance_of_the_pid_is_never_signalled(child: subprocess.Popen[bytes]) -> None:
    boot = read_boot_time()
    started = start_time_of(child.pid, boot)
    with pytest.raises(StaleProcess, match="now belongs to another process"):
        signal_instance(child.pid, started - 5.0, signal.SIGKILL, boot_time=boot)
    assert child.poll() is None  # untouched
    child.kill()
    child.wait()
    with pytest.raises(StaleProcess, match="no process with pid"):
        signal_instance(child.pid, started, signal.SIGKILL, boot_time=boot)


def test_init_and_the_daemon_itself_are_refused() -> None:
    boot = read_boot_time()
    for pid in (1, 0, -1, os.getpid()):
        with pytest.raises(SignalRefused):
            signal_instance(pid, 0.0, signal.SIGTERM, boot_time=boot)
