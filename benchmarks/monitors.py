"""`top` and `htop`, run the way people run them, so their cost can be read from /proc.

top runs in batch mode (``top -b -d1``, output to /dev/null). htop needs a terminal: it runs in
a detached tmux session on a private tmux socket (``tmux -L …``), so no user session is touched
and ``kill-server`` ends everything. Both get a temp HOME so no rc file of the user is read or
written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from benchmarks import cleanup
from benchmarks.procstat import children, comm


def _private_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("XDG_")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        TERM="xterm-256color",
        LC_ALL="C.UTF-8",
    )
    env.pop("TMUX", None)
    return env


class Top:
    """``top -b -d1`` writing to /dev/null."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="daemoneye-bench-top-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._handle: int | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> Top:
        self._handle = cleanup.register("top", self.stop)
        self.process = subprocess.Popen(
            ["top", "-b", "-d", "1"],
            env=_private_env(self.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
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

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._handle is not None:
            cleanup.unregister(self._handle)
            self._handle = None
        shutil.rmtree(self.home, ignore_errors=True)


class HtopInTmux:
    """``htop -d 10`` (1 s refresh) in a detached 200x50 tmux session."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="daemoneye-bench-htop-"))
        self.socket_name = f"daemoneye-bench-{os.getpid()}-{secrets.token_hex(3)}"
        self.pid = 0
        self.tmux_server_pid = 0
        self._handle: int | None = None

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket_name, "-f", "/dev/null", *args],
            env=_private_env(self.home),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=20,
            check=True,
        )
        return result.stdout.strip()

    def __enter__(self) -> HtopInTmux:
        self._handle = cleanup.register("htop tmux server", self.stop)
        self._tmux("new-session", "-d", "-x", "200", "-y", "50", "htop -d 10")
        self.tmux_server_pid = int(self._tmux("display-message", "-p", "#{pid}"))
        pane_pid = int(self._tmux("list-panes", "-F", "#{pane_pid}").splitlines()[0])
        deadline = time.monotonic() + 10.0
        while not self.pid:  # the pane's shell may exec htop or fork it
            candidates = [pane_pid, *children(pane_pid)]
            self.pid = next((pid for pid in candidates if _is_htop(pid)), 0)
            if not self.pid:
                if time.monotonic() > deadline:
                    raise RuntimeError("htop did not start inside tmux")
                time.sleep(0.1)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """htop first (its tmux server reaps it), then the server, which we adopted as a
        subreaper (cleanup.install) and so reap ourselves. Idempotent."""
        if self.pid and _is_htop(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while _is_htop(self.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        # A failure here means no server is left: already stopped.
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            self._tmux("kill-server")
        server = self.tmux_server_pid
        with contextlib.suppress(OSError):
            if server and comm(server).startswith("tmux"):  # still ours, not a reused pid
                os.kill(server, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            if server:
                os.waitpid(server, 0)
        self.pid = self.tmux_server_pid = 0
        if self._handle is not None:
            cleanup.unregister(self._handle)
            self._handle = None
        shutil.rmtree(self.home, ignore_errors=True)


def _is_htop(pid: int) -> bool:
    try:
        return comm(pid) == "htop"
    except OSError:
        return False
