"""The rule set: every rule file of every rule directory, validated, overrides applied.

Directories are read lowest precedence first (the built-in pack, /etc/daemoneye/rules.d, the
user's rules.d — `Paths.rules_dirs`), files within one in sorted name order (`*.toml`, and Sigma
rules in `*.yml`/`*.yaml` — sigma_file.py; editor temp files are skipped). A later rule with an
id seen before replaces it and records `overrides`. Each query is compiled in the sandbox
against this code's schema: a rule that does not compile, reads something undocumented, calls
a forbidden function, does not return `pid` and `start_time`, or names a title placeholder that
is not a result column is rejected with a RuleProblem; the others load.

Given the `previous` set (hot reload), a file that cannot be read at all keeps its last good
rules, and a rule that no longer validates keeps its last good version (see reload.py).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import apsw

from daemoneye.engine.last_good import LastGoodFiles
from daemoneye.engine.rule_file import SIGMA_SUFFIXES, ParsedFile, read_rule_file, title_fields
from daemoneye.engine.sandbox import compile_columns, open_scratch
from daemoneye.errors import QueryError
from daemoneye.models import Rule, RuleProblem

REQUIRED_COLUMNS = ("pid", "start_time")


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The validated rules in effect (overrides applied), the problems found while loading,
    and a digest of the active rules that changes whenever any of them does.

    `candidates` holds every valid rule of every file before overrides were applied: the
    last-good material of the next reload.
    """

    rules: tuple[Rule, ...]
    problems: tuple[RuleProblem, ...]
    digest: str
    candidates: tuple[Rule, ...] = ()
    # One sentence per file whose rules are its last good version, not what it holds now.
    fallbacks: tuple[str, ...] = ()
    # Rules skipped on purpose (a Sigma rule for another logsource): shown, never a failure.
    notices: tuple[RuleProblem, ...] = ()

    def get(self, rule_id: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.id == rule_id), None)

    @property
    def enabled(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.enabled)

    def changed_since(self, old: RuleSet | None) -> tuple[Rule, ...]:
        """Enabled rules that need a full evaluation after a swap from `old`: new ones, ones
        that were disabled, and ones whose query changed. A change of title or severity alone
        does not re-evaluate."""
        before = {rule.id: rule for rule in old.rules} if old is not None else {}
        return tuple(
            rule
            for rule in self.enabled
            if (previous := before.get(rule.id)) is None
            or not previous.enabled
            or previous.query != rule.query
        )


EMPTY_RULESET = RuleSet((), (), hashlib.sha256(b"[]").hexdigest())


def ruleset_digest(rules: Iterable[Rule]) -> str:
    """SHA-256 over a canonical encoding of every field of `rules`, in order."""
    encoded = json.dumps(
        [
            [
                r.id,
                r.name,
                r.description,
                r.severity,
                r.enabled,
                list(r.tags),
                r.query,
                r.title,
                r.dedup_window_s,
                r.throttle_s,
                r.source_file,
                r.source_line,
                r.overrides,
                r.source_format,
                r.sigma_id,
                r.status,
                list(r.references),
                list(r.falsepositives),
            ]
            for r in rules
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(encoded.encode()).hexdigest()


RULE_SUFFIXES = (".toml", *SIGMA_SUFFIXES)


def is_rule_file(path: Path) -> bool:
    """A `*.toml` rule file or a `*.yml`/`*.yaml` Sigma rule file that is not an editor's temp
    or lock file (`.#x.toml`, `.x.toml.swp`, `x.toml~`, hidden files)."""
    return path.suffix in RULE_SUFFIXES and not path.name.startswith((".", "#", "~"))


def read_any_rule_file(path: Path) -> ParsedFile:
    """A Sigma file (by its suffix) or a TOML rule file, parsed. pySigma is imported only
    when there is a Sigma file to read (it costs ~150 ms)."""
    if path.suffix in SIGMA_SUFFIXES:
        from daemoneye.engine.sigma_file import read_sigma_file

        return read_sigma_file(path)
    return read_rule_file(path)


def rule_files(directory: Path) -> list[Path]:
    """The rule files of `directory` in load order; none when it does not exist."""
    try:
        entries = sorted(directory.iterdir(), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [entry for entry in entries if is_rule_file(entry) and entry.is_file()]


class RuleValidator:
    """Compiles rule queries in a sandbox connection (a scratch in-memory database with this
    code's schema unless given one). Results are cached by query text, so a reload recompiles
    only what changed. Thread-safe: one compile at a time."""

    def __init__(self, conn: apsw.Connection | None = None) -> None:
        self._conn = conn if conn is not None else open_scratch()
        self._columns: dict[str, tuple[str, ...] | str] = {}  # query -> columns or reason
        self._lock = threading.Lock()

    def columns(self, query: str) -> tuple[str, ...]:
        """The result columns of `query`; QueryError with the reason it was refused."""
        with self._lock:
            cached = self._columns.get(query)
            if cached is None:
                try:
                    cached = compile_columns(self._conn, query)
                except QueryError as exc:
                    cached = str(exc)
                if len(self._columns) > 4096:
                    self._columns.clear()
                self._columns[query] = cached
        if isinstance(cached, str):
            raise QueryError(cached)
        return cached

    def problems(self, rule: Rule, parsed: ParsedFile) -> list[RuleProblem]:
        """Why `rule` cannot run (empty when it can)."""
        query_line = parsed.line_of(rule, "query")
        try:
            columns = self.columns(rule.query)
        except QueryError as exc:
            return [RuleProblem(rule.source_file, query_line, rule.id, f"query: {exc}")]
        found = {column.lower() for column in columns}
        problems = []
        missing = [column for column in REQUIRED_COLUMNS if column not in found]
        if missing:
            problems.append(
                RuleProblem(
                    rule.source_file,
                    query_line,
                    rule.id,
                    f"query must return the columns pid and start_time (missing: "
                    f"{', '.join(missing)}) so each row names a process instance; "
                    f"it returns: {', '.join(columns)}",
                )
            )
        if rule.title is not None:
            unknown = [name for name in title_fields(rule.title) if name not in columns]
            if unknown:
                problems.append(
                    RuleProblem(
                        rule.source_file,
                        parsed.line_of(rule, "title"),
                        rule.id,
                        f"title placeholder {{{unknown[0]}}} is not a result column "
                        f"(columns: {', '.join(columns)})",
                    )
                )
        return problems

    def close(self) -> None:
        self._conn.close()


def validate_file(
    parsed: ParsedFile, validator: RuleValidator
) -> tuple[list[Rule], list[RuleProblem]]:
    """The rules of one parsed file that compile, and every problem of the file."""
    good: list[Rule] = []
    problems = list(parsed.problems)
    for rule in parsed.rules:
        rule_problems = validator.problems(rule, parsed)
        if rule_problems:
            problems.extend(rule_problems)
        else:
            good.append(rule)
    return good, problems


def load_file(path: Path, validator: RuleValidator | None = None) -> RuleSet:
    """One file on its own, as `daemoneye rules validate FILE` checks it."""
    own = validator or RuleValidator()
    try:
        parsed = read_any_rule_file(path)
        good, problems = validate_file(parsed, own)
    finally:
        if validator is None:
            own.close()
    return RuleSet(
        tuple(good), tuple(problems), ruleset_digest(good), tuple(good), notices=parsed.notices
    )


def load_rules(
    dirs: Sequence[Path],
    *,
    validator: RuleValidator | None = None,
    previous: RuleSet | None = None,
    kept: LastGoodFiles | None = None,
) -> RuleSet:
    """Every rule of every file of `dirs` (lowest precedence first), validated, later ids
    overriding earlier ones. With `previous`, broken files and rules fall back to their last
    good version (module docstring); with `kept`, so do files `previous` knows nothing of
    (after a restart), and each file's validated rules are kept for the next start."""
    own = validator or RuleValidator()
    try:
        return _load(dirs, own, previous, kept)
    finally:
        if validator is None:
            own.close()


def _load(
    dirs: Sequence[Path],
    validator: RuleValidator,
    previous: RuleSet | None,
    keeper: LastGoodFiles | None,
) -> RuleSet:
    last_good: dict[str, list[Rule]] = {}
    for rule in previous.candidates if previous is not None else ():
        last_good.setdefault(rule.source_file, []).append(rule)
    candidates: list[Rule] = []
    problems: list[RuleProblem] = []
    fallbacks: list[str] = []
    notices: list[RuleProblem] = []
    for directory in dirs:
        for path in rule_files(directory):
            parsed = read_any_rule_file(path)
            notices.extend(parsed.notices)
            kept = last_good.get(parsed.path)
            if kept is None:
                kept = _kept_on_disk(keeper, parsed.path, validator)
            since = keeper.saved_at(parsed.path) if keeper is not None else None
            if not parsed.readable:
                problems.extend(_noting_kept(parsed.problems, len(kept)))
                candidates.extend(kept)
                if kept:
                    fallbacks.append(_fallback(parsed.path, since, parsed.problems[0]))
                continue
            good, file_problems = validate_file(parsed, validator)
            good_ids = {rule.id for rule in good}
            kept_by_id = {rule.id: rule for rule in kept}
            for problem in file_problems:
                fallback = kept_by_id.get(problem.rule_id or "")
                if fallback is not None and problem.rule_id not in good_ids:
                    problem = replace(
                        problem, message=problem.message + " (its last good version stays active)"
                    )
                problems.append(problem)
            refused = {p.rule_id for p in file_problems if p.rule_id} - good_ids
            restored = [kept_by_id[rule_id] for rule_id in sorted(refused) if rule_id in kept_by_id]
            candidates.extend(good + restored)
            if restored:
                first = next(p for p in file_problems if p.rule_id == restored[0].id)
                fallbacks.append(_fallback(parsed.path, since, first, restored))
            if keeper is not None:
                keeper.put(parsed.path, good + restored)
    rules: dict[str, Rule] = {}
    for rule in candidates:
        replaced = rules.get(rule.id)
        overrides = f"{replaced.source_file}:{replaced.source_line}" if replaced else None
        rules[rule.id] = replace(rule, overrides=overrides)
    active = tuple(rules.values())
    return RuleSet(
        active,
        tuple(problems),
        ruleset_digest(active),
        tuple(candidates),
        tuple(fallbacks),
        tuple(notices),
    )


def _kept_on_disk(keeper: LastGoodFiles | None, path: str, validator: RuleValidator) -> list[Rule]:
    """The rules kept for `path` at an earlier run that still validate (the schema or the
    sandbox may have changed since)."""
    found = keeper.get(path) if keeper is not None else None
    if found is None:
        return []
    bare = ParsedFile(path, found.rules, (), readable=True)
    return [rule for rule in found.rules if not validator.problems(rule, bare)]


def _fallback(
    path: str, since: float | None, problem: RuleProblem, rules: Sequence[Rule] = ()
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "before"
    which = f"rules {', '.join(repr(r.id) for r in rules)}" if rules else "rules"
    return (
        f"{which} from {path} are the last good version from {when}; the file has a "
        f"problem: {problem}"
    )


def _noting_kept(problems: Iterable[RuleProblem], kept: int) -> list[RuleProblem]:
    if not kept:
        return list(problems)
    note = f" (the last good {kept} rule{'s' if kept != 1 else ''} of this file stay active)"
    return [replace(problem, message=problem.message + note) for problem in problems]
