"""One daemon per store: an advisory lock next to the database file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from daemoneye.errors import DaemonError


class PidLock:
    """Holds `flock` on `<db>.lock` for the daemon's lifetime; the kernel drops it when the
    process dies, so a kill -9 never leaves a stale lock behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DaemonError(f"cannot create lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DaemonError(
                f"another daemon (pid {holder}) is already using this store "
                f"({self.path.with_suffix('')}); stop it first or pass --db for another store"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
