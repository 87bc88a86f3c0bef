"""SHA-256 of every process's executable, computed off the scanner's hot path.

The file is opened through /proc/<pid>/exe, not by its path: that is the very inode the process
runs, so a binary deleted or replaced after it started (a classic dropper move) is still hashed,
and a path swapped under our feet cannot make us hash the wrong file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import stat
import threading
from collections import OrderedDict, deque
from collections.abc import Callable

from daemoneye.collector.procfs import VANISHED_ERRORS, parse_stat_fields, read_file
from daemoneye.models import ExeHash, ProcessKey

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024

# (st_dev, st_ino, st_size, st_mtime_ns): one version of one file. A rewrite in place that keeps
# size and forges mtime would go unnoticed; the kernel-events source does not help there either.
FileIdentity = tuple[int, int, int, int]
_Job = tuple[ProcessKey, int]


class ExeHasher:
    """A worker thread hashing executables. `submit` never blocks: when the bounded queue is full
    the job is dropped and counted (`dropped_total`). Results are collected with `drain()`,
    which the daemon calls once per tick; hashes are cached per file version, so a thousand
    `sleep` processes cost one read of /usr/bin/sleep."""

    def __init__(
        self,
        proc_root: str = "/proc",
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        queue_size: int = 4096,
        cache_size: int = 4096,
    ) -> None:
        self.max_bytes = max_bytes  # may be changed at run time (config reload)
        self._proc_root = proc_root
        self._cache_size = cache_size
        self._cache: OrderedDict[FileIdentity, str] = OrderedDict()
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._results: deque[ExeHash] = deque()
        self._taps: list[deque[ExeHash]] = []
        self._idle = threading.Condition()
        self._outstanding = 0
        self._stop = threading.Event()
        self.submitted_total = 0
        self.dropped_total = 0
        self.hashed_total = 0  # files actually read
        self.cache_hits_total = 0
        self.failed_total = 0  # results with sha256 None
        self._thread = threading.Thread(target=self._run, name="daemoneye-exe-hasher", daemon=True)
        self._thread.start()

    def submit(self, key: ProcessKey, start_ticks: int) -> bool:
        """Queue the executable of `key` for hashing. `start_ticks` (stat field 22) is checked
        again when the job runs, so a pid reused in between is never hashed under the old
        instance's key. Returns False when the job was dropped (queue full or closed)."""
        if self._stop.is_set():
            return False
        with self._idle:
            self._outstanding += 1
        try:
            self._jobs.put_nowait((key, start_ticks))
        except queue.Full:
            self._done()
            self.dropped_total += 1
            return False
        self.submitted_total += 1
        return True

    def submit_many(self, jobs: list[tuple[ProcessKey, int]]) -> int:
        """`submit` for a batch, in order; returns how many were queued."""
        return sum(1 for key, start_ticks in jobs if self.submit(key, start_ticks))

    def room(self) -> int:
        """How many jobs the queue takes now without dropping any."""
        return max(0, self._jobs.maxsize - self._jobs.qsize())

    def drain(self) -> list[ExeHash]:
        """The results produced since the last call, oldest first; never blocks. Apply them in
        order: after an exec the same key is hashed again and the later result wins."""
        return _pop_all(self._results)

    def tap(self) -> Callable[[], list[ExeHash]]:
        """A second, independent reader of the results (the scanner uses one to put hashes into
        its live snapshot while the daemon drains the same results for the store)."""
        results: deque[ExeHash] = deque()
        self._taps.append(results)
        return lambda: _pop_all(results)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has a result; False on timeout. For tests and tools."""
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker: pending jobs are discarded, a file being read is abandoned."""
        self._stop.set()
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
            self._done()
        with contextlib.suppress(queue.Full):  # the worker checks the stop flag after each job
            self._jobs.put_nowait(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("exe hasher did not stop within %.1f s", timeout)

    def hash_instance(self, key: ProcessKey, start_ticks: int) -> ExeHash:
        """Hash the executable of one instance now, on the calling thread."""
        pid_dir = os.path.join(self._proc_root, str(key.pid))
        try:
            fd = os.open(os.path.join(pid_dir, "exe"), os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            return ExeHash(key, None, "permission denied")
        except VANISHED_ERRORS:
            return ExeHash(key, None, "process exited before its executable was hashed")
        except OSError as exc:
            return ExeHash(key, None, f"cannot open executable: {exc.strerror}")
        try:
            # The descriptor holds whatever ran under this pid when it was opened; the stat
            # read after it proves that was still our instance.
            if not _same_instance(pid_dir, start_ticks):
                return ExeHash(key, None, "process exited before its executable was hashed")
            return ExeHash(key, *self._hash_fd(fd))
        except OSError as exc:
            return ExeHash(key, None, f"cannot read executable: {exc.strerror}")
        finally:
            os.close(fd)

    def _hash_fd(self, fd: int) -> tuple[str | None, str | None]:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return None, "not a regular file"
        identity = _identity(before)
        cached = self._cache.get(identity)
        if cached is not None:
            self._cache.move_to_end(identity)
            self.cache_hits_total += 1
            return cached, None
        if before.st_size > self.max_bytes:
            return None, f"larger than the hashing cap ({before.st_size} > {self.max_bytes} bytes)"
        digest = hashlib.sha256()
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        total = 0
        while n := os.readv(fd, [buffer]):
            digest.update(view[:n])
            total += n
            if total > self.max_bytes:
                return None, f"larger than the hashing cap ({self.max_bytes} bytes)"
            if self._stop.is_set():
                return None, "hasher stopped"
        self.hashed_total += 1
        if _identity(os.fstat(fd)) != identity:
            return None, "executable changed while it was hashed"
        sha256 = digest.hexdigest()
        self._cache[identity] = sha256
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return sha256, None

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                break
            try:
                result = self.hash_instance(*job)
            except Exception:  # a bug must not kill hashing for the daemon's lifetime
                log.exception("hashing the executable of pid %d failed", job[0].pid)
                result = ExeHash(job[0], None, "internal error")
            if result.sha256 is None:
                self.failed_total += 1
            self._results.append(result)
            for tap in self._taps:
                tap.append(result)
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._outstanding -= 1
            if self._outstanding == 0:
                self._idle.notify_all()


def _identity(st: os.stat_result) -> FileIdentity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _same_instance(pid_dir: str, start_ticks: int) -> bool:
    try:
        raw = read_file(os.path.join(pid_dir, "stat"))
        return bool(raw) and parse_stat_fields(raw).start_ticks == start_ticks
    except (OSError, ValueError):
        return False


def _pop_all(results: deque[ExeHash]) -> list[ExeHash]:
    # popleft is atomic, so this is safe against the worker appending concurrently.
    drained = []
    while True:
        try:
            drained.append(results.popleft())
        except IndexError:
            return drained
