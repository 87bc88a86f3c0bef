"""At-least-once delivery of alerts to sinks through a persistent outbox (`sink_outbox`).

The engine only inserts outbox rows, in the same transaction as the alert they announce
(`enqueue`), so a tick never waits for a sink. A `DeliveryWorker` runs one thread per sink, each
with its own store connection; a thread takes its sink's due rows oldest first, hands each to
the sink and marks it delivered only after the sink returned. A crash (even kill -9) between the
two leaves the row pending, so it is delivered again after the restart: at least once, never
zero times. Receivers that must not see a duplicate dedupe on the payload's `event_id`.

A failure charges the row one attempt and schedules it `min(max, base * 2**attempts * jitter)`
later (jitter 0.5 to 1.5, so many daemons do not retry in step; applied before the cap, so no
pause ever exceeds `backoff_max` and a sink that came back is tried again within that long);
the sink also pauses that long
before trying anything else, so a sink that is down is not hammered and costs its own thread
only. After `max_attempts` — or at once when the sink says retrying cannot help — the row is
dead-lettered. Counters per sink live in `sink_stats`, written with the rows, so `health` can
read them from the store whether or not a daemon runs.

While the store cannot be written (disk full), each thread also delivers the alerts the engine
holds in memory (`daemoneye.engine.spill`), and a delivery it cannot record in the store is
remembered in memory (so it is not sent again every pass) until a write succeeds.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemoneye.config.schema import Config, DeliveryConfig
from daemoneye.engine.outbox import (
    PRUNE_EVERY_S,
    OutboxItem,
    due_items,
    mark_alert_delivered,
    mark_all_delivered,
    mark_delivered,
    mark_failed,
    next_due_at,
    prune,
)
from daemoneye.engine.sinks import PermanentSinkError, Sink, SinkError, build_sinks
from daemoneye.engine.sinks.base import BatchSink, batch_sink
from daemoneye.engine.spill import AlertSpill, HeldAlert
from daemoneye.errors import StoreError, StoreUnwritable
from daemoneye.store.db import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retry schedule and pacing of one delivery thread."""

    max_attempts: int = 20
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    batch: int = 50  # rows taken per pass
    poll_interval_s: float = 1.0  # longest sleep between passes without a wake-up

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> DeliveryPolicy:
        return cls(
            max_attempts=config.max_attempts,
            backoff_base_s=config.backoff_base,
            backoff_max_s=config.backoff_max,
        )

    def delay(self, attempts: int, jitter: float) -> float:
        """Seconds before the next attempt after `attempts` failed ones: the doubled base
        times `jitter`, then capped, so the result never exceeds `backoff_max_s`."""
        return min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempts, 64) * jitter)


def default_jitter() -> float:
    return random.uniform(0.5, 1.5)


# -- delivering ----------------------------------------------------------------------------


class SinkRunner:
    """Delivers one sink's due rows over one store connection. No threads here: a
    DeliveryWorker thread drives it, tests call `run_once` directly."""

    def __init__(
        self,
        store: Store,
        name: str,
        sink: Sink,
        policy: DeliveryPolicy,
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = default_jitter,
        spill: AlertSpill | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.sink = sink
        self.policy = policy
        self.spill = spill
        self._clock = clock
        self._jitter = jitter
        self.consecutive_failures = 0
        self.paused_until = 0.0
        self._reopen = False
        self._last_prune = 0.0
        # Outbox rows the sink took while the store could not record it: row id -> alert id,
        # and held alerts it took that were written meanwhile: alert id -> when.
        self._unrecorded: dict[int, int] = {}
        self._unrecorded_at: dict[int, float] = {}
        self._unrecorded_alerts: dict[int, float] = {}

    def request_reopen(self) -> None:
        """Have the sink reopen its file or socket before its next delivery (any thread)."""
        self._reopen = True

    def run_once(self, should_stop: Callable[[], bool] = lambda: False) -> float:
        """Deliver what is due now; return how long to wait before the next pass (0: more is
        due at once)."""
        now = self._clock()
        if now < self.paused_until:
            return self.paused_until - now
        if self._reopen:
            self._reopen = False
            self.sink.reopen()
        if self._unrecorded or self._unrecorded_alerts:
            self._record_unrecorded()
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            try:
                prune(self.store, self.name, now)
            except StoreUnwritable:
                log.debug(
                    "sink %s: pruning its outbox waits for the store to be writable", self.name
                )
        if self.spill is not None:
            for held in self.spill.waiting_for(self.name):
                if should_stop():
                    return 0.0
                pause = self._attempt_held(held)
                if pause is not None:
                    self.paused_until = self._clock() + pause
                    return pause
        taken = due_items(self.store, self.name, now, self.policy.batch)
        items = [
            item
            for item in taken
            if item.id not in self._unrecorded and item.alert_id not in self._unrecorded_alerts
        ]
        batcher = batch_sink(self.sink)
        if batcher is not None and len(items) > 1:
            pause = self._attempt_batch(batcher, items)
            if pause is not None:
                self.paused_until = self._clock() + pause
                return pause
            items = []
        for item in items:
            if should_stop():
                return 0.0
            pause = self._attempt(item)
            if pause is not None:
                self.paused_until = self._clock() + pause
                return pause
        if len(taken) == self.policy.batch and items:
            return 0.0
        due = next_due_at(self.store, self.name)
        wait = self.policy.poll_interval_s if due is None else due - self._clock()
        return max(0.0, min(self.policy.poll_interval_s, wait))

    def _attempt(self, item: OutboxItem) -> float | None:
        """Deliver one row and record the outcome; the sink's pause when it failed
        transiently, else None."""
        try:
            self.sink.deliver(item.payload)
        except PermanentSinkError as exc:
            self._dead(item, str(exc), permanent=True)
            return None
        except SinkError as exc:
            return self._failed(item, str(exc), exc.retry_after)
        except Exception as exc:  # a bug in one sink must not end its delivery thread
            log.exception("sink %s failed unexpectedly on alert %d", self.name, item.alert_id)
            return self._failed(item, f"internal error: {exc!r}", None)
        now = self._clock()
        try:
            mark_delivered(self.store, item, now)
        except StoreUnwritable:
            self._unrecorded[item.id] = item.alert_id  # not sent again: recorded later
            self._unrecorded_at[item.id] = now
        self._succeeded()
        return None

    def _attempt_batch(self, sink: BatchSink, items: list[OutboxItem]) -> float | None:
        """Deliver rows in one round trip and record the outcome of each; the sink's pause
        when it failed transiently, else None. A refusal does not say which row was refused:
        the rows are then tried one by one, so only that one is dead-lettered."""
        try:
            sink.deliver_batch([item.payload for item in items])
        except PermanentSinkError:
            for item in items:
                pause = self._attempt(item)
                if pause is not None:
                    return pause
            return None
        except SinkError as exc:
            return self._batch_failed(items, str(exc), exc.retry_after)
        except Exception as exc:  # a bug in one sink must not end its delivery thread
            log.exception("sink %s failed unexpectedly on %d alerts", self.name, len(items))
            return self._batch_failed(items, f"internal error: {exc!r}", None)
        now = self._clock()
        try:
            mark_all_delivered(self.store, items, now)
        except StoreUnwritable:
            for item in items:  # not sent again: recorded later
                self._unrecorded[item.id] = item.alert_id
                self._unrecorded_at[item.id] = now
        self._succeeded()
        return None

    def _batch_failed(
        self, items: list[OutboxItem], error: str, retry_after: float | None
    ) -> float | None:
        """Charge every row of a failed batch one attempt; the batch is one failure of the
        sink, so its pause grows as for one row."""
        before = self.consecutive_failures
        pause = self._failed(items[0], error, retry_after)
        for item in items[1:]:
            self.consecutive_failures = before + 1  # the others are logged at DEBUG
            self._failed(item, error, retry_after)
        self.consecutive_failures = before + 1
        return pause

    def _succeeded(self) -> None:
        if self.consecutive_failures:
            log.info(
                "sink %s delivers again after %d failed attempts",
                self.name,
                self.consecutive_failures,
            )
        self.consecutive_failures = 0

    def _record_unrecorded(self) -> None:
        """Record the deliveries the store could not take when they happened."""
        for row_id, alert_id in list(self._unrecorded.items()):
            item = OutboxItem(row_id, alert_id, self.name, {}, 0)
            try:
                mark_delivered(self.store, item, self._unrecorded_at[row_id])
            except StoreUnwritable:
                return
            del self._unrecorded[row_id], self._unrecorded_at[row_id]
        for alert_id, when in list(self._unrecorded_alerts.items()):
            try:
                mark_alert_delivered(self.store, alert_id, self.name, when)
            except StoreUnwritable:
                return
            del self._unrecorded_alerts[alert_id]

    def _attempt_held(self, held: HeldAlert) -> float | None:
        """Deliver one alert held in memory (the store cannot be written); the sink's pause
        when it failed, else None. Nothing is charged: the alert has no outbox row yet."""
        assert self.spill is not None
        try:
            self.sink.deliver(held.payload)
        except PermanentSinkError as exc:
            log.warning("sink %s refused held alert %d: %s", self.name, held.alert.id, exc)
            self.spill.refused(held, self.name)
            return None
        except SinkError as exc:
            return self._held_failed(held, str(exc))
        except Exception as exc:  # a bug in one sink must not end its delivery thread
            log.exception("sink %s failed unexpectedly on held alert %d", self.name, held.alert.id)
            return self._held_failed(held, f"internal error: {exc!r}")
        now = self._clock()
        written_as = self.spill.delivered(held, self.name, now)
        if written_as is not None:  # written while the sink took it: record it there
            self._unrecorded_alerts[written_as] = now
            self._record_unrecorded()
        self._succeeded()
        return None

    def _held_failed(self, held: HeldAlert, error: str) -> float:
        self.consecutive_failures += 1
        pause = self.policy.delay(self.consecutive_failures, self._jitter())
        log.log(
            logging.WARNING if self.consecutive_failures == 1 else logging.DEBUG,
            "sink %s: delivery of held alert %d failed (next try in %.1fs): %s",
            self.name,
            held.alert.id,
            pause,
            error,
        )
        return pause

    def _failed(self, item: OutboxItem, error: str, retry_after: float | None) -> float | None:
        attempts = item.attempts + 1
        if attempts >= self.policy.max_attempts:
            self._dead(item, error, permanent=False)
            self.consecutive_failures += 1
            return self.policy.delay(self.consecutive_failures, self._jitter())
        self.consecutive_failures += 1
        now = self._clock()
        delay = self.policy.delay(attempts, self._jitter())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.policy.backoff_max_s))
        # When the store cannot record the attempt it is not charged; the sink still pauses.
        with contextlib.suppress(StoreUnwritable):
            mark_failed(self.store, item, error, now, retry_at=now + delay)
        log_at = logging.WARNING if self.consecutive_failures == 1 else logging.DEBUG
        log.log(
            log_at,
            "sink %s: delivery of alert %d failed (attempt %d of %d, next in %.1fs): %s",
            self.name,
            item.alert_id,
            attempts,
            self.policy.max_attempts,
            delay,
            error,
        )
        pause = self.policy.delay(max(attempts, self.consecutive_failures), self._jitter())
        return max(pause, delay)

    def _dead(self, item: OutboxItem, error: str, *, permanent: bool) -> None:
        try:
            mark_failed(self.store, item, error, self._clock(), retry_at=None)
        except StoreUnwritable:
            return  # stays pending: dead-lettered once the store can record it
        why = "refused for good" if permanent else f"failed {item.attempts + 1} times"
        log.warning(
            "sink %s: alert %d dead-lettered (%s): %s", self.name, item.alert_id, why, error
        )


class DeliveryWorker:
    """One delivery thread per sink, each with its own store connection.

    The daemon creates it after the store exists, `start()`s it, calls `wake()` when a tick
    queued alerts, `reopen()` on SIGHUP, and `stop()` at shutdown. Rows still pending at
    `stop()` (or after a crash) are delivered after the next start.
    """

    def __init__(
        self,
        db_path: Path | str,
        sinks: Mapping[str, Sink],
        policy: DeliveryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = default_jitter,
        spill: AlertSpill | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.sinks = dict(sinks)
        self.policy = policy or DeliveryPolicy()
        # Alerts held in memory while the store cannot be written; the daemon gives the same
        # object to the alert book (AlertBook.spill).
        self.spill = spill if spill is not None else AlertSpill()
        self._clock = clock
        self._jitter = jitter
        self._stop = threading.Event()
        self._wakes = {name: threading.Event() for name in self.sinks}  # one per thread
        self._threads: list[threading.Thread] = []
        self._runners: dict[str, SinkRunner] = {}

    @classmethod
    def from_config(cls, db_path: Path | str, config: Config, **kwargs: Any) -> DeliveryWorker:
        """A worker for the enabled sinks of `config` (ConfigError when one cannot be built)."""
        kwargs.setdefault(
            "spill", AlertSpill(config.delivery.max_held_alerts, config.delivery.max_held_bytes)
        )
        return cls(
            db_path,
            build_sinks(config.sinks),
            DeliveryPolicy.from_config(config.delivery),
            **kwargs,
        )

    @property
    def sink_names(self) -> tuple[str, ...]:
        return tuple(self.sinks)

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("the delivery worker is already started")
        self._stop.clear()
        for name, sink in self.sinks.items():
            thread = threading.Thread(
                target=self._run, args=(name, sink), name=f"daemoneye-sink-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def wake(self) -> None:
        """New rows were queued: look now instead of at the next poll."""
        for event in self._wakes.values():
            event.set()

    def reopen(self) -> None:
        """Reopen files and sockets before the next delivery (SIGHUP, logrotate)."""
        for runner in list(self._runners.values()):
            runner.request_reopen()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the threads; True when all ended within `timeout`. A delivery still in flight
        (e.g. a slow webhook) is abandoned: its row stays pending for the next start."""
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stopped = not any(thread.is_alive() for thread in self._threads)
        self._threads = []
        return stopped

    def _run(self, name: str, sink: Sink) -> None:
        wake = self._wakes[name]
        runner: SinkRunner | None = None
        try:
            while not self._stop.is_set():
                if runner is None:
                    try:
                        store = Store.open_existing(self.db_path)
                    except StoreError as exc:
                        log.error("sink %s cannot open the store, retrying: %s", name, exc)
                        self._sleep(wake, self.policy.poll_interval_s * 5)
                        continue
                    runner = SinkRunner(
                        store,
                        name,
                        sink,
                        self.policy,
                        clock=self._clock,
                        jitter=self._jitter,
                        spill=self.spill,
                    )
                    self._runners[name] = runner
                try:
                    wait = runner.run_once(self._stop.is_set)
                except StoreError as exc:
                    log.error("sink %s: %s", name, exc)
                    wait = self.policy.poll_interval_s
                if wait > 0:
                    self._sleep(wake, wait)
        finally:
            self._runners.pop(name, None)
            sink.close()
            if runner is not None:
                runner.store.close()

    def _sleep(self, wake: threading.Event, seconds: float) -> None:
        """Sleep until `seconds` pass, `wake()` or `stop()`."""
        if wake.wait(seconds):
            wake.clear()
