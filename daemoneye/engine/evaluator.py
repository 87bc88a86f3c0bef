"""Rule evaluation: each tick over what changed, or in full over the whole store.

Per-tick cost must not grow with the number of live processes, so the engine evaluates rules
on its own "delta" connection where TEMP tables named `processes` and `process_events` shadow
the real ones. Unqualified names resolve to the temp schema first, so before each tick those
tables are refilled with only the changed instances' rows and this tick's new events, and
`live_processes` is a TEMP view over them: a rule sees only what changed. For context (the
parent of a new shell, its siblings) rules read `all_processes`, a TEMP view over
`main.processes` that every sandbox connection has, so the same rule text works on the full
connection, in `rules test` and in `daemoneye query`.

Full evaluation (a rule added, changed or enabled; `rules test`) runs on a second connection
without shadows: `processes` there is the whole retained history.

An Evaluator holds SQLite connections: use it from one thread (the daemon's collection worker,
right after the tick is written). `set_rules` may be called from any thread.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import apsw

from daemoneye.engine.sandbox import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIME_BUDGET_S,
    PROGRESS_STEPS,
    Deadline,
    GatedAuthorizer,
    Rows,
    SQLValue,
    open_store,
    run_rows,
)
from daemoneye.errors import QueryError
from daemoneye.models import (
    CHANGE_KINDS,
    Detection,
    ProcessEvent,
    ProcessKey,
    ProcessRecord,
    Rule,
    ScanDelta,
)
from daemoneye.store.rows import INSERT_EVENT, PROCESS_COLUMNS, event_row, process_row
from daemoneye.store.sandbox import BudgetExceeded, register_functions

log = logging.getLogger(__name__)

# After this many timeouts in a row a rule is suspended until its query changes: one runaway
# rule must not cost its whole budget every tick forever.
MAX_CONSECUTIVE_TIMEOUTS = 3
# Cap on the bytes of text and blobs one rule may return in one evaluation.
MAX_RESULT_BYTES = 8 * 1024 * 1024

_SHADOW_SETUP = """
CREATE TEMP TABLE processes AS SELECT * FROM main.processes LIMIT 0;
CREATE TEMP TABLE process_events AS SELECT * FROM main.process_events LIMIT 0;
CREATE TEMP VIEW live_processes AS SELECT * FROM temp.processes WHERE ended_at IS NULL;
"""
_CLEAR_SHADOWS = "DELETE FROM temp.processes; DELETE FROM temp.process_events;"
# All of a tick's instances in one statement, from a JSON array of [pid, start_time] pairs
# (SQLite reads back exactly the double Python's repr wrote). Not `executemany` over the
# instances: apsw returns its statement to the statement cache's ring once per row, and a tick
# of a few hundred instances would push every prepared rule out, to be prepared again.
_COPY_INSTANCES = (
    "INSERT INTO temp.processes SELECT p.* FROM json_each(?1) AS j CROSS JOIN main.processes "
    "AS p WHERE p.pid = j.value ->> 0 AND p.start_time = j.value ->> 1"
)
_COPY_EVENTS = "INSERT INTO temp.process_events SELECT * FROM main.process_events WHERE id > ?"
_LAST_EVENT_ID = "SELECT coalesce(max(id), 0) FROM main.process_events"

_INSERT_RECORD = (
    f"INSERT INTO temp.processes ({', '.join(PROCESS_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(PROCESS_COLUMNS))})"
)
_INSERT_EVENT_ROW = INSERT_EVENT.replace("INTO process_events", "INTO temp.process_events")

RowValue = str | int | float | None
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """Why one rule produced nothing (or not everything) in one evaluation. kind: 'timeout'
    (aborted at its budget), 'error', 'truncated' (row or size cap), 'suspended'."""

    rule_id: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """What one evaluation found: detections (one per rule and process instance), failures,
    each rule's time, and for a tick the number of instances and the last event id seen."""

    detections: tuple[Detection, ...]
    failures: tuple[RuleFailure, ...]
    timings_ms: tuple[tuple[str, float], ...]
    elapsed_ms: float
    instances: int | None = None  # rows under evaluation (per tick); None for full evaluation
    last_event_id: int | None = None


@dataclass(frozen=True, slots=True)
class RuleStats:
    """Running totals for one rule since the evaluator started (for health and `rules list`)."""

    evaluations: int
    detections: int
    timeouts: int
    errors: int
    truncations: int
    total_ms: float
    max_ms: float
    suspended: bool
    last_error: str | None
    consecutive_timeouts: int = 0  # > 0: its last evaluation hit the budget


@dataclass(slots=True)
class _Counters:
    evaluations: int = 0
    detections: int = 0
    timeouts: int = 0
    consecutive_timeouts: int = 0
    errors: int = 0
    truncations: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    suspended_query: str | None = None
    last_error: str | None = None


@dataclass(slots=True)
class _Session:
    """One sandbox connection with its gate and deadline installed once."""

    conn: apsw.Connection
    authorizer: GatedAuthorizer = field(default_factory=GatedAuthorizer)
    deadline: Deadline = field(default_factory=Deadline)

    def __post_init__(self) -> None:
        self.conn.authorizer = self.authorizer
        self.conn.set_progress_handler(self.deadline, PROGRESS_STEPS)
        # REGEXP checks the same deadline: the progress handler never runs inside a function.
        register_functions(self.conn, self.deadline)


def _create_shadows(conn: apsw.Connection) -> None:
    conn.pragma("query_only", False)
    conn.execute(_SHADOW_SETUP)


def changed_keys(delta: ScanDelta) -> tuple[ProcessKey, ...]:
    """The instances one tick makes worth evaluating: new ones, ones that exec'd, and ones
    that changed after start (a rename, a uid, a new cwd …: models.CHANGE_KINDS), so that
    every rule sees the new state. Alerts stay one per (rule, instance): a rule that matched
    before the change counts it again."""
    keys = [r.key for r in (*delta.added, *delta.execed)]
    keys += [
        ProcessKey(e.pid, e.start_time)
        for e in delta.events
        if e.kind in CHANGE_KINDS and e.start_time != 0.0
    ]
    return tuple(dict.fromkeys(keys))


class Evaluator:
    """Runs rules against the store at `db_path` (read-only connections of its own)."""

    def __init__(
        self,
        db_path: Path | str,
        rules: Iterable[Rule] = (),
        *,
        time_budget_s: float = DEFAULT_TIME_BUDGET_S,
        full_time_budget_s: float | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        clock: Callable[[], float] = time.time,
        connect: Callable[[Path | str], apsw.Connection] = open_store,
    ) -> None:
        self.time_budget_s = time_budget_s
        self.full_time_budget_s = full_time_budget_s or time_budget_s
        self.max_rows = max_rows
        self._clock = clock
        self._rules: tuple[Rule, ...] = ()
        self._counters: dict[str, _Counters] = {}
        # The counters are the worker's; other threads read a snapshot of them (`stats`),
        # built on demand rather than after every tick.
        self._lock = threading.Lock()
        self._dirty = False
        self._published: dict[str, RuleStats] = {}
        self._full = _Session(connect(db_path))
        try:
            self._delta = _Session(connect(db_path))
        except BaseException:
            self._full.conn.close()
            raise
        try:
            # The shadow tables are refilled every tick, so this connection cannot keep
            # `query_only` (toggling it would expire every prepared rule). Its main database is
            # still opened read-only, and the authorizer refuses rules any write to temp.
            self._trusted(self._delta, _create_shadows)
            self._event_cursor = int(self._delta.conn.execute(_LAST_EVENT_ID).get)
        except BaseException:
            self.close()
            raise
        self.set_rules(rules)

    # -- rules ---------------------------------------------------------------------------------
    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Replace the rules (one assignment). A suspended rule is resumed when its query
        changed."""
        self._rules = tuple(rules)

    def stats(self) -> dict[str, RuleStats]:
        """Per-rule totals as of the last rule evaluated. Safe from any thread: built under the
        lock the worker takes to count (never while a rule runs), when something changed since
        the last call; the mapping returned is never changed after."""
        with self._lock:
            if self._dirty:
                self._published = self._snapshot()
                self._dirty = False
            return self._published

    def _snapshot(self) -> dict[str, RuleStats]:
        return {
            rule_id: RuleStats(
                c.evaluations,
                c.detections,
                c.timeouts,
                c.errors,
                c.truncations,
                round(c.total_ms, 3),
                round(c.max_ms, 3),
                c.suspended_query is not None,
                c.last_error,
                c.consecutive_timeouts,
            )
            for rule_id, c in self._counters.items()
        }

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate_changes(
        self, keys: Iterable[ProcessKey], *, since_event_id: int | None = None
    ) -> EvaluationResult:
        """Run every enabled rule over the instances `keys` and the events newer than
        `since_event_id` (default: the ones this evaluator has not seen yet)."""
        started = time.perf_counter()
        after = self._event_cursor if since_event_id is None else since_event_id
        instances_json = _instances_json(keys)

        def fill(conn: apsw.Connection) -> tuple[int, int]:
            with conn:
                conn.execute(_CLEAR_SHADOWS)
                if instances_json is not None:
                    conn.execute(_COPY_INSTANCES, (instances_json,))
                conn.execute(_COPY_EVENTS, (after,))
                instances = int(conn.execute("SELECT count(*) FROM temp.processes").get)
                last = conn.execute("SELECT max(id) FROM temp.process_events").get
            return instances, after if last is None else int(last)

        instances, last_event_id = self._trusted(self._delta, fill)
        self._event_cursor = max(self._event_cursor, last_event_id)
        if instances == 0 and last_event_id == after:
            return EvaluationResult((), (), (), _ms_since(started), 0, last_event_id)
        result = self._run(
            self._delta, [r for r in self._rules if r.enabled], self.time_budget_s, started
        )
        return EvaluationResult(
            result.detections,
            result.failures,
            result.timings_ms,
            result.elapsed_ms,
            instances,
            last_event_id,
        )

    def evaluate_records(
        self, records: Sequence[ProcessRecord], events: Sequence[ProcessEvent] = ()
    ) -> EvaluationResult:
        """Run every enabled rule over `records` and `events` as they are, not as the store
        has them: for a tick the store could not take (disk full), so its alerts are not
        lost. Context from `all_processes` is what the store last took."""
        started = time.perf_counter()
        process_rows = [process_row(r) for r in records]
        event_rows = [event_row(e) for e in events]

        def fill(conn: apsw.Connection) -> None:
            with conn:
                conn.execute(_CLEAR_SHADOWS)
                conn.executemany(_INSERT_RECORD, process_rows)
                conn.executemany(_INSERT_EVENT_ROW, event_rows)

        if not process_rows and not event_rows:
            return EvaluationResult((), (), (), _ms_since(started), 0, self._event_cursor)
        self._trusted(self._delta, fill)
        result = self._run(
            self._delta, [r for r in self._rules if r.enabled], self.time_budget_s, started
        )
        return EvaluationResult(
            result.detections,
            result.failures,
            result.timings_ms,
            result.elapsed_ms,
            len(process_rows),
            self._event_cursor,
        )

    def evaluate_instances(
        self, keys: Iterable[ProcessKey], only: Callable[[Rule], bool]
    ) -> EvaluationResult:
        """Run the enabled rules that `only` accepts over the instances `keys`, with no
        events (they were evaluated when they were written): for state that changed outside
        the process table, such as the sockets an instance holds."""
        started = time.perf_counter()
        instances_json = _instances_json(keys)
        rules = [r for r in self._rules if r.enabled and only(r)]
        if instances_json is None or not rules:
            return EvaluationResult((), (), (), _ms_since(started), 0, self._event_cursor)

        def fill(conn: apsw.Connection) -> int:
            with conn:
                conn.execute(_CLEAR_SHADOWS)
                conn.execute(_COPY_INSTANCES, (instances_json,))
                copied = int(conn.execute("SELECT count(*) FROM temp.processes").get)
            return copied

        instances = self._trusted(self._delta, fill)
        if instances == 0:
            return EvaluationResult((), (), (), _ms_since(started), 0, self._event_cursor)
        result = self._run(self._delta, rules, self.time_budget_s, started)
        return EvaluationResult(
            result.detections,
            result.failures,
            result.timings_ms,
            result.elapsed_ms,
            instances,
            self._event_cursor,
        )

    def evaluate_delta(self, delta: ScanDelta) -> EvaluationResult:
        """`evaluate_changes` for one collection tick."""
        return self.evaluate_changes(changed_keys(delta))

    def evaluate_full(self, rules: Iterable[Rule] | None = None) -> EvaluationResult:
        """Run `rules` (default: every enabled rule) over the whole store, no shadows."""
        started = time.perf_counter()
        chosen = [r for r in self._rules if r.enabled] if rules is None else list(rules)
        return self._run(self._full, chosen, self.full_time_budget_s, started)

    def close(self) -> None:
        for session in (self._full, self._delta):
            session.conn.close()

    # -- internals -----------------------------------------------------------------------------
    def _trusted(self, session: _Session, action: Callable[[apsw.Connection], T]) -> T:
        """Run the engine's own statements (filling the shadow tables) with the gate open."""
        session.authorizer.trusted = True
        try:
            return action(session.conn)
        finally:
            session.authorizer.trusted = False

    def _run(
        self, session: _Session, rules: list[Rule], budget_s: float, started: float
    ) -> EvaluationResult:
        detections: list[Detection] = []
        failures: list[RuleFailure] = []
        timings: list[tuple[str, float]] = []
        now = self._clock()
        for rule in rules:
            with self._lock:
                counters = self._counters.setdefault(rule.id, _Counters())
                if counters.suspended_query is not None:
                    if counters.suspended_query == rule.query:
                        continue
                    counters.suspended_query = None
                    counters.consecutive_timeouts = 0
            rule_started = time.perf_counter()
            rows: Rows | None = None
            failure: BudgetExceeded | QueryError | None = None
            try:
                rows = run_rows(
                    session.conn,
                    rule.query,
                    session.deadline,
                    session.authorizer,
                    budget_s=budget_s,
                    max_rows=self.max_rows,
                )
            except (BudgetExceeded, QueryError) as exc:
                failure = exc
            elapsed = _ms_since(rule_started)
            timings.append((rule.id, round(elapsed, 3)))
            found, cut = ([], False) if rows is None else detections_from_rows(rule, rows, now)
            with self._lock:  # counting only: nothing here may wait (logging is after)
                self._dirty = True
                counters.evaluations += 1
                counters.total_ms += elapsed
                counters.max_ms = max(counters.max_ms, elapsed)
                failed: RuleFailure | None = None
                if isinstance(failure, BudgetExceeded):
                    failed = self._timed_out(rule, counters, str(failure))
                elif failure is not None:
                    counters.errors += 1
                    counters.last_error = str(failure)
                    failed = RuleFailure(rule.id, "error", str(failure))
                if rows is not None:
                    counters.consecutive_timeouts = 0
                    if rows.truncated or cut:
                        counters.truncations += 1
                    counters.detections += len(found)
            if failed is not None:
                if failed.kind == "error":
                    log.warning("rule %s failed: %s", rule.id, failed.message)
                else:
                    log.warning("rule %s %s", rule.id, failed.message)
                failures.append(failed)
            if rows is None:
                continue
            if rows.truncated or cut:
                failures.append(
                    RuleFailure(
                        rule.id,
                        "truncated",
                        f"returned more than {self.max_rows} rows or {MAX_RESULT_BYTES} bytes; "
                        "the rest were dropped",
                    )
                )
            detections.extend(found)
        return EvaluationResult(
            tuple(detections), tuple(failures), tuple(timings), _ms_since(started)
        )

    def _timed_out(self, rule: Rule, counters: _Counters, message: str) -> RuleFailure:
        counters.timeouts += 1
        counters.consecutive_timeouts += 1
        counters.last_error = message
        if counters.consecutive_timeouts >= MAX_CONSECUTIVE_TIMEOUTS:
            counters.suspended_query = rule.query
            message += (
                f"; suspended after {counters.consecutive_timeouts} timeouts in a row "
                "until its query changes"
            )
            return RuleFailure(rule.id, "suspended", message)
        return RuleFailure(rule.id, "timeout", message)


def detections_from_rows(rule: Rule, rows: Rows, ts: float) -> tuple[list[Detection], bool]:
    """One Detection per process instance named by `rows` (the first row wins), and whether
    the byte cap cut the rows short. Rows without a usable pid and start_time are skipped."""
    if not rows.rows:
        return [], False
    lowered = [column.lower() for column in rows.columns]
    pid_at, start_at = lowered.index("pid"), lowered.index("start_time")
    detections: list[Detection] = []
    seen: set[tuple[int, float]] = set()
    budget = MAX_RESULT_BYTES
    for raw in rows.rows:
        budget -= sum(len(v) for v in raw if isinstance(v, str | bytes))
        if budget < 0:
            return detections, True
        try:
            pid, start_time = int(raw[pid_at]), float(raw[start_at])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if (pid, start_time) in seen:
            continue
        seen.add((pid, start_time))
        row = tuple(zip(rows.columns, (_plain(value) for value in raw), strict=True))
        detections.append(
            Detection(rule.id, rule.severity, render_title(rule, row), pid, start_time, ts, row)
        )
    return detections, False


def render_title(rule: Rule, row: tuple[tuple[str, RowValue], ...]) -> str:
    """The rule's title template filled from `row`; default "<rule name>: <name> (pid N)"."""
    values: dict[str, RowValue] = {}
    for column, value in row:
        values.setdefault(column, value)
    if rule.title is not None:
        try:
            return rule.title.format_map(
                {column: "" if value is None else value for column, value in values.items()}
            )
        except (KeyError, ValueError, IndexError):
            pass  # validated at load; a mismatch here falls back to the default title
    name = values.get("name")
    pid = values.get("pid")
    return f"{rule.name}: {name} (pid {pid})" if name is not None else f"{rule.name} (pid {pid})"


def _instances_json(keys: Iterable[ProcessKey]) -> str | None:
    """The instances as `_COPY_INSTANCES` takes them; None for none. An infinite start time
    travels as JSON5's Infinity, which SQLite reads back; a NaN names no stored instance
    (SQLite keeps NaN as NULL, which equals nothing)."""
    pairs = [[key.pid, key.start_time] for key in keys if not math.isnan(key.start_time)]
    return json.dumps(pairs) if pairs else None


def _plain(value: SQLValue) -> RowValue:
    return value.hex() if isinstance(value, bytes) else value


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
