"""A steady churn of short-lived processes: `rate` per second, each living 0.5-2.5 s (long
enough for a 1 s poller to see most of them), with varied names and command lines."""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from benchmarks.population import make_copies
from benchmarks.spawn import ProcessGroup, assert_none_marked, new_token


class Churn:
    """``with Churn(rate=2.0) as churn: ...``; `churn.group.spawned_total` counts the started."""

    def __init__(self, rate: float, *, seed: int = 1) -> None:
        self.rate = rate
        self.token = new_token("churn")
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._root: Path | None = None
        self.group: ProcessGroup | None = None
        self.error: BaseException | None = None

    @property
    def spawned(self) -> int:
        return self.group.spawned_total if self.group is not None else 0

    def __enter__(self) -> Churn:
        self._root = Path(tempfile.mkdtemp(prefix="daemoneye-bench-churn-"))
        try:
            executables = make_copies(self._root)
            self.group = ProcessGroup(self.token)
            self._thread = threading.Thread(
                target=self._run, args=(executables,), name="benchmark-churn", daemon=True
            )
            self._thread.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, executables: list[bytes]) -> None:
        assert self.group is not None
        period = 1.0 / self.rate
        next_at = time.monotonic()
        index = 0
        try:
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                lives = f"{self._random.uniform(0.5, 2.5):.2f}".encode()
                words = [b"0"] * self._random.randrange(0, 12)
                path = executables[index % len(executables)]
                self.group.spawn(path, [b"job-%d" % index, lives, *words])
                self.group.reap()
                index += 1
                next_at += period
        except BaseException as error:  # reported by the benchmark, not lost
            self.error = error

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self.group is not None:
            self.group.kill_all()
            self.group = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        assert_none_marked(self.token, "churn processes")
