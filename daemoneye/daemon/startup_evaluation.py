"""The startup's full evaluation: the rules go live at once, then each is run over the whole
stored history, one worker job per rule, with ticks and clients' requests in between.

Its progress is counted where each rule's job ends (on the worker thread, so a health report
taken there between two jobs is exact), and its end is marked whatever ends it: the last rule,
the daemon stopping, or a failure. Retention waits while it runs (daemon/collection.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from daemoneye.errors import StoreError
from daemoneye.models import Rule, StartupEvaluation

log = logging.getLogger(__name__)


class StartupProgress:
    """How far the startup's full evaluation is. Counted on the worker thread, ended on the
    event loop, read from both (health reports, IPC answers): thread-safe."""

    def __init__(
        self,
        rules_total: int,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._monotonic = monotonic
        self._total = rules_total
        self._done = 0
        self._failed = 0
        self._started_at = clock()
        self._started_mono = monotonic()
        self._ended: tuple[str, float, float] | None = None  # state, ended_at, elapsed_s

    @property
    def running(self) -> bool:
        with self._lock:
            return self._ended is None

    def rule_ended(self, *, failed: bool = False) -> None:
        """One rule's job has ended: evaluated, skipped (edited or switched off meanwhile), or
        failed. Not counted once the run has ended (a job that finished after a stop)."""
        with self._lock:
            if self._ended is None:
                self._done += 1
                self._failed += failed

    def end(self) -> None:
        """No more rules will run: 'done' when every rule's job has ended, else 'stopped'. Only
        the first call counts."""
        with self._lock:
            if self._ended is None:
                state = "done" if self._done >= self._total else "stopped"
                self._ended = (state, self._clock(), self._monotonic() - self._started_mono)

    def snapshot(self) -> StartupEvaluation:
        with self._lock:
            if self._ended is None:
                state, ended_at = "running", None
                elapsed = self._monotonic() - self._started_mono
            else:
                state, ended_at, elapsed = self._ended
            return StartupEvaluation(
                state=state,
                rules_total=self._total,
                rules_done=self._done,
                rules_failed=self._failed,
                started_at=self._started_at,
                elapsed_s=round(elapsed, 3),
                ended_at=ended_at,
            )


def start_in_full(
    rules: Sequence[Rule],
    evaluate: Callable[[Rule], object],
    worker: Executor,
    progress: StartupProgress,
    stopping: Callable[[], bool],
) -> asyncio.Task[None]:
    """`evaluate_in_full` as a task of the running loop. `progress` ends however the task
    ends, cancelled before its first step too: health must not say "running" for ever, nor
    retention wait for ever."""
    task = asyncio.create_task(
        evaluate_in_full(rules, evaluate, worker, progress, stopping),
        name="daemoneye-full-evaluation",
    )
    task.add_done_callback(lambda _task: progress.end())
    return task


async def evaluate_in_full(
    rules: Sequence[Rule],
    evaluate: Callable[[Rule], object],
    worker: Executor,
    progress: StartupProgress,
    stopping: Callable[[], bool],
) -> None:
    """Run `evaluate` for each rule, one job at a time on `worker`, counting each in
    `progress`; between two rules, stop when `stopping()` says so. A rule whose run fails is
    logged and counted, and the others still run."""

    def job(rule: Rule) -> None:
        try:
            evaluate(rule)
        except (StoreError, OSError) as exc:
            log.error("evaluating rule %s over the store failed: %s", rule.id, exc)
            progress.rule_ended(failed=True)
        except Exception:  # a bug in one rule's run must not leave the others unrun
            log.exception("evaluating rule %s over the store failed", rule.id)
            progress.rule_ended(failed=True)
        else:
            progress.rule_ended()

    loop = asyncio.get_running_loop()
    try:
        for rule in rules:
            if stopping():
                break
            await loop.run_in_executor(worker, job, rule)
    finally:
        progress.end()
    ended = progress.snapshot()
    if ended.state == "done":
        log.info(
            "%d rules evaluated over the whole store in %.1f s (live since the start)",
            ended.rules_total,
            ended.elapsed_s,
        )
    else:
        log.info(
            "the startup's evaluation over the whole store stopped after %d of %d rules",
            ended.rules_done,
            ended.rules_total,
        )
