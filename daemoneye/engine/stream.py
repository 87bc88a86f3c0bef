"""Process events streamed to sinks beside the alerts (`[stream]`), for a SIEM that wants the
raw exec, exit and change events.

The agent offers every batch of events it writes (`offer`); the stream keeps those of the
configured kinds whose process matches the filter, within the rate cap, as native payloads
(engine.stream_payload) in one bounded queue per sink, and one thread per sink hands them over
in batches (one request for a batch when the sink takes batches: OTLP), in the sink's own
format. Each sink here is its own instance, built from the same `[sinks.NAME]` section as the
alert one, so the alert delivery thread and this one never share a connection.

It is best effort by design, unlike alerts: the store already keeps every event, and a
persistent outbox for thousands of events a second would double the daemon's writes. What it
does not send is counted, never silent: `dropped_rate` (over `rate`), `dropped_queue` (the sink
was slow or down and its queue was full: `queue` events or `queue_bytes`, so hostile megabyte
command lines cannot make it hold a gigabyte), `refused` (the sink said it will never take them).
A sink that fails is retried with the delivery backoff, holding its queue meanwhile.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from daemoneye.config.schema import Config, StreamConfig
from daemoneye.engine.delivery import DeliveryPolicy, default_jitter
from daemoneye.engine.sinks import PermanentSinkError, Sink, SinkError, sink_builder
from daemoneye.engine.sinks.base import batch_sink
from daemoneye.engine.stream_payload import process_payload, weight
from daemoneye.errors import ConfigError
from daemoneye.filters import ProcessFilter, parse_filter
from daemoneye.models import CHANGE_KINDS, ProcessEvent, ProcessKey, ProcessRecord

log = logging.getLogger(__name__)

BATCH = 100  # payloads handed to a sink at once
Lookup = Callable[[ProcessKey], ProcessRecord | None]


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """What is streamed: the kinds, the filter over the event's process, the rate cap."""

    kinds: frozenset[str]
    filter: ProcessFilter
    rate: int
    queue: int
    queue_bytes: int

    @classmethod
    def from_config(cls, config: StreamConfig) -> StreamPolicy:
        kinds = set(config.kinds)
        if "change" in kinds:
            kinds |= set(CHANGE_KINDS)
        return cls(
            frozenset(kinds),
            parse_filter(config.filter),
            config.rate,
            config.queue,
            config.queue_bytes,
        )


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One sink's stream counters, for `health`."""

    sink: str
    sent: int
    queued: int
    dropped_rate: int
    dropped_queue: int
    refused: int
    last_error: str | None


class RateCap:
    """A token bucket: `rate` a second, a burst of one second's worth."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self._clock = clock
        self._tokens = float(rate)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class _Lane:
    """One sink's queue and counters; its thread is the only one that calls the sink."""

    def __init__(self, name: str, sink: Sink, limit: int, limit_bytes: int) -> None:
        self.name = name
        self.sink = sink
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.queue: collections.deque[tuple[dict[str, Any], int]] = collections.deque()
        self.held_bytes = 0
        self.sent = 0
        self.dropped_queue = 0
        self.refused = 0
        self.last_error: str | None = None
        self.wake = threading.Event()
        self.batches = batch_sink(sink) is not None
        self.failures = 0  # consecutive failed passes, for the backoff


class EventStream:
    """The stream of one daemon: `offer` on the agent's thread, `start` and `stop` around it."""

    def __init__(
        self,
        policy: StreamPolicy,
        sinks: Mapping[str, Sink],
        *,
        host: str | None = None,
        delivery: DeliveryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = default_jitter,
    ) -> None:
        self.policy = policy
        self.host = host or socket.gethostname()
        self._delivery = delivery or DeliveryPolicy()
        self._jitter = jitter
        self._cap = RateCap(policy.rate, clock)
        self._lock = threading.Lock()
        self._lanes = [
            _Lane(name, sink, policy.queue, policy.queue_bytes) for name, sink in sinks.items()
        ]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.dropped_rate = 0

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> EventStream | None:
        """The stream `[stream]` asks for, or None when it names no sink. ConfigError when it
        names a sink that is not enabled, or one that cannot be built."""
        names = config.stream.sinks
        if not names:
            return None
        for name in names:
            if not getattr(config.sinks, name).enabled:
                raise ConfigError(
                    f"stream.sinks: {name!r} is not enabled (set [sinks.{name}] enabled = true, "
                    "or leave it out of stream.sinks)"
                )
        sinks = {name: sink_builder(name)(getattr(config.sinks, name)) for name in names}
        kwargs.setdefault("delivery", DeliveryPolicy.from_config(config.delivery))
        return cls(StreamPolicy.from_config(config.stream), sinks, **kwargs)

    # -- the agent's side ---------------------------------------------------------------
    def offer(self, events: Iterable[ProcessEvent], lookup: Lookup) -> None:
        """Queue the events that pass for every sink; cheap, never blocks on a sink."""
        policy = self.policy
        accepted: list[tuple[dict[str, Any], int]] = []  # (payload, weight)
        for event in events:
            if event.kind not in policy.kinds:
                continue
            record = lookup(ProcessKey(event.pid, event.start_time))
            if not policy.filter.empty and (record is None or not policy.filter.matches(record)):
                continue
            if not self._cap.take():
                self.dropped_rate += 1
                continue
            payload = process_payload(event, record, self.host)
            accepted.append((payload, weight(payload)))
        if not accepted:
            return
        with self._lock:
            for lane in self._lanes:
                for item in accepted:
                    if (
                        len(lane.queue) >= lane.limit
                        or lane.held_bytes + item[1] > lane.limit_bytes
                    ):
                        lane.dropped_queue += 1
                        continue
                    lane.queue.append(item)
                    lane.held_bytes += item[1]
                lane.wake.set()

    def stats(self) -> tuple[StreamStats, ...]:
        with self._lock:
            return tuple(
                StreamStats(
                    lane.name,
                    lane.sent,
                    len(lane.queue),
                    self.dropped_rate,
                    lane.dropped_queue,
                    lane.refused,
                    lane.last_error,
                )
                for lane in self._lanes
            )

    # -- the sinks' side ----------------------------------------------------------------
    def start(self) -> None:
        for lane in self._lanes:
            thread = threading.Thread(
                target=self._run, args=(lane,), name=f"stream-{lane.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads, after they hand over what they can within `timeout`."""
        self._stop.set()
        for lane in self._lanes:
            lane.wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for lane in self._lanes:
            try:
                lane.sink.close()
            except Exception:  # closing must not stop the daemon's shutdown
                log.exception("stream sink %s failed to close", lane.name)

    def run_once(self, lane_name: str) -> float:
        """Hand one batch of that sink's queue over; the pause before the next (0: more now).
        The thread's loop, callable from tests."""
        lane = next(lane for lane in self._lanes if lane.name == lane_name)
        return self._pass(lane)

    def _run(self, lane: _Lane) -> None:
        while True:
            pause = self._pass(lane)
            if self._stop.is_set() and (pause > 0 or not lane.queue):
                return
            if pause > 0 or not lane.queue:
                lane.wake.wait(pause if pause > 0 else None)
                lane.wake.clear()

    def _pass(self, lane: _Lane) -> float:
        # A sink without batches takes one event at a time, so a failure half-way through
        # never sends the first ones again.
        size = BATCH if lane.batches else 1
        with self._lock:
            batch = [lane.queue[i][0] for i in range(min(size, len(lane.queue)))]
        if not batch:
            return 0.0
        try:
            self._hand_over(lane.sink, batch)
        except PermanentSinkError as exc:
            self._taken(lane, len(batch), refused=True, error=str(exc))
            log.warning("stream sink %s refused %d event(s): %s", lane.name, len(batch), exc)
            return 0.0
        except Exception as exc:  # a transient failure, or a bug in a sink: retry later
            lane.failures += 1
            pause = self._delivery.delay(lane.failures, self._jitter())
            if isinstance(exc, SinkError) and exc.retry_after is not None:
                pause = max(pause, min(exc.retry_after, self._delivery.backoff_max_s))
            with self._lock:
                lane.last_error = str(exc) if isinstance(exc, SinkError) else repr(exc)
            log.log(
                logging.WARNING if lane.failures == 1 else logging.DEBUG,
                "stream sink %s failed (next try in %.1fs): %s",
                lane.name,
                pause,
                exc,
            )
            return pause
        lane.failures = 0
        self._taken(lane, len(batch), refused=False, error=None)
        return 0.0

    def _taken(self, lane: _Lane, count: int, *, refused: bool, error: str | None) -> None:
        with self._lock:
            for _ in range(count):
                lane.held_bytes -= lane.queue.popleft()[1]
            if refused:
                lane.refused += count
                lane.last_error = error
            else:
                lane.sent += count
                lane.last_error = None

    @staticmethod
    def _hand_over(sink: Sink, batch: list[dict[str, Any]]) -> None:
        batcher = batch_sink(sink)
        if batcher is not None:
            batcher.deliver_batch(batch)
            return
        for payload in batch:
            sink.deliver(payload)
