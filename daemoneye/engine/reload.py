"""Hot reload: watch every rule directory, re-validate the whole set, swap it in one step.

What "the new set validates" means here. A rule set is built file by file and rule by rule, so
one broken edit cannot take the others down with it, and a broken edit never replaces what ran
before it:

- a file that cannot be read as a whole (TOML syntax error, a half-written save, bad UTF-8, not
  `[[rule]]` tables) keeps that file's last good rules, and the problem is reported;
- a rule that no longer validates (unknown column, forbidden function, bad severity …) keeps
  its last good version if it had one, and is reported; a new rule that does not validate is
  simply not loaded;
- everything else — other files, other rules of the same file — takes effect.

So the set swapped in is always made only of validated rules, the problems travel with it
(`RuleSet.problems`, shown by `daemoneye rules list`, logged, later the dashboard), and the swap
is one assignment under a lock. Files deleted from a directory take their rules with them.

The watcher is asyncio-friendly (`watch_rules`); `RuleRegistry.reload_now` is the synchronous
entry point for SIGHUP and `daemoneye rules reload`. Collection never waits for either: loading
runs in a worker thread and the evaluator only ever sees a finished set.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import watchfiles

from daemoneye.engine.last_good import LastGoodFiles
from daemoneye.engine.rule_loader import (
    EMPTY_RULESET,
    RuleSet,
    RuleValidator,
    is_rule_file,
    load_rules,
    ruleset_digest,
)
from daemoneye.models import Rule, RuleProblem

log = logging.getLogger(__name__)

# Changes closer together than this are one reload (an editor's write + rename + chmod).
DEBOUNCE_STEP_MS = 150
# … but a steady stream of changes still reloads at least this often.
DEBOUNCE_MAX_MS = 1000
# How often the watcher re-checks which directories exist.
RECHECK_MS = 1000


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """The result of one reload. `swapped`: the active set changed (rules or problems);
    `changed`: enabled rules needing a full evaluation; `removed`: ids no longer active."""

    generation: int
    ruleset: RuleSet
    previous: RuleSet
    swapped: bool
    changed: tuple[Rule, ...]
    removed: tuple[str, ...]
    elapsed_ms: float

    @property
    def problems(self) -> tuple[RuleProblem, ...]:
        return self.ruleset.problems


class RuleRegistry:
    """The current RuleSet, its generation and the enable/disable switches, swapped
    atomically. Thread-safe: reloads are serialised, readers never block."""

    def __init__(
        self,
        dirs: Sequence[Path],
        *,
        validator: RuleValidator | None = None,
        kept: LastGoodFiles | None = None,
    ) -> None:
        self._dirs = tuple(Path(d) for d in dirs)
        self._kept = kept
        self._validator = validator or RuleValidator()
        self._lock = threading.Lock()
        self._current = EMPTY_RULESET
        self._generation = 0
        self._enabled: dict[str, bool] = {}  # runtime switches (rules.enable / rules.disable)

    @property
    def dirs(self) -> tuple[Path, ...]:
        return self._dirs

    @property
    def current(self) -> RuleSet:
        return self._current

    @property
    def generation(self) -> int:
        """Incremented on every swap; 0 before the first load."""
        return self._generation

    def reload_now(self) -> ReloadOutcome:
        """Read every rule directory again and swap in the result (see the module docstring)."""
        started = time.perf_counter()
        with self._lock:
            loaded = load_rules(
                self._dirs, validator=self._validator, previous=self._current, kept=self._kept
            )
            return self._swap(loaded, started)

    def set_enabled(self, rule_id: str, enabled: bool) -> ReloadOutcome | None:
        """Switch one rule on or off until the daemon stops (kept across reloads); None when
        no rule has that id."""
        started = time.perf_counter()
        with self._lock:
            if self._current.get(rule_id) is None:
                return None
            self._enabled[rule_id] = enabled
            return self._swap(self._current, started)

    def close(self) -> None:
        """Close the validator's scratch database (after the last reload)."""
        with self._lock:
            self._validator.close()

    def _swap(self, loaded: RuleSet, started: float) -> ReloadOutcome:
        rules = tuple(
            replace(rule, enabled=self._enabled[rule.id])
            if rule.id in self._enabled and self._enabled[rule.id] != rule.enabled
            else rule
            for rule in loaded.rules
        )
        new = RuleSet(
            rules,
            loaded.problems,
            ruleset_digest(rules),
            loaded.candidates,
            loaded.fallbacks,
            loaded.notices,
        )
        previous = self._current
        swapped = new.digest != previous.digest or new.problems != previous.problems
        if swapped or self._generation == 0:
            self._current = new  # the one assignment readers see
            self._generation += 1
        else:
            new = previous
        outcome = ReloadOutcome(
            generation=self._generation,
            ruleset=new,
            previous=previous,
            swapped=swapped,
            changed=new.changed_since(previous) if swapped else (),
            removed=tuple(sorted({r.id for r in previous.rules} - {r.id for r in new.rules})),
            elapsed_ms=round((time.perf_counter() - started) * 1000.0, 3),
        )
        if swapped:
            log.info(
                "rules: generation %d, %d rules (%d enabled), %d problems, %d to evaluate",
                outcome.generation,
                len(new.rules),
                len(new.enabled),
                len(new.problems),
                len(outcome.changed),
            )
            for problem in new.problems:
                if problem not in previous.problems:
                    log.warning("rules: %s", problem)
            for notice in new.notices:
                if notice not in previous.notices:
                    log.info("rules: %s", notice)
        return outcome


# -- watching ------------------------------------------------------------------------------------
OnReload = Callable[[ReloadOutcome], Awaitable[None] | None]


def watch_targets(dirs: Sequence[Path]) -> tuple[Path, ...]:
    """What to watch (non-recursively) for `dirs`: each rule directory that exists. A missing
    one is looked for again at every recheck rather than by watching an ancestor: with no
    /etc/daemoneye, that ancestor is /etc, which the kernel reports on for every program that
    starts (ld.so.cache) — thousands of wakeups a second on a busy host."""
    return tuple(dict.fromkeys(directory for directory in dirs if directory.is_dir()))


def _relevant(dirs: Sequence[Path]) -> Callable[[watchfiles.Change, str], bool]:
    """A change matters when it is a rule file in a rule directory, or a rule directory (or
    one of its ancestors) appearing or disappearing."""
    rule_dirs = set(dirs)
    ancestors = {parent for d in dirs for parent in d.parents}

    def relevant(change: watchfiles.Change, raw_path: str) -> bool:
        path = Path(raw_path)
        if path.parent in rule_dirs and is_rule_file(path):
            return True
        return path in rule_dirs or path in ancestors

    return relevant


async def watch_rules(
    registry: RuleRegistry,
    on_reload: OnReload,
    *,
    stop_event: asyncio.Event | None = None,
    step_ms: int = DEBOUNCE_STEP_MS,
    debounce_ms: int = DEBOUNCE_MAX_MS,
    recheck_ms: int = RECHECK_MS,
) -> None:
    """Reload `registry` whenever a rule file changes (written, renamed over, moved in,
    deleted), debounced, and pass every outcome to `on_reload`. Runs until `stop_event` is set.

    Loading happens in a worker thread; `on_reload` runs on the event loop (it may be async).
    Every `recheck_ms` the set of directories to watch is recomputed, so a directory created
    in the instant between two watches is still picked up.
    """
    stop = stop_event or asyncio.Event()
    relevant = _relevant(registry.dirs)
    previous: tuple[Path, ...] | None = None
    while not stop.is_set():
        targets = watch_targets(registry.dirs)
        if previous is not None and targets != previous:
            # A directory came or went: files may have landed in it before any watch.
            await _reload(registry, on_reload, only_if_swapped=True)
        previous = targets
        if not targets:  # no rule directory exists (yet): look again after a recheck
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), recheck_ms / 1000)
            continue
        retarget = False
        first = True
        async for changes in watchfiles.awatch(
            *targets,
            watch_filter=relevant,
            step=step_ms,
            debounce=debounce_ms,
            stop_event=stop,
            recursive=False,
            ignore_permission_denied=True,
            rust_timeout=recheck_ms,
            yield_on_timeout=True,
        ):
            if changes:
                await _reload(registry, on_reload)
            elif first:
                # The first yield comes once the watch runs: a file saved after the rules
                # were last read but before the watch started is caught here.
                await _reload(registry, on_reload, only_if_swapped=True)
            first = False
            # A directory appeared or went away (perhaps came back): its old watch, if any,
            # is dead, so watch again from scratch.
            if any(not is_rule_file(Path(path)) for _, path in changes) or (
                watch_targets(registry.dirs) != targets
            ):
                retarget = True
                break
        if not retarget:
            return


async def _reload(
    registry: RuleRegistry, on_reload: OnReload, *, only_if_swapped: bool = False
) -> None:
    outcome = await asyncio.to_thread(registry.reload_now)
    if only_if_swapped and not outcome.swapped:
        return  # nothing new: no outcome to report (it would repeat known problems)
    result = on_reload(outcome)
    if inspect.isawaitable(result):
        await result
