"""The scanner's hot path: one read of /proc/<pid>/stat per known process per tick.

Each read is compared byte for byte with the previous tick's: an idle process produces identical
bytes (its cpu times, rss, state and thread count are all in them), so it costs one open, one
read and one close, and no parsing. /proc itself is listed only when a pid was allocated since
the last tick.
"""

from __future__ import annotations

import logging
import os

from daemoneye.collector.procfs import VANISHED_ERRORS, read_fd
from daemoneye.errors import CollectorError

log = logging.getLogger(__name__)

_STAT_READ = 4096
_FLAGS = os.O_RDONLY | os.O_CLOEXEC


class StatPoller:
    """Knows the pid directories of the live processes and their last stat bytes."""

    def __init__(self, proc_root: bytes) -> None:
        self._root = proc_root
        # pid directory name -> (path of its stat, the stat bytes of the last tick)
        self._known: dict[bytes, tuple[bytes, bytes]] = {}
        self._not_pids: set[bytes] = set()  # names in proc_root that are not pid directories
        self._loadavg = proc_root + b"/loadavg"
        self._last_pid: bytes | None = None
        try:
            self._last_pid_usable = os.readlink(proc_root + b"/self") == str(os.getpid()).encode()
        except OSError:
            self._last_pid_usable = False

    def remember(self, name: bytes, raw: bytes) -> None:
        """`raw` is the stat of `name` as of this tick."""
        known = self._known.get(name)
        path = known[0] if known is not None else self._root + b"/" + name + b"/stat"
        self._known[name] = (path, raw)

    def forget(self, name: bytes) -> None:
        self._known.pop(name, None)

    def not_a_pid(self, name: bytes) -> None:
        """`name` is listed in proc_root but is no pid directory ("self", "sys", ...)."""
        self._not_pids.add(name)

    def new_names(self) -> set[bytes]:
        """Names in proc_root that may be new processes (not yet known, not known non-pids);
        empty without listing when no pid was allocated since the last call."""
        if not self._pids_may_have_changed():
            return set()
        try:
            listing = set(os.listdir(self._root))
        except OSError as exc:
            raise CollectorError(f"cannot list {os.fsdecode(self._root)}: {exc.strerror}") from exc
        listing -= self._known.keys()
        listing -= self._not_pids
        return listing

    def read_known(self) -> tuple[list[tuple[bytes, bytes]], list[bytes], int]:
        """Read the stat of every known process: (changed, gone, denied). `changed` holds the
        names whose bytes differ from the last tick, with the new bytes (not yet remembered);
        `gone` the names whose stat has disappeared (ended); `denied` counts refused reads,
        whose processes keep their last known state."""
        os_open, os_read, os_close = os.open, os.read, os.close
        changed: list[tuple[bytes, bytes]] = []
        failed: list[tuple[bytes, OSError]] = []
        for name, (path, old) in self._known.items():
            try:
                fd = os_open(path, _FLAGS)
            except OSError as exc:
                failed.append((name, exc))
                continue
            try:
                raw = os_read(fd, _STAT_READ)
                if len(raw) == _STAT_READ:
                    raw += read_fd(fd)
            except OSError as exc:  # ESRCH: it died between open and read
                failed.append((name, exc))
                continue
            finally:
                os_close(fd)
            if raw != old:
                changed.append((name, raw))
        gone: list[bytes] = []
        denied = 0
        for name, error in failed:
            if isinstance(error, PermissionError):
                denied += 1
                continue
            if not isinstance(error, VANISHED_ERRORS):
                log.warning("reading %r: %s", self._known[name][0], error)
            gone.append(name)
        return changed, gone, denied

    def _pids_may_have_changed(self) -> bool:
        """False when no task was created since the last call, so listing /proc (the largest
        cost of an idle tick after the stat reads) can be skipped. The last field of
        /proc/loadavg is the last pid allocated in the reader's pid namespace: any fork or
        clone anywhere, in a nested namespace too, moves it. Only trusted when proc_root is
        the procfs of our own pid namespace (its `self` is our pid): a host /proc mounted
        into a container would report the container's counter."""
        if not self._last_pid_usable:
            return True
        try:
            fd = os.open(self._loadavg, _FLAGS)
            try:
                last_pid = os.read(fd, 256).rsplit(None, 1)[-1]
            finally:
                os.close(fd)
        except (OSError, IndexError):
            return True
        if last_pid == self._last_pid:
            return False
        self._last_pid = last_pid
        return True
