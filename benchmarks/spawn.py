"""A process group of children we spawn, reap and kill: the only way benchmark processes are
started, so that every one of them can be found and ended.

Children are started with `os.posix_spawn` (vfork + exec, no Python in the child), all in one
process group whose leader is a long-lived anchor, so one `killpg` ends them all and the group
id stays valid while short-lived members come and go. Every child carries ``MARK_VAR=<token>``
in its environment, which is how a survivor is recognised afterwards (`find_marked`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import cleanup

MARK_VAR = "DAEMONEYE_BENCH_MARK"
MAX_LIFETIME_S = 900  # no benchmark child may outlive this, whatever happens to us
SLEEP = "/bin/sleep"

_Arg = str | bytes


class ProcessGroup:
    """Children in one process group, anchored by a `sleep lifetime_s` leader."""

    def __init__(self, token: str, *, lifetime_s: int = MAX_LIFETIME_S) -> None:
        if not 0 < lifetime_s <= MAX_LIFETIME_S:
            raise ValueError(f"lifetime must be 1..{MAX_LIFETIME_S} s, not {lifetime_s}")
        self.token = token
        self.env = {MARK_VAR: token, "PATH": "/usr/bin:/bin", "LC_ALL": "C"}
        self.live: set[int] = set()
        self.spawned_total = 0
        self.exit_statuses: list[int] = []
        self._cleanup_handle = cleanup.register(f"process group {token}", self.kill_all)
        self.pgid = os.posix_spawn(SLEEP, ["sleep", str(lifetime_s)], self.env, setpgroup=0)
        self.live.add(self.pgid)

    def spawn(self, path: _Arg | Path, argv: Sequence[_Arg]) -> int:
        pid = os.posix_spawn(path, list(argv), self.env, setpgroup=self.pgid)
        self.live.add(pid)
        self.spawned_total += 1
        return pid

    def reap(self) -> int:
        """Collect every member that has exited (never blocks); returns how many are alive."""
        while self.live:
            try:
                pid, status = os.waitpid(-self.pgid, os.WNOHANG)
            except ChildProcessError:
                self.live.clear()
                break
            if pid == 0:
                break
            self.live.discard(pid)
            if pid != self.pgid:
                self.exit_statuses.append(os.waitstatus_to_exitcode(status))
        return len(self.live)

    def reap_until_empty(self) -> None:
        """Block, reaping members the moment they exit, until none is left (the anchor dies in
        `kill_all`). Meant for a reaper thread: short-lived children then never linger as
        zombies, which a poller would otherwise see long after they exited."""
        while self.live:
            try:
                pid, status = os.waitpid(-self.pgid, 0)
            except ChildProcessError:
                return
            self.live.discard(pid)
            if pid != self.pgid:
                self.exit_statuses.append(os.waitstatus_to_exitcode(status))

    def kill_all(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the whole group and reap every member. Idempotent."""
        if self.live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            deadline = time.monotonic() + timeout_s
            while self.live and time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(-self.pgid, 0)
                except ChildProcessError:
                    break
                self.live.discard(pid)
            self.live.clear()
        cleanup.unregister(self._cleanup_handle)


def new_token(kind: str) -> str:
    """A marker value unique to one group, prefixed with this run's `run_prefix()`."""
    return f"{run_prefix()}{kind}-{secrets.token_hex(4)}"


def run_prefix() -> str:
    """What every token of this benchmark run starts with (our pid)."""
    return f"{os.getpid()}-"


def find_marked(token_prefix: str = "", *, orphans_only: bool = False) -> list[int]:
    """Pids of running (non-zombie) processes whose marker starts with `token_prefix` (any
    marker when empty). `orphans_only` keeps those whose parent is gone (re-parented to init):
    leftovers of a crashed run, never children of a benchmark running right now. A zombie's
    environ reads empty, so it is never listed."""
    wanted = f"{MARK_VAR}={token_prefix}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                if wanted not in environ.read():
                    continue
            if orphans_only and _parent(name) != 1:
                continue
        except OSError:
            continue  # gone, or a kernel thread
        found.append(int(name))
    return found


def _parent(name: str) -> int:
    with open(f"/proc/{name}/stat", "rb") as stat:
        raw = stat.read()
    return int(raw[raw.rfind(b")") + 2 :].split()[1])


def assert_none_marked(token_prefix: str, what: str, wait_s: float = 5.0) -> None:
    """Fail loudly when a marked process survives: kill it (it is ours by construction) and
    raise, so a leak is never silent."""
    deadline = time.monotonic() + wait_s
    while (survivors := find_marked(token_prefix)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not survivors:
        return
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    raise RuntimeError(
        f"{len(survivors)} {what} survived cleanup (now SIGKILLed): "
        f"pids {survivors[:20]}{' …' if len(survivors) > 20 else ''}"
    )
