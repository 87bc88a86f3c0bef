"""`daemoneye` on a terminal: attach the dashboard to the daemon, or start a private one.

The dashboard attaches to the socket of `--socket` or of the mode. When nobody answers there
(and no socket was given explicitly) it starts `python -m daemoneye --mode user daemon` as a
child process with the user's paths, waits for its socket, shows in the header that it did, and
stops it when the dashboard exits. The child's output goes to a log file, never the terminal.
The child is also told by the kernel to stop when the dashboard dies without exiting (the SSH
session dropped, a kill -9): it asks for SIGTERM on its parent's death (`PR_SET_PDEATHSIG`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemoneye.config.loading import load_config
from daemoneye.config.schema import LoadedConfig
from daemoneye.errors import DaemonEyeError
from daemoneye.paths import Mode

if TYPE_CHECKING:
    from daemoneye.ipc.client import DaemonClient, SshRoute
    from daemoneye.tui.source import DashboardSource

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class LauncherError(DaemonEyeError):
    """The dashboard could not reach or start a daemon."""


def daemon_answers(path: Path, timeout: float = 1.0) -> bool:
    """True when something accepts connections on the Unix socket `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(os.fsencode(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@dataclass
class PrivateDaemon:
    """A daemon this dashboard started and must stop."""

    process: subprocess.Popen[bytes]
    socket: Path
    log_file: Path

    @property
    def description(self) -> str:
        return f"private daemon pid {self.process.pid}"

    @classmethod
    def start(cls, config_file: Path | None, env: dict[str, str] | None = None) -> PrivateDaemon:
        """Start a user-mode daemon and wait until its socket answers."""
        env = dict(os.environ if env is None else env)
        env.pop("DAEMONEYE_MODE", None)
        user = load_config(mode=Mode.USER, config_file=config_file, env=env)
        log_file = user.paths.db.parent / "private-daemon.log"
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = [sys.executable, "-m", "daemoneye", "--mode", "user"]
        if config_file is not None:
            argv += ["--config", str(config_file)]
        argv.append("daemon")
        with open(log_file, "ab") as log:
            os.chmod(log_file, 0o600)
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_stop_with_parent(os.getpid()),
            )
        daemon = cls(process, user.paths.socket, log_file)
        daemon.wait_until_ready()
        return daemon

    def wait_until_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LauncherError(
                    f"the private daemon exited with status "
                    f"{self.process.returncode}; see {self.log_file}"
                )
            if daemon_answers(self.socket, timeout=0.2):
                return
            time.sleep(0.1)
        self.stop()
        raise LauncherError(
            f"the private daemon did not open {self.socket} within "
            f"{timeout:g} s; see {self.log_file}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)


_PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent: int) -> Callable[[], None]:
    """For the forked child, before exec: SIGTERM when `parent` dies. The kernel ties this to
    the thread that forked, so the dashboard starts its daemon from its main thread."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def in_child() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the dashboard died before the request took effect
            os._exit(1)

    return in_child


_DASHBOARD: dict[str, Any] = {"client_name": "dashboard", "reconnect": True}


def _client(route: SshRoute) -> DaemonClient:
    """A dashboard client of a remote daemon (ssh's login takes a while: a longer timeout)."""
    from daemoneye.ipc.client import DaemonClient

    return DaemonClient(route.argv[-1], ssh=route, connect_timeout=15.0, **_DASHBOARD)


def _check_remote(route: SshRoute) -> None:
    """Reach the remote daemon once before the dashboard takes the terminal, so a refused
    login, a missing daemoneye or no daemon there is a clear error, not an endless retry."""
    from daemoneye.ipc.client import DaemonClient, DaemonUnavailable

    async def probe() -> None:
        client = DaemonClient(route.argv[-1], ssh=route, connect_timeout=15.0)
        try:
            await client.connect()
        finally:
            await client.close()

    try:
        asyncio.run(probe())
    except DaemonUnavailable as exc:
        raise LauncherError(str(exc)) from None


def run_dashboard(
    loaded: LoadedConfig,
    *,
    config_file: Path | None,
    socket_given: bool,
    remotes: Mapping[str, SshRoute] | None = None,
) -> int:
    """Run the dashboard until the user quits; the exit status. With `remote` it attaches to
    that host's daemon through ssh (never a private daemon: that host's is the one asked for)."""
    # Log records go to Textual's devtools log, never onto the terminal the dashboard owns.
    from textual.logging import TextualHandler

    from daemoneye.ipc.client import DaemonClient
    from daemoneye.tui.app import DaemonEyeApp, follow_terminal_size
    from daemoneye.tui.ipc_source import IpcSource
    from daemoneye.tui.multi_source import MultiSource
    from daemoneye.tui.preferences import (
        configured_hide_kernel_threads,
        configured_theme,
        preference_file,
        remember_hide_kernel_threads,
        remember_theme,
    )

    logging.basicConfig(level=logging.WARNING, handlers=[TextualHandler()], force=True)
    socket_path = loaded.paths.socket
    private: PrivateDaemon | None = None
    remotes = dict(remotes or {})
    if len(remotes) == 1:
        _check_remote(next(iter(remotes.values())))
    elif remotes:
        pass  # several: a host that does not answer is marked in the header, not fatal
    elif not daemon_answers(socket_path):
        if socket_given:
            raise LauncherError(f"no daemon answers on {socket_path}")
        print(
            "daemoneye: no daemon is running; starting a private one for this user…",
            file=sys.stderr,
        )
        private = PrivateDaemon.start(config_file)
        socket_path = private.socket
    source: DashboardSource
    if len(remotes) > 1:
        source = MultiSource({label: IpcSource(_client(route)) for label, route in remotes.items()})
    else:
        remote = next(iter(remotes.values()), None)
        source = IpcSource(_client(remote) if remote else DaemonClient(socket_path, **_DASHBOARD))
    app = DaemonEyeApp(
        source,
        theme=configured_theme(loaded),
        remember_theme=partial(remember_theme, preference_file(loaded)),
        private_daemon=private.description if private else "",
        hide_kernel_threads=configured_hide_kernel_threads(loaded),
        remember_kernel_threads=partial(remember_hide_kernel_threads, preference_file(loaded)),
    )
    follow_terminal_size()
    try:
        app.run()
    finally:
        if private is not None:
            private.stop()
    return app.return_code or 0
