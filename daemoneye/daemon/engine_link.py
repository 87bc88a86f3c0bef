"""The running detection engine (engine/detection.py) behind IPC's `DetectionEngine` protocol.

Threads: the engine and its alert book write through the store's writer connection, so state
changes and rule-set swaps run on the collector's worker thread; reads (alert lists, hits,
sink backlog) run on IPC's read-only connections; the rule registry is thread-safe. A small
task notices rule sets swapped behind IPC's back (the file watcher, SIGHUP) and tells `rules`
subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Protocol, TypeVar

from daemoneye.config.schema import LoadedConfig
from daemoneye.engine import alert_queries, outbox
from daemoneye.engine.alerts import AlertChange, InvalidTransition, NoSuchAlert
from daemoneye.engine.reload import ReloadOutcome
from daemoneye.engine.sinks import enabled_sink_names
from daemoneye.errors import StoreError
from daemoneye.ipc.methods import MethodError
from daemoneye.ipc.protocol import ErrorCode
from daemoneye.models import (
    Alert,
    AlertDetail,
    EngineStatus,
    ProcessKey,
    RulesReload,
    RuleStatus,
)
from daemoneye.store.readonly import ReadOnlyStore

if TYPE_CHECKING:
    from daemoneye.engine.detection import DetectionEngine as RunningEngine

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreReader(Protocol):
    """Runs `work` on a read-only store connection off the event loop (service.in_store)."""

    def __call__(self, work: Callable[[ReadOnlyStore], T]) -> Awaitable[T]: ...


WATCH_INTERVAL_S = 1.0
ALERTED_WANTED_S = 60.0  # keep the `alerted` set fresh this long after it was last asked for


class EngineLink:
    """Implements daemon/service.py's DetectionEngine over the daemon's engine."""

    def __init__(
        self,
        engine: RunningEngine,
        worker: Executor,
        read: StoreReader,
        config: Callable[[], LoadedConfig],
        publish_alert: Callable[[Alert], None],
        publish_rules: Callable[[Sequence[RuleStatus]], None],
    ) -> None:
        self._engine = engine
        self._worker = worker
        self._read = read
        self._config = config
        self._publish_alert = publish_alert
        self._publish_rules = publish_rules
        self._status = EngineStatus(
            rules_active=0,
            rules_rejected=0,
            last_reload_at=None,
            last_reload_error=None,
            alerts_open=0,
            sink_backlog=0,
        )
        self._generation = engine.registry.generation
        self._reloaded_at: float | None = time.time()
        self._alerted: frozenset[ProcessKey] = frozenset()
        self._alerted_wanted = 0.0
        engine.add_alert_listener(self._on_alert_changes)  # called on the worker thread
        self._watch = asyncio.get_running_loop().create_task(
            self._watch_loop(), name="daemoneye-ipc-engine"
        )

    async def _on_worker(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, work)

    async def _reading(self, work: Callable[[ReadOnlyStore], T]) -> T:
        return await self._read(work)

    def _on_alert_changes(self, changes: list[AlertChange]) -> None:
        for change in changes:
            self._publish_alert(change.alert)

    # -- alerts ------------------------------------------------------------------------------
    async def list_alerts(
        self,
        *,
        state: str | None,
        severity: str | None,
        limit: int,
        before_id: int | None,
        rule: str | None = None,
        since: float | None = None,
        offset: int | None = None,
    ) -> Sequence[Alert]:
        """By id, newest first, so that pages chained with before_id are consistent; or, with
        `offset`, most recently seen first (`alerts list`), paged by offset."""
        selection = alert_queries.AlertFilter(
            min_severity=severity,
            rule_id=rule,
            state=state,
            since=since,
            limit=limit,
            before_id=None if offset is not None else before_id if before_id is not None else 2**62,
            offset=offset or 0,
        )
        return await self._reading(lambda store: alert_queries.list_alerts(store, selection))

    async def alert_detail(self, alert_id: int) -> AlertDetail | None:
        def read(store: ReadOnlyStore) -> AlertDetail | None:
            found = alert_queries.get_alert(store, alert_id)
            if found is None:
                return None
            return AlertDetail(found[0], found[1], tuple(outbox.deliveries_of(store, alert_id)))

        return await self._reading(read)

    async def get_alert(self, alert_id: int) -> Alert | None:
        found = await self._reading(lambda store: alert_queries.get_alert(store, alert_id))
        return None if found is None else found[0]

    async def set_alert_state(self, alert_id: int, state: str, actor: str) -> Alert | None:
        def change() -> AlertChange:
            return self._engine.book.set_state(alert_id, state, actor, time.time())

        try:
            result = await self._on_worker(change)
        except NoSuchAlert:
            return None
        except InvalidTransition as exc:
            raise MethodError(ErrorCode.CONFLICT, str(exc)) from None
        self._publish_alert(result.alert)
        return result.alert

    # -- rules -------------------------------------------------------------------------------
    async def rule_statuses(self) -> Sequence[RuleStatus]:
        ruleset = self._engine.registry.current
        hits = await self._reading(_hits)
        stats = self._engine.rule_stats()
        return [
            RuleStatus(
                rule,
                *hits.get(rule.id, (0, None)),
                # its own problems, and its file's (a broken file runs its last good rules)
                tuple(
                    p
                    for p in ruleset.problems
                    if p.rule_id == rule.id or (p.rule_id is None and p.file == rule.source_file)
                ),
                timeouts=stats[rule.id].timeouts if rule.id in stats else 0,
                suspended=rule.id in stats and stats[rule.id].suspended,
            )
            for rule in ruleset.rules
        ]

    async def set_rule_enabled(self, rule_id: str, enabled: bool, actor: str) -> RuleStatus | None:
        # Off the loop: the registry's lock is held for a whole reload (reading and validating
        # every rule file), and the loop must never wait for that.
        outcome = await asyncio.to_thread(self._engine.registry.set_enabled, rule_id, enabled)
        if outcome is None:
            return None
        await self._swapped(outcome)
        statuses = await self._announce_rules()
        return next((s for s in statuses if s.rule.id == rule_id), None)

    async def reload_rules(self, actor: str) -> RulesReload:
        outcome = await self._on_worker(self._engine.load)
        self._note_swap(outcome)
        await self._announce_rules()
        return RulesReload(
            accepted=not outcome.problems,
            active=len(outcome.ruleset.rules),
            problems=outcome.problems,
        )

    async def _swapped(self, outcome: ReloadOutcome) -> None:
        await self._on_worker(lambda: self._engine.apply(outcome))
        self._note_swap(outcome)

    def _note_swap(self, outcome: ReloadOutcome) -> None:
        self._generation = outcome.generation
        self._reloaded_at = time.time()

    async def _announce_rules(self) -> Sequence[RuleStatus]:
        statuses = await self.rule_statuses()
        self._publish_rules(statuses)
        return statuses

    # -- status ------------------------------------------------------------------------------
    def status(self) -> EngineStatus:
        """Rule counts as of now; open alerts and sink backlog as of the last refresh (at most
        a second old)."""
        ruleset = self._engine.registry.current
        running = self._engine.status()
        return dataclasses.replace(
            self._status,
            rules_active=len(ruleset.enabled),
            rules_rejected=len(ruleset.problems),
            last_reload_at=self._reloaded_at,
            problems=self._status.problems + running.rule_problems,
            rule_timeouts_total=running.timeouts_total,
            rules_suspended=running.rules_suspended,
        )

    def alerted(self) -> Collection[ProcessKey]:
        self._alerted_wanted = time.monotonic()
        return self._alerted

    async def refresh(self) -> EngineStatus:
        """Re-read what `status()` reports (open alerts, sink backlog) from the store."""
        ruleset = self._engine.registry.current
        configured = enabled_sink_names(self._config().config.sinks)

        def read(store: ReadOnlyStore) -> tuple[int, list[outbox.SinkHealth]]:
            return (alert_queries.open_alert_count(store), outbox.sink_health(store, configured))

        alerts_open, healths = await self._reading(read)
        self._status = EngineStatus(
            rules_active=len(ruleset.enabled),
            rules_rejected=len(ruleset.problems),
            last_reload_at=self._reloaded_at,
            last_reload_error=None,
            alerts_open=alerts_open,
            sink_backlog=sum(h.pending for h in healths),
            problems=tuple(outbox.health_problems(healths, time.time())),
        )
        return self.status()

    async def _watch_loop(self) -> None:
        """Once a second: tell subscribers about rule sets swapped elsewhere (file watcher,
        SIGHUP), and keep the `alerted` set fresh while someone filters by it."""
        while True:
            try:
                if self._engine.registry.generation != self._generation:
                    self._generation = self._engine.registry.generation
                    self._reloaded_at = time.time()
                    await self._announce_rules()
                if time.monotonic() - self._alerted_wanted < ALERTED_WANTED_S:
                    self._alerted = frozenset(await self._reading(alert_queries.alerted_instances))
                await self.refresh()
            except (StoreError, MethodError) as exc:
                log.warning("could not read the engine's state for IPC clients: %s", exc)
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def close(self) -> None:
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch


def _hits(store: ReadOnlyStore) -> dict[str, tuple[int, float | None]]:
    """Detections (alert repeats included) and the last one, per rule."""
    hits: dict[str, tuple[int, float | None]] = {}
    for rule_id, count, last in store.fetch_rows(
        "SELECT rule_id, sum(count), max(last_seen) FROM alerts GROUP BY rule_id"
    ):
        hits[str(rule_id)] = (
            int(count) if isinstance(count, int | float) else 0,
            float(last) if isinstance(last, int | float) else None,
        )
    return hits
