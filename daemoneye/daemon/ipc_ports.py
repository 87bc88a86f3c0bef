"""What IPC needs from the detection engine and the audit log: two narrow protocols, so that
either can be plugged into the daemon's IPC service (`DaemonService.attach_engine`,
`attach_audit`) or left out — then their methods answer NOT_AVAILABLE."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

from daemoneye.daemon.collection import Collection as Collector
from daemoneye.models import (
    Alert,
    AlertDetail,
    AuditVerification,
    EngineStatus,
    ProcessKey,
    RulesReload,
    RuleStatus,
)
from daemoneye.store.readonly import ReadOnlyStore


class DetectionEngine(Protocol):
    """What IPC needs from the detection engine. Called on the event loop: implementations
    move blocking work (SQL, the writer connection) to their own threads. `actor` is the peer
    as "uid 0 pid 123"; a None result means there is no such alert or rule."""

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
    ) -> Sequence[Alert]: ...

    async def get_alert(self, alert_id: int) -> Alert | None: ...

    async def alert_detail(self, alert_id: int) -> AlertDetail | None: ...

    async def set_alert_state(self, alert_id: int, state: str, actor: str) -> Alert | None: ...

    async def rule_statuses(self) -> Sequence[RuleStatus]: ...

    async def set_rule_enabled(
        self, rule_id: str, enabled: bool, actor: str
    ) -> RuleStatus | None: ...

    async def reload_rules(self, actor: str) -> RulesReload: ...

    def status(self) -> EngineStatus: ...

    def alerted(self) -> Collection[ProcessKey]:
        """Instances with an open alert (the `alerted` filter term)."""
        ...


class AuditTrail(Protocol):
    """The hash-chained audit log (daemoneye/engine/audit.py; `StoreAuditTrail` below)."""

    async def audit(self, kind: str, actor: str, detail: Mapping[str, Any]) -> None: ...

    async def verify(self) -> AuditVerification: ...


class StoreAuditTrail:
    """The audit log in the store: entries are appended on the collector's worker thread (the
    only one that writes the store) and verified on a read-only connection of their own."""

    def __init__(
        self,
        collection: Collector,
        worker: Executor,
        read: Callable[
            [Callable[[ReadOnlyStore], AuditVerification]], Awaitable[AuditVerification]
        ],
    ) -> None:
        from daemoneye.engine import audit  # the engine package may be absent: see start_ipc

        self._audit = audit
        self._collection = collection
        self._worker = worker
        self._read = read

    async def audit(self, kind: str, actor: str, detail: Mapping[str, Any]) -> None:
        store = self._collection.store
        await asyncio.get_running_loop().run_in_executor(
            self._worker, lambda: self._audit.record(store, kind, actor, detail)
        )

    async def verify(self) -> AuditVerification:
        return await self._read(lambda store: self._audit.verify(store).as_model())
