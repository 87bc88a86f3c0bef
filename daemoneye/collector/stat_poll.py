"""The scanner's hot path: one read of /proc/<pid>/stat per known process per tick.

Each read is compared with the previous tick's (by a 64-bit hash of the bytes, which keeps the
memory per process small): an idle process produces identical bytes (its cpu times, rss, state
and thread count are all in them), so it costs one read and no parsing. The stat file of every
known process stays open between ticks and is read with pread(2): half the cost of
open/read/close, and safe under pid reuse, because an open /proc file stays bound to its
process (once that process is gone the read fails with ESRCH, even if the pid is reused).
When the open-files limit does not allow one descriptor per process, the rest are opened and
closed each tick. /proc itself is listed only when a pid was allocated since the last tick.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Mapping

from daemoneye.collector.procfs import VANISHED_ERRORS, read_fd
from daemoneye.errors import CollectorError

log = logging.getLogger(__name__)

_STAT_READ = 4096
_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_FD_RESERVE = 512  # descriptors left for sockets, the store, hashing and clients
_NOT_HELD = -1


class _Budget:
    """Descriptors held by every poller of this process together (a benchmark or test may run
    several scanners at once), so that together they never exhaust the open-files limit."""

    limit: int | None = None
    held = 0


def _take_descriptor() -> bool:
    if _Budget.limit is None:
        _Budget.limit = _descriptor_budget()
    if _Budget.held >= _Budget.limit:
        return False
    _Budget.held += 1
    return True


def _descriptor_budget() -> int:
    """How many stat files may stay open: raise the soft open-files limit as far as the hard
    limit allows, keep a reserve for everything else."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    limit = 1 << 20 if soft == resource.RLIM_INFINITY else soft
    return max(0, limit - _FD_RESERVE)


class StatPoller:
    """Knows the pid directories of the live processes and their last stat bytes."""

    def __init__(self, proc_root: bytes) -> None:
        self._root = proc_root
        # pid directory name -> (held descriptor or _NOT_HELD, stat path when not held (b""
        # when held: ~50 bytes a process not kept), hash of last bytes, the pid as a number)
        self._known: dict[bytes, tuple[int, bytes, int, int]] = {}
        # pid directory name -> its signature in the task pass of the tick it was last read
        # (collector/stat_signatures.py); a process whose signature is unchanged is not read
        self._signatures: dict[bytes, int] = {}
        self._not_pids: set[bytes] = set()  # names in proc_root that are not pid directories
        self._loadavg = proc_root + b"/loadavg"
        self._last_pid: bytes | None = None
        try:
            self._last_pid_usable = os.readlink(proc_root + b"/self") == str(os.getpid()).encode()
        except OSError:
            self._last_pid_usable = False
        # Held descriptors only on a real procfs of our namespace: a file on an ordinary
        # filesystem (a test's fake /proc) stays readable after it is deleted.
        self._hold = os.path.realpath(proc_root) == b"/proc" and self._last_pid_usable

    def remember(self, name: bytes, raw: bytes, opened: int | None = None) -> None:
        """`raw` is the stat of `name` as of this tick. `opened` is that stat file already
        open (read through the instance's pinned directory): it is held instead of opening
        the path again, or closed when it is not wanted; either way this poller owns it."""
        known = self._known.get(name)
        if known is not None:
            if opened is not None:
                os.close(opened)
            self._known[name] = (known[0], known[1], hash(raw), known[3])
            return
        path = self._root + b"/" + name + b"/stat"
        fd = _NOT_HELD
        if self._hold and _take_descriptor():
            if opened is not None:
                fd, opened = opened, None
            else:
                try:
                    fd = os.open(path, _FLAGS)
                except OSError:
                    _Budget.held -= 1  # gone already: the next read finds out and ends it
        if opened is not None:
            os.close(opened)
        self._known[name] = (fd, path if fd == _NOT_HELD else b"", hash(raw), int(name))

    def forget(self, name: bytes) -> None:
        self._signatures.pop(name, None)
        known = self._known.pop(name, None)
        if known is not None and known[0] != _NOT_HELD:
            os.close(known[0])
            _Budget.held -= 1

    def close(self) -> None:
        """Close every held descriptor."""
        for name in list(self._known):
            self.forget(name)

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

    def read_known(
        self, signatures: Mapping[int, int | None] | None = None
    ) -> tuple[list[tuple[bytes, bytes]], list[bytes], int]:
        """Read the stat of every known process: (changed, gone, denied). `changed` holds the
        names whose bytes differ from the last tick, with the new bytes (not yet remembered);
        `gone` the names whose stat has disappeared (ended); `denied` counts refused reads,
        whose processes keep their last known state. With `signatures` (this tick's task pass,
        pid → signature) a process whose signature is the one of its last read is not read:
        the stat fields the scanner uses are the same."""
        os_open, os_read, os_close, os_pread = os.open, os.read, os.close, os.pread
        changed: list[tuple[bytes, bytes]] = []
        failed: list[tuple[bytes, OSError]] = []
        last = self._signatures
        for name, (held, path, old, pid) in self._known.items():
            if signatures is not None:
                now = signatures.get(pid)
                if now is not None:
                    if last.get(name) == now:
                        continue
                    last[name] = now  # as of this pass: a change after it differs next tick
            try:
                if held != _NOT_HELD:
                    raw = os_pread(held, _STAT_READ, 0)
                    if len(raw) == _STAT_READ:
                        raw += os_pread(held, 1 << 20, _STAT_READ)
                else:
                    fd = os_open(path, _FLAGS)
                    try:
                        raw = os_read(fd, _STAT_READ)
                        if len(raw) == _STAT_READ:
                            raw += read_fd(fd)
                    finally:
                        os_close(fd)
            except OSError as exc:  # ESRCH: it died; ENOENT: gone before open
                failed.append((name, exc))
                continue
            if not raw:  # a held file of a reaped process can also read as empty
                failed.append((name, ProcessLookupError()))
            elif hash(raw) != old:
                changed.append((name, raw))
        gone: list[bytes] = []
        denied = 0
        for name, error in failed:
            if isinstance(error, PermissionError):
                denied += 1
                continue
            if not isinstance(error, VANISHED_ERRORS):
                log.warning("reading %r: %s", self._root + b"/" + name + b"/stat", error)
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
