"""Last-resort cleanup: whatever a benchmark starts (sleepers, daemons, top, tmux) registers an
undo here, so that Ctrl-C, SIGTERM, SIGHUP, an exception or a normal exit all tear it down.

Context managers do the ordinary cleanup; this registry catches what they cannot (a signal
arriving while a context manager is being entered, an exception in another thread). Every undo
must be idempotent: it may run from its context manager and again from here.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

_undo_by_id: dict[int, tuple[str, Callable[[], None]]] = {}
_lock = threading.Lock()
_next_id = 0
_installed = False


class Interrupted(BaseException):
    """Raised in the main thread when SIGTERM or SIGHUP arrives, so that every `with` block
    unwinds exactly as it does for Ctrl-C (KeyboardInterrupt)."""


def register(what: str, undo: Callable[[], None]) -> int:
    """Remember `undo` (described by `what`) until `unregister`; returns a handle."""
    global _next_id
    with _lock:
        _next_id += 1
        _undo_by_id[_next_id] = (what, undo)
        return _next_id


def unregister(handle: int) -> None:
    with _lock:
        _undo_by_id.pop(handle, None)


def run_all() -> None:
    """Run every registered undo, newest first; report failures but keep going."""
    with _lock:
        pending = sorted(_undo_by_id.items(), reverse=True)
        _undo_by_id.clear()
    for _, (what, undo) in pending:
        try:
            undo()
        except Exception as error:  # cleanup must reach every registered undo
            print(f"benchmarks: cleanup of {what} failed: {error!r}", file=sys.stderr)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt our orphaned descendants (prctl PR_SET_CHILD_SUBREAPER): the tmux server that
    hosts htop daemonizes, and on a host whose init does not reap (a container, a microVM)
    it would otherwise stay a zombie forever. Returns False where prctl is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def reap_adopted() -> int:
    """Reap every exited child, adopted orphans included; call only when no benchmark child is
    still being waited for elsewhere. Returns how many were reaped."""
    reaped = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped += 1


def install() -> None:
    """Hook atexit, adopt orphans (`become_subreaper`) and turn SIGTERM/SIGHUP into
    `Interrupted` (SIGINT already raises KeyboardInterrupt). Call once from the entry point,
    in the main thread."""
    global _installed
    if _installed:
        return
    _installed = True
    become_subreaper()
    atexit.register(run_all)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
