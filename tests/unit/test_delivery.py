"""The outbox and its delivery: retries with backoff, dead letters, counters, and that one
sink's trouble never holds up another."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from daemoneye.engine.alerts import AlertBook
from daemoneye.engine.delivery import DeliveryPolicy, DeliveryWorker, SinkRunner
from daemoneye.engine.outbox import (
    DELIVERED_KEEP_S,
    deliveries_of,
    health_problems,
    sink_health,
)
from daemoneye.engine.sinks import PermanentSinkError, SinkError
from daemoneye.models import Detection
from daemoneye.store import Store


class FakeSink:
    """Fails the first `failures` deliveries (with `error`), then takes everything."""

    def __init__(
        self,
        name: str = "fake",
        failures: int = 0,
        error: type[SinkError] = SinkError,
        retry_after: float | None = None,
    ) -> None:
        self.name = name
        self.failures = failures
        self.error = error
        self.retry_after = retry_after
        self.attempts: list[int] = []
        self.delivered: list[int] = []
        self.reopened = 0
        self.closed = False

    def deliver(self, payload: Mapping[str, Any]) -> None:
        self.attempts.append(int(payload["alert_id"]))
        if self.failures:
            self.failures -= 1
            raise self.error(f"{self.name} is down", retry_after=self.retry_after)
        self.delivered.append(int(payload["alert_id"]))

    def reopen(self) -> None:
        self.reopened += 1

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def raise_alerts(
    store: Store, count: int, sinks: tuple[str, ...] = ("fake",), now: float = 1000.0
) -> None:
    book = AlertBook(store, sinks=sinks, host="h")
    book.record(
        [Detection("r", "high", f"alert {n}", 100 + n, 1.0, now, ()) for n in range(count)], {}, now
    )


def outbox_rows(store: Store) -> list[tuple[Any, ...]]:
    return store.fetch_rows(
        "SELECT alert_id, sink, state, attempts, next_attempt_at FROM sink_outbox ORDER BY id"
    )


POLICY = DeliveryPolicy(
    max_attempts=4, backoff_base_s=2.0, backoff_max_s=10.0, batch=10, poll_interval_s=1.0
)


def test_backoff_doubles_up_to_the_cap_times_jitter() -> None:
    assert [POLICY.delay(n, 1.0) for n in (1, 2, 3, 4, 10)] == [4.0, 8.0, 10.0, 10.0, 10.0]
    assert POLICY.delay(1, 0.5) == 2.0 and POLICY.delay(1, 1.5) == 6.0
    assert POLICY.delay(10**6, 1.0) == 10.0  # no overflow


def test_jitter_never_takes_a_pause_past_backoff_max() -> None:
    """Jitter is applied before the cap: a sink that is back is retried within backoff_max."""
    rng = random.Random(19)
    schedule = [POLICY.delay(attempt, rng.uniform(0.5, 1.5)) for attempt in range(1, 40)]
    assert max(schedule) == 10.0
    assert all(delay <= POLICY.backoff_max_s for delay in schedule)
    assert schedule[:3] == pytest.approx([4.7085, 10.0, 10.0], abs=1e-3)
    assert POLICY.delay(3, 1.5) == 10.0 and POLICY.delay(3, 0.5) == 8.0  # below the cap


def test_a_failing_sink_never_pauses_longer_than_backoff_max(store: Store) -> None:
    raise_alerts(store, 1)
    rng = random.Random(7)
    clock = Clock()
    sink = FakeSink(failures=10**6)
    policy = DeliveryPolicy(max_attempts=10**6, backoff_base_s=2.0, backoff_max_s=10.0)
    runner = SinkRunner(
        store, "fake", sink, policy, clock=clock, jitter=lambda: rng.uniform(0.5, 1.5)
    )
    pauses = []
    for _ in range(30):
        pause = runner.run_once()
        pauses.append(pause)
        clock.now += pause
    assert len(sink.attempts) == 30
    assert max(pauses) <= 10.0


def test_delivered_rows_are_marked_and_counted(store: Store) -> None:
    raise_alerts(store, 3)
    sink = FakeSink()
    clock = Clock()
    runner = SinkRunner(store, "fake", sink, POLICY, clock=clock, jitter=lambda: 1.0)
    assert runner.run_once() == pytest.approx(1.0)  # nothing else due: poll later
    assert sink.delivered == [1, 2, 3]
    assert {row[2] for row in outbox_rows(store)} == {"delivered"}
    (health,) = sink_health(store, ["fake"])
    assert (health.pending, health.delivered_total, health.last_success_at) == (0, 3, 1000.0)
    assert health_problems([health], now=1000.0) == []


def test_failure_backs_off_the_row_and_pauses_the_sink(store: Store) -> None:
    raise_alerts(store, 2)
    sink = FakeSink(failures=2)
    clock = Clock()
    runner = SinkRunner(store, "fake", sink, POLICY, clock=clock, jitter=lambda: 1.0)
    pause = runner.run_once()
    assert pause == 4.0  # base 2 * 2**1
    assert sink.attempts == [1]  # the sink is paused: alert 2 was not tried against it
    assert outbox_rows(store)[0][2:] == ("pending", 1, 1004.0)
    assert runner.run_once() == pytest.approx(4.0)  # still paused
    clock.now = 1004.0
    runner.run_once()
    # Alert 2 (due since 1000) goes first; it fails too: the sink has now failed twice.
    assert sink.attempts == [1, 2]
    assert outbox_rows(store)[1][2:] == ("pending", 1, 1008.0)
    clock.now = 1012.0
    runner.run_once()
    assert sink.delivered == [1, 2]
    (health,) = sink_health(store, ["fake"])
    assert (health.failed_attempts_total, health.delivered_total, health.dead) == (2, 2, 0)
    assert health.last_error == "fake is down"
    assert runner.consecutive_failures == 0


def test_dead_letter_after_max_attempts(store: Store) -> None:
    raise_alerts(store, 1)
    sink = FakeSink(failures=100)
    clock = Clock()
    runner = SinkRunner(store, "fake", sink, POLICY, clock=clock, jitter=lambda: 1.0)
    for _ in range(10):
        runner.run_once()
        clock.now += 60.0
    assert len(sink.attempts) == POLICY.max_attempts
    assert outbox_rows(store)[0][2:4] == ("dead", 4)
    (health,) = sink_health(store, ["fake"])
    assert (health.dead, health.dead_total, health.pending) == (1, 1, 0)
    (problem,) = health_problems([health], now=clock.now)
    assert "1 alerts dead-lettered" in problem and "fake is down" in problem
    assert health_problems([health], now=clock.now + 2 * 86400) == []  # old news


def test_permanent_error_dead_letters_at_once_without_pausing(store: Store) -> None:
    raise_alerts(store, 2)
    sink = FakeSink(failures=1, error=PermanentSinkError)
    runner = SinkRunner(store, "fake", sink, POLICY, clock=Clock(), jitter=lambda: 1.0)
    runner.run_once()
    assert [row[2:4] for row in outbox_rows(store)] == [("dead", 1), ("delivered", 1)]
    assert sink.delivered == [2]


def test_retry_after_is_honoured_up_to_the_cap(store: Store) -> None:
    raise_alerts(store, 1)
    sink = FakeSink(failures=1, retry_after=7.0)
    runner = SinkRunner(store, "fake", sink, POLICY, clock=Clock(), jitter=lambda: 1.0)
    assert runner.run_once() == 7.0
    assert outbox_rows(store)[0][4] == 1007.0


def test_a_buggy_sink_is_retried_not_fatal(store: Store) -> None:
    class Buggy(FakeSink):
        def deliver(self, payload: Mapping[str, Any]) -> None:
            raise KeyError("oops")

    raise_alerts(store, 1)
    runner = SinkRunner(store, "fake", Buggy(), POLICY, clock=Clock(), jitter=lambda: 1.0)
    assert runner.run_once() > 0
    assert outbox_rows(store)[0][2:4] == ("pending", 1)
    assert "internal error" in str(sink_health(store, ["fake"])[0].last_error)


def test_stuck_backlog_and_unconfigured_sink_are_health_problems(store: Store) -> None:
    raise_alerts(store, 2, sinks=("webhook", "file"))
    healths = {h.sink: h for h in sink_health(store, ["webhook"])}
    assert healths["webhook"].pending == 2 and healths["webhook"].configured
    assert healths["file"].pending == 2 and not healths["file"].configured
    assert health_problems([healths["webhook"]], now=1000.0 + 10) == []
    problems = health_problems(list(healths.values()), now=1000.0 + 600)
    assert any("webhook: 2 alerts waiting, the oldest for 600s" in p for p in problems)
    assert any("file: 2 alerts queued but the sink is not enabled" in p for p in problems)


def test_reopen_request_reaches_the_sink_in_the_delivering_thread(store: Store) -> None:
    sink = FakeSink()
    runner = SinkRunner(store, "fake", sink, POLICY, clock=Clock(), jitter=lambda: 1.0)
    runner.request_reopen()
    assert sink.reopened == 0
    runner.run_once()
    assert sink.reopened == 1


def test_delivered_rows_are_pruned_but_counters_kept(store: Store) -> None:
    raise_alerts(store, 2)
    clock = Clock()
    runner = SinkRunner(store, "fake", FakeSink(), POLICY, clock=clock, jitter=lambda: 1.0)
    runner.run_once()
    assert len(deliveries_of(store, 1)) == 1
    clock.now += DELIVERED_KEEP_S + 120
    runner.run_once()
    assert outbox_rows(store) == []
    assert sink_health(store, ["fake"])[0].delivered_total == 2


# -- the threaded worker -----------------------------------------------------------------


class BlockingSink(FakeSink):
    """A sink that hangs (like a webhook that never answers) until released."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()
        self.entered = threading.Event()

    def deliver(self, payload: Mapping[str, Any]) -> None:
        self.entered.set()
        self.release.wait(30)
        super().deliver(payload)


def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.01)


def test_a_hanging_sink_blocks_neither_the_engine_nor_other_sinks(
    store: Store, store_path: Path
) -> None:
    hanging, working = BlockingSink("hanging"), FakeSink("working")
    worker = DeliveryWorker(
        store_path, {"hanging": hanging, "working": working}, DeliveryPolicy(poll_interval_s=0.05)
    )
    worker.start()
    try:
        raise_alerts(store, 5, sinks=("hanging", "working"))
        worker.wake()
        assert hanging.entered.wait(15)
        wait_until(lambda: len(working.delivered) == 5)
        # The engine keeps recording (and queueing) while a sink hangs.
        book = AlertBook(store, sinks=("hanging", "working"), host="h")
        recording = threading.Thread(
            target=book.record,
            args=([Detection("r", "high", "late", 999, 1.0, 2000.0, ())], {}, 2000.0),
        )
        recording.start()
        recording.join(15)
        assert not recording.is_alive(), "recording an alert waited for a hanging sink"
        worker.wake()
        wait_until(lambda: len(working.delivered) == 6)
        hanging.release.set()
        wait_until(lambda: len(hanging.delivered) == 6)
    finally:
        hanging.release.set()
        assert worker.stop(timeout=10)
    assert hanging.closed and working.closed
    states = {row[2] for row in outbox_rows(store)}
    assert states == {"delivered"}


def test_worker_resumes_pending_rows_after_a_restart(store: Store, store_path: Path) -> None:
    raise_alerts(store, 3)
    first = FakeSink(failures=100)
    worker = DeliveryWorker(
        store_path,
        {"fake": first},
        DeliveryPolicy(backoff_base_s=0.01, backoff_max_s=0.02, poll_interval_s=0.05),
    )
    worker.start()
    wait_until(lambda: len(first.attempts) >= 2)
    assert worker.stop(timeout=10)
    second = FakeSink()
    worker = DeliveryWorker(store_path, {"fake": second}, DeliveryPolicy(poll_interval_s=0.05))
    worker.start()
    try:
        wait_until(lambda: sorted(second.delivered) == [1, 2, 3])
    finally:
        worker.stop(timeout=10)


def test_a_sink_failing_right_now_is_a_health_problem_at_once(store: Store) -> None:
    """`health` names a sink in trouble from its first failure, with how long it has been
    failing and why, and stops naming it once it delivers again."""
    raise_alerts(store, 12, now=1000.0)
    sink = FakeSink(failures=1, error=SinkError)
    clock = Clock(1005.0)
    runner = SinkRunner(store, "fake", sink, POLICY, clock=clock, jitter=lambda: 1.0)
    runner.run_once()
    (health,) = sink_health(store, ["fake"])
    (problem,) = health_problems([health], now=1095.0)
    assert problem == "sink fake: 12 alerts waiting, failing for 95s: fake is down"
    clock.now = 1100.0
    runner.run_once()
    (health,) = sink_health(store, ["fake"])
    assert health.pending == 2  # a batch of 10 went out
    (problem,) = health_problems([health], now=1100.0)  # delivering again: not failing,
    assert problem.startswith("sink fake: 2 alerts waiting, the oldest for 100s")  # but behind
    runner.run_once()
    assert health_problems(sink_health(store, ["fake"]), now=1100.0) == []


def test_a_backlog_waiting_past_a_minute_is_a_health_problem(store: Store) -> None:
    raise_alerts(store, 3, now=1000.0)
    (health,) = sink_health(store, ["fake"])
    assert health_problems([health], now=1059.0) == []
    (problem,) = health_problems([health], now=1061.0)
    assert problem == "sink fake: 3 alerts waiting, the oldest for 61s"


class BatchFakeSink(FakeSink):
    """Takes batches (as the OTLP sink does): `batches` records each request's alert ids."""

    def __init__(self, *args: Any, refuse: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[int]] = []
        self.refuse = refuse  # an alert id the receiver will never take

    def deliver(self, payload: Mapping[str, Any]) -> None:
        self.deliver_batch([payload])

    def deliver_batch(self, payloads: Any) -> None:
        ids = [int(p["alert_id"]) for p in payloads]
        self.batches.append(ids)
        if self.refuse in ids:
            raise PermanentSinkError(f"{self.name} refuses alert {self.refuse}")
        if self.failures:
            self.failures -= 1
            raise self.error(f"{self.name} is down", retry_after=self.retry_after)
        self.delivered.extend(ids)


def test_a_batch_sink_takes_the_due_alerts_in_one_request(store: Store) -> None:
    raise_alerts(store, 5)
    sink = BatchFakeSink()
    runner = SinkRunner(store, "fake", sink, POLICY, clock=Clock(), jitter=lambda: 1.0)
    runner.run_once()
    assert sink.batches == [[1, 2, 3, 4, 5]]
    assert {row[2:4] for row in outbox_rows(store)} == {("delivered", 1)}
    (health,) = sink_health(store, ["fake"])
    assert health.delivered_total == 5


def test_a_failed_batch_charges_each_alert_once_and_the_sink_one_failure(store: Store) -> None:
    raise_alerts(store, 3)
    sink = BatchFakeSink(failures=1)
    clock = Clock()
    runner = SinkRunner(store, "fake", sink, POLICY, clock=clock, jitter=lambda: 1.0)
    assert runner.run_once() == 4.0  # as after one failed alert: base 2 * 2**1
    assert runner.consecutive_failures == 1
    assert [row[2:5] for row in outbox_rows(store)] == [("pending", 1, 1004.0)] * 3
    (health,) = sink_health(store, ["fake"])
    assert health.failed_attempts_total == 3
    clock.now = 1004.0
    runner.run_once()
    assert sink.delivered == [1, 2, 3] and runner.consecutive_failures == 0


def test_a_refused_batch_is_tried_alone_so_only_the_refused_alert_dies(store: Store) -> None:
    raise_alerts(store, 3)
    sink = BatchFakeSink(refuse=2)
    runner = SinkRunner(store, "fake", sink, POLICY, clock=Clock(), jitter=lambda: 1.0)
    runner.run_once()
    assert sink.batches == [[1, 2, 3], [1], [2], [3]]
    assert [row[2] for row in outbox_rows(store)] == ["delivered", "dead", "delivered"]
