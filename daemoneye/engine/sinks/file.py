"""The file sink: one JSON object per line per alert, appended, for log shippers.

logrotate-friendly: after the file is renamed (or deleted) the next alert goes to a new file at
the configured path — noticed by comparing the path's inode with the open file's, and forced by
`reopen()` on SIGHUP. With `fsync` on (the default), an alert counts as delivered only once the
kernel says it is on disk, so a power cut cannot lose an alert the outbox already let go.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemoneye.config.schema import FileSinkConfig
from daemoneye.engine.formats import document
from daemoneye.engine.sinks.base import SinkError
from daemoneye.text import json_text


class FileSink:
    """Appends JSON lines to `path` (created with `mode`, 0600 by default: alerts carry
    command lines)."""

    name = "file"

    def __init__(
        self, path: Path | str, *, fsync: bool = True, mode: int = 0o600, fmt: str = "native"
    ) -> None:
        self.path = Path(path)
        self._format = fmt
        self._fsync = fsync
        self._mode = mode
        self._fd: int | None = None
        self._reopen_requested = False  # set by any thread, acted on by the writing one
        self._torn = False  # the last write stopped mid-line: start the next on a new line

    def deliver(self, payload: Mapping[str, Any]) -> None:
        line = (
            json_text(document(payload, self._format), compact=True) + "\n"
        )  # DEL, C1, bidi as \u escapes
        data = line.encode("utf-8", "backslashreplace")
        if self._torn:
            data = b"\n" + data
        fd = self._open()
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
            if self._fsync:
                os.fsync(fd)
        except OSError as exc:
            if 0 < written < len(data):
                self._torn = True
            self._close_fd()
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._torn = False

    def _open(self) -> int:
        """The open file for `path`, reopened when asked to or when the path now names another
        file."""
        if self._reopen_requested:
            self._reopen_requested = False
            self._close_fd()
        if self._fd is not None:
            try:
                on_disk = os.stat(self.path)
                mine = os.fstat(self._fd)
                if (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino):
                    return self._fd
            except OSError:
                pass  # renamed away or deleted: open a new file below
            self._close_fd()
        try:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self._mode
            )
        except OSError as exc:
            raise SinkError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):  # the descriptor is gone either way
                os.close(fd)

    def reopen(self) -> None:
        """Open `path` anew at the next alert (logrotate's postrotate). Safe from any
        thread: only the delivering thread touches the descriptor."""
        self._reopen_requested = True

    def close(self) -> None:
        self._close_fd()


def build(section: FileSinkConfig) -> FileSink:
    """The sink of `[sinks.file]`."""
    return FileSink(Path(section.path), fsync=section.fsync, fmt=section.format)
