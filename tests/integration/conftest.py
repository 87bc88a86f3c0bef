"""A real daemon in a temporary directory, driven through the real `daemoneye` command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.daemon_env import isolated_env

T = TypeVar("T")
Sleeper = Callable[..., subprocess.Popen[bytes]]  # the `sleeper` fixture: start(marker, argv=None)
DEADLINE_S = 30.0  # generous: CI machines are shared and slow; this is a hang guard, not a target


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE_S) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@dataclass
class DaemonHarness:
    """Runs `daemoneye` commands against one private store and (re)starts the daemon."""

    root: Path
    env: dict[str, str]
    db: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    cli_args: list[str] = field(default_factory=list)  # global options for every CLI call
    _logs: list[Path] = field(default_factory=list)

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        # The store as configured (not --db, which would read the file instead of asking the
        # daemon): the CLI asks the daemon while it runs and falls back on this store.
        result = subprocess.run(
            [sys.executable, "-m", "daemoneye", *self.cli_args, *args],
            env={**self.env, "DAEMONEYE_STORE__PATH": str(self.db)},
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            pytest.fail(f"daemoneye {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def query(self, sql: str) -> list[dict[str, Any]]:
        result = self.cli("-o", "json", "query", sql, check=True)
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    def start(self, *extra: str, interval: str = "0.2", wait_ready: bool = True) -> None:
        log = self.log_path.with_name(f"daemon-{len(self._logs)}.log")
        self._logs.append(log)
        self.log_path = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daemoneye",
                "--db",
                str(self.db),
                "daemon",
                "--interval",
                interval,
                *extra,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            stdin=subprocess.DEVNULL,
        )
        if wait_ready:
            wait_for(lambda: "ready:" in self.log() or self._died(), "the daemon to be ready")
            if self.process.poll() is not None:
                pytest.fail(f"daemon exited {self.process.returncode}:\n{self.log()}")

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ticks(self) -> int:
        rows = self.cli("-o", "json", "health").stdout
        return int(json.loads(rows)[0]["ticks"]) if rows.strip() else 0

    def wait_ticks(self, count: int = 2) -> None:
        """Wait until the daemon has finished `count` more ticks (so everything is written)."""
        target = self.ticks() + count
        wait_for(lambda: self.ticks() >= target, f"{count} more daemon ticks")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=DEADLINE_S)
        self.process = None
        return code


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[DaemonHarness]:
    env = isolated_env(tmp_path)
    h = DaemonHarness(
        root=tmp_path, env=env, db=tmp_path / "store" / "d.db", log_path=tmp_path / "daemon.log"
    )
    yield h
    if h.process is not None and h.process.poll() is None:
        h.process.kill()
        h.process.wait()


@pytest.fixture
def sleeper() -> Iterator[Sleeper]:
    """Start long-sleeping children with a distinctive argv; all are killed afterwards."""
    children: list[subprocess.Popen[bytes]] = []

    def start(marker: str, argv: list[str] | None = None) -> subprocess.Popen[bytes]:
        argv = argv or [sys.executable, "-c", "import time; time.sleep(120)", marker]
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local HTTP servers must be reached directly, whatever proxy the machine has."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def steer_pid_reuse(
    pid: int, start: Callable[[], subprocess.Popen[bytes]], attempts: int = 50
) -> subprocess.Popen[bytes]:
    """Start a process that gets `pid` again (root only: via ns_last_pid); skips the test
    when the kernel will not let us steer or another process keeps taking the pid."""
    for _attempt in range(attempts):
        try:
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        except OSError as exc:
            pytest.skip(f"cannot steer pid allocation here: {exc}")
        child = start()
        if child.pid == pid:
            return child
        child.kill()
        child.wait()
    pytest.skip("another process kept taking the pid")
