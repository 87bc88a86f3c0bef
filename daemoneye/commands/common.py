"""What several commands share: the loaded configuration and how they reach the store."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from daemoneye.config import LoadedConfig
from daemoneye.store.readonly import ReadOnlyStore, open_readonly


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a command needs from the command line besides its own arguments."""

    loaded: LoadedConfig
    output: str  # table | json | ndjson | csv

    def open_store(self) -> ReadOnlyStore:
        """The store, read-only. Until the IPC client lands every read goes this way."""
        return open_readonly(self.loaded.paths.db)


def note(message: str) -> None:
    """A diagnostic for the person at the terminal: stderr, never stdout."""
    print(f"daemoneye: {message}", file=sys.stderr)


def format_bytes(count: int | None) -> str:
    if count is None:
        return ""
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_time(ts: float | None, now: float | None = None) -> str:
    """Clock time for today, date and time for anything older."""
    if ts is None:
        return ""
    now = time.time() if now is None else now
    local = time.localtime(ts)
    if now - ts < 86400 and time.localtime(now).tm_yday == local.tm_yday:
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M", local)
