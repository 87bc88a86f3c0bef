"""One daemon per store: an advisory lock next to the database file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from daemoneye.errors import DaemonError
from daemoneye.store.files import ensure_store_directory, store_directory_error


class PidLock:
    """Holds `flock` on `<db>.lock` for the daemon's lifetime; the kernel drops it when the
    process dies, so a kill -9 never leaves a stale lock behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, creating the store's directory first when missing. StoreError when
        the directory cannot be created or written (the store could not be either)."""
        ensure_store_directory(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if not os.path.lexists(self.path):
                raise store_directory_error(
                    self.path.parent, exc, store=self.path.with_suffix("")
                ) from None
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
