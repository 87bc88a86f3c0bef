"""The detection engine as the daemon runs it: rules → evaluation → alerts → outbox.

Runs on the daemon's single worker thread, after each tick's store write (the evaluator reads
the committed rows through its own read-only connections). A rule set swap triggers a full
evaluation of the rules that changed (at the daemon's start: after the rules are live, one rule
at a time, `load_live`); every swap and every refused rule is audited and logged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemoneye.config.schema import Config
from daemoneye.engine import audit, last_good
from daemoneye.engine.alerts import AlertBook, AlertChange
from daemoneye.engine.evaluator import (
    MAX_CONSECUTIVE_TIMEOUTS,
    EvaluationResult,
    Evaluator,
    RuleStats,
    changed_keys,
)
from daemoneye.engine.last_good import LastGoodFiles
from daemoneye.engine.reload import ReloadOutcome, RuleRegistry
from daemoneye.engine.rule_switches import RuleSwitches, switches_file_for
from daemoneye.engine.sinks import enabled_sink_names
from daemoneye.models import Detection, ProcessKey, Rule, ScanDelta
from daemoneye.store.db import Store

log = logging.getLogger(__name__)

NEW_ALERT_KINDS = ("raised", "reopened")


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """What `health` says about the rules."""

    generation: int
    rules_loaded: int
    rules_enabled: int
    problems: int
    timeouts_total: int
    rules_suspended: int = 0
    rule_problems: tuple[str, ...] = ()  # sentences for `health`: rules that hit their budget


class DetectionEngine:
    """Owns the rule registry, the evaluator and the alert book (worker thread only, except
    `registry`, which is thread-safe and also used by the rule-file watcher)."""

    def __init__(
        self,
        store: Store,
        db_path: Path,
        config: Config,
        rules_dirs: Sequence[Path],
        *,
        on_new_alerts: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = RuleRegistry(
            rules_dirs,
            kept=LastGoodFiles(last_good.directory_for(db_path)),
            switches=RuleSwitches(switches_file_for(db_path)),
        )
        self.evaluator = Evaluator(db_path)
        self.book = AlertBook(store, sinks=enabled_sink_names(config.sinks))
        self._on_new_alerts = on_new_alerts
        self._clock = clock
        self._listeners: list[Callable[[list[AlertChange]], None]] = []
        self._applied_generation = 0

    def add_alert_listener(self, listener: Callable[[list[AlertChange]], None]) -> None:
        """Called (on the worker thread) with every batch of alert changes, e.g. for IPC."""
        self._listeners.append(listener)

    def load(self) -> ReloadOutcome:
        """Read every rule directory and make the result live (SIGHUP, rules.reload)."""
        outcome = self.registry.reload_now()
        self.apply(outcome)
        return outcome

    def load_live(self) -> tuple[Rule, ...]:
        """Read every rule directory and make the rules live without evaluating them over the
        store (startup); the rules that want a full evaluation are returned, for
        `evaluate_in_full` one at a time once the daemon serves its clients."""
        return self.swap(self.registry.reload_now())

    def apply(self, outcome: ReloadOutcome) -> list[AlertChange]:
        """Make a reload's outcome live: swap the evaluator's rules, audit, evaluate in full
        the rules that are new or changed."""
        changes: list[AlertChange] = []
        for rule in self.swap(outcome):
            changes += self.evaluate_in_full(rule)
        return changes

    def evaluate_in_full(self, rule: Rule) -> list[AlertChange]:
        """Run one rule over the whole store as it is live now: its query unchanged since it
        was given and still enabled (a later swap that changed the query, or disabled and
        enabled the rule again, runs its own evaluation). A new title, severity or place in
        its file changes nothing here."""
        live = self.registry.current.get(rule.id)
        if live is None or not live.enabled or live.query != rule.query:
            return []
        # A full evaluation also re-reads history: what was already alerted on (e.g. before a
        # restart) is not a new sighting and must not raise counts.
        return self._record(self.evaluator.evaluate_full((live,)), only_new=live.id)

    def swap(self, outcome: ReloadOutcome) -> tuple[Rule, ...]:
        """Make a reload's outcome live (the evaluator's rules swapped, audited, logged); the
        rules that are new or changed, which want a full evaluation."""
        for problem in outcome.problems:
            log.error("rule refused: %s", problem)
        if not outcome.swapped or outcome.generation < self._applied_generation:
            return ()  # nothing new, or overtaken by a later reload already applied
        self._applied_generation = outcome.generation
        ruleset = outcome.ruleset
        self.evaluator.set_rules(ruleset.rules)
        detail = {
            "generation": outcome.generation,
            "digest": ruleset.digest,
            "rules": len(ruleset.rules),
            "changed": [r.id for r in outcome.changed],
            "removed": list(outcome.removed),
            "problems": [str(p) for p in outcome.problems],
        }
        audit.record(self.store, "ruleset.swapped", "daemon", detail)
        if outcome.problems:
            audit.record(
                self.store,
                "ruleset.rejected",
                "daemon",
                {"problems": [str(p) for p in outcome.problems]},
            )
        log.info(
            "rule set %d live: %d rules (%d enabled), %d changed, %d refused, in %.0f ms",
            outcome.generation,
            len(ruleset.rules),
            len(ruleset.enabled),
            len(outcome.changed),
            len(outcome.problems),
            outcome.elapsed_ms,
        )
        return tuple(outcome.changed)

    def on_delta(self, delta: ScanDelta, *, written: bool = True) -> list[AlertChange]:
        """Evaluate what one tick (or one batch of kernel events) changed. `written` False:
        the store could not take the delta (disk full), so rules run over its records."""
        if not (delta.added or delta.execed or delta.events):
            return []
        if not written:
            wanted = set(changed_keys(delta))
            changed = {r.key: r for r in (*delta.updated, *delta.added, *delta.execed)}
            changed = {key: r for key, r in changed.items() if key in wanted}
            return self._record(
                self.evaluator.evaluate_records(tuple(changed.values()), delta.events)
            )
        return self._record(self.evaluator.evaluate_delta(delta))

    def on_connections(self, keys: Iterable[ProcessKey]) -> list[AlertChange]:
        """Evaluate the rules that read `connections` over the instances that opened one
        (the other rules saw these instances when they started or exec'd)."""
        return self._record(self.evaluator.evaluate_instances(keys, reads_connections))

    def _record(
        self, result: EvaluationResult, *, only_new: str | None = None
    ) -> list[AlertChange]:
        """Alerts for what `result` detected; `only_new` names the rule whose detections
        already alerted on (before a restart, say) are left out."""
        for failure in result.failures:
            log.warning("rule %s: %s: %s", failure.rule_id, failure.kind, failure.message)
        detections: Sequence[Detection] = result.detections
        if only_new is not None and detections:
            known = {
                (int(pid), float(start))  # type: ignore[arg-type]
                for pid, start in self.store.fetch_rows(
                    "SELECT pid, start_time FROM alerts WHERE rule_id = ?", (only_new,)
                )
            }
            detections = [d for d in detections if (d.pid, d.start_time) not in known]
        if not detections:
            return []
        rules = {rule.id: rule for rule in self.registry.current.rules}
        changes = self.book.record(detections, rules, self._clock())
        for change in changes:
            if change.kind in NEW_ALERT_KINDS:
                log.warning(
                    "alert %d [%s] %s: %s (pid %d)",
                    change.alert.id,
                    change.alert.severity,
                    change.alert.rule_id,
                    change.alert.title,
                    change.alert.pid,
                )
        if any(change.kind in NEW_ALERT_KINDS for change in changes):
            self._on_new_alerts()
        for listener in self._listeners:
            listener(changes)
        return changes

    def status(self) -> EngineStatus:
        """Safe from any thread (the registry and the evaluator's stats are swapped whole)."""
        ruleset = self.registry.current
        stats = self.evaluator.stats()
        return EngineStatus(
            generation=self.registry.generation,
            rules_loaded=len(ruleset.rules),
            rules_enabled=len(ruleset.enabled),
            problems=len(ruleset.problems),
            timeouts_total=sum(s.timeouts for s in stats.values()),
            rules_suspended=sum(
                1 for r in ruleset.enabled if r.id in stats and stats[r.id].suspended
            ),
            rule_problems=ruleset.fallbacks + budget_problems(ruleset.enabled, stats),
        )

    def rule_stats(self) -> dict[str, RuleStats]:
        """Per-rule evaluation totals (any thread)."""
        return self.evaluator.stats()

    def close(self) -> None:
        self.evaluator.close()


_CONNECTIONS_NAME = re.compile(r"\b(?:live_)?connections\b", re.IGNORECASE)


def reads_connections(rule: Rule) -> bool:
    """Whether a rule's query names the connections table or view (a rule that only mentions
    the word costs one more evaluation, nothing else)."""
    return _CONNECTIONS_NAME.search(rule.query) is not None


def budget_problems(rules: Sequence[Rule], stats: Mapping[str, RuleStats]) -> tuple[str, ...]:
    """One sentence per enabled rule that is suspended or whose last evaluation hit its time
    budget: a rule an attacker can make time out is a rule they have switched off, so it must
    show in `health`."""
    problems: list[str] = []
    for rule in rules:
        rule_stats = stats.get(rule.id)
        if rule_stats is None:
            continue
        if rule_stats.suspended:
            problems.append(
                f"rule {rule.id!r} is suspended: it hit its time budget "
                f"{MAX_CONSECUTIVE_TIMEOUTS} times in a row ({rule_stats.timeouts} timeouts "
                "in all) and is not evaluated until its query changes"
            )
        elif rule_stats.consecutive_timeouts:
            problems.append(
                f"rule {rule.id!r} hit its time budget in its last evaluation "
                f"({rule_stats.timeouts} timeouts in all): it may miss detections"
            )
    return tuple(problems)
