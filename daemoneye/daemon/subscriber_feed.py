"""The feed that turns collector ticks into subscription notifications: after each tick it
diffs the collector's snapshot against the last one (on the collector's worker thread, which
owns the scanner) into the `LiveTable` the event loop owns, and publishes the delta; alerts and
rule sets raised on other threads are published from here too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from daemoneye.config.schema import LoadedConfig
from daemoneye.daemon.collection import Collection as Collector
from daemoneye.daemon.live_table import LiveTable, TableUpdate, compute_update, encode_missing
from daemoneye.errors import StoreError
from daemoneye.ipc import protocol
from daemoneye.ipc.codec import to_wire
from daemoneye.ipc.methods import MethodError
from daemoneye.ipc.protocol import ErrorCode
from daemoneye.ipc.server import Server
from daemoneye.models import Alert, HealthReport, ProcessKey, ProcessRecord, RuleStatus

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
ENCODE_OFF_LOOP = 64  # records: fewer are encoded on the loop, in a blink


class SubscriberFeed:
    """Live state for IPC answers (the process table, the last health report, the rule set's
    notification) and the notifications that keep subscribers in step with it. The event loop
    owns all of its state; `publish_*` may be called from any thread."""

    def __init__(
        self,
        config: Callable[[], LoadedConfig],
        collection: Collector,
        worker: Executor,
        health_line: Callable[[], bytes],
    ) -> None:
        self._config = config
        self._collection = collection
        self._worker = worker
        self._health_line = health_line
        self.table = LiveTable()
        self.health_report: HealthReport | None = None
        self.rules_line: bytes | None = None  # the last rules notification, for new subscribers
        self.server: Server | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def publish_alert(self, alert: Alert) -> None:
        """An alert was raised or changed: tell `alerts` subscribers. Thread-safe."""
        self._on_loop(
            self._publish,
            "alerts",
            protocol.notification(protocol.NOTIFY_ALERT, {"alert": to_wire(alert)}),
        )

    def publish_rules(self, statuses: Sequence[RuleStatus]) -> None:
        """The rule set changed (reload, enable, disable): tell `rules` subscribers.
        Thread-safe."""
        line = protocol.notification(protocol.NOTIFY_RULES, {"rules": to_wire(tuple(statuses))})
        self._on_loop(self._set_rules_line, line)

    def _set_rules_line(self, line: bytes) -> None:
        self.rules_line = line
        self._publish("rules", line)

    def _publish(self, topic: str, line: bytes) -> None:
        if self.server is not None:
            self.server.publish(topic, (line,))

    def _on_loop(self, function: Callable[..., None], *args: Any) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            function(*args)
        else:
            self._loop.call_soon_threadsafe(function, *args)

    # -- the feed: one update per collector tick ------------------------------------------
    def wake(self) -> None:
        """A tick has finished: compute the delta now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Forever: after each collector tick, diff its snapshot against the last one (on the
        collector's worker thread, which owns the scanner), then publish the delta."""
        done_ticks = 0  # nothing to show before the first scan has finished
        while True:
            interval = self._config().config.collector.interval
            if self._collection.ticks == done_ticks:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=min(max(interval / 10, 0.02), 0.25)
                    )
                continue
            done_ticks = self._collection.ticks
            try:
                update, report = await self._loop.run_in_executor(
                    self._worker, self._compute, self.table.records, self.table.seq + 1
                )
            except (StoreError, OSError) as exc:
                log.error("could not read the collector's state for IPC clients: %s", exc)
                continue
            self._apply(update, report)

    def _compute(
        self, previous: dict[ProcessKey, ProcessRecord], seq: int
    ) -> tuple[TableUpdate, HealthReport]:
        collection = self._collection
        lines = self.server is not None and self.server.has_subscribers("processes")
        update = compute_update(previous, collection.snapshot(), seq, lines=lines)
        return update, collection.health()

    def _apply(self, update: TableUpdate, report: HealthReport) -> None:
        if self.server is not None and self.server.has_subscribers("processes"):
            update = update.with_lines()  # a subscriber came while it was computed
        self.table.apply(update)
        self.health_report = report
        self._ready.set()
        if self.server is None:
            return
        if update.delta_lines:
            self.server.publish("processes", update.delta_lines)
        if self.server.has_subscribers("health"):
            self.server.publish("health", (self._health_line(),))

    async def encode_table(self) -> None:
        """Encode, on a worker thread, every live record no client has needed yet: the first
        subscriber's snapshot would otherwise encode the whole table on the event loop
        (140 ms at 10,000 processes), holding up every other client meanwhile."""
        missing = self.table.missing()
        if len(missing) >= ENCODE_OFF_LOOP:
            encodings = await self._loop.run_in_executor(None, encode_missing, missing)
            self.table.adopt(encodings)

    async def wait_ready(self) -> None:
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_S)
        except TimeoutError:
            raise MethodError(
                ErrorCode.NOT_AVAILABLE,
                "not available: the daemon has not finished its first scan yet",
            ) from None
