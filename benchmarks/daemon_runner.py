"""The real daemon, run as a user would: ``python -m daemoneye --mode user --db DB daemon``,
with HOME and every XDG directory inside a temp dir, stopped with SIGTERM (SIGKILL after a
grace period) whatever happens to the benchmark."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from benchmarks import cleanup

REPO_ROOT = Path(__file__).resolve().parent.parent
_STOP_GRACE_S = 15.0


class DaemonFailed(RuntimeError):
    """The daemon exited or never became ready; the message holds its last log lines."""


class DaemonProcess:
    """``with DaemonProcess(interval=1) as daemon: daemon.wait_ready(); ...``"""

    def __init__(self, *, interval: float = 1.0, extra_env: dict[str, str] | None = None) -> None:
        self.interval = interval
        self.root = Path(tempfile.mkdtemp(prefix="daemoneye-bench-daemon-"))
        self.db = self.root / "d.db"
        self.log_path = self.root / "daemon.log"
        self._extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self._handle: int | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def __enter__(self) -> DaemonProcess:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DAEMONEYE_", "PROCMOND_", "XDG_"))
        }
        for name in ("config", "state", "cache", "data", "runtime"):
            (self.root / name).mkdir(mode=0o700, exist_ok=True)  # a caller may seed config/
        root = self.root
        env.update(
            HOME=str(root),
            XDG_CONFIG_HOME=str(root / "config"),
            XDG_STATE_HOME=str(root / "state"),
            XDG_CACHE_HOME=str(root / "cache"),
            XDG_DATA_HOME=str(root / "data"),
            XDG_RUNTIME_DIR=str(root / "runtime"),
            DAEMONEYE_MODE="user",
            **self._extra_env,
        )
        argv = [
            sys.executable,
            "-m",
            "daemoneye",
            "--mode",
            "user",
            "--db",
            str(self.db),
            "daemon",
            "--interval",
            f"{self.interval:g}",
        ]
        self._handle = cleanup.register("daemon", self.stop)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        """Block until the log says "ready:"; returns the seconds it took."""
        started = time.monotonic()
        while "ready:" not in self.log():
            if self.process is not None and self.process.poll() is not None:
                raise DaemonFailed(f"daemon exited {self.process.returncode}: {self._tail()}")
            if time.monotonic() - started > timeout_s:
                raise DaemonFailed(f"daemon not ready after {timeout_s:.0f} s: {self._tail()}")
            time.sleep(0.05)
        return time.monotonic() - started

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise DaemonFailed(f"daemon exited {self.process.returncode}: {self._tail()}")

    def _tail(self) -> str:
        lines = self.log().strip().splitlines()
        return " | ".join(lines[-3:]) or "(no output)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; remove the temp dir. Idempotent."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._handle is not None:
            cleanup.unregister(self._handle)
            self._handle = None
        shutil.rmtree(self.root, ignore_errors=True)
