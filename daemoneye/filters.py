"""The process filter language shared by `daemoneye processes FILTER` and the dashboard's `/` line.

    ssh                free text: in name, command line, exe or user (case-insensitive)
    user:root name:ssh exe:/tmp cmd:--listen cwd:/srv state:Z   substring of that field
    container:docker container:3f2a unit:nginx tty:pts/3         substring of what the process
                                                               runs in (runtime and id, unit, tty)
    pid:123 ppid:1 uid:0                                       exact number
    cpu:>5 cpu:<1 rss:>100M rss:<=1G threads:>10               comparisons (sizes: K M G)
    alerted                                                    has an open alert
    port:443 remote:10.0.0.8 remote:10.0.0.0/8 remote:public   holds such a connection
    not:term                                                   negation of any term

All terms must match. A mistake raises FilterError naming the term and what was expected.

On a shell command line the forms above need no quoting. `cpu>5` (without the colon) and
`-term` (negation) are accepted too, but the shell reads `>` as a redirection and argparse
reads `-term` as an option: quote the first (`'cpu>5'`) and put `--` before the second
(`daemoneye processes -- -name:kworker`).

Text terms match against a `RecordText`, the lowered text fields of a record. A caller that
filters the same processes again and again (the dashboard, at every keystroke) keeps one per
process and passes it in (`matches(..., text=)`), so a keystroke costs a substring search per
process instead of joining and lowering every command line again.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from daemoneye.connection_filter import (
    PROCESS_TERMS,
    ConnectionFilterError,
    ConnectionPredicate,
    connection_term,
)
from daemoneye.errors import DaemonEyeError
from daemoneye.models import Connection, ProcessKey, ProcessRecord

TEXT_FIELDS = ("user", "name", "exe", "cmd", "cwd", "state")
# Terms over the context columns: a substring of the joined (lowered) attributes.
CONTEXT_TERMS: dict[str, tuple[str, ...]] = {
    "container": ("container_runtime", "container_id"),
    "unit": ("unit",),
    "tty": ("tty",),
}
NUMBER_FIELDS = ("pid", "ppid", "uid")
COMPARABLE_FIELDS = ("cpu", "rss", "threads")
_SIZE = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_COMPARISON = re.compile(r"^([a-z_]+)(<=|>=|<|>)(.*)$")
_FIELD_COMPARISON = re.compile(rf"^({'|'.join(COMPARABLE_FIELDS)}):(<=|>=|<|>)(.*)$")
NEGATION = "not:"  # `not:name:kworker`; `-name:kworker` works too, after `--` on a shell


class FilterError(DaemonEyeError):
    """A filter expression could not be parsed; the message names the term."""

    exit_code = 2


class RecordText(NamedTuple):
    """The text fields of one record, lowered, as text terms see them."""

    user: str
    name: str
    exe: str
    cmd: str
    cwd: str
    state: str
    anywhere: str  # name, cmd, exe and user joined by NUL: where free text looks


def record_text(record: ProcessRecord) -> RecordText:
    user = (record.user or "").lower()
    name = record.name.lower()
    exe = (record.exe or "").lower()
    cmd = " ".join(record.cmdline).lower()
    return RecordText(
        user,
        name,
        exe,
        cmd,
        (record.cwd or "").lower(),
        record.state.lower(),
        "\0".join((name, cmd, exe, user)),
    )


def same_text(before: ProcessRecord, after: ProcessRecord) -> bool:
    """True when `record_text` of both is the same (cheap: the fields are usually the very
    same objects)."""
    return (
        before.cmdline == after.cmdline
        and before.name == after.name
        and before.exe == after.exe
        and before.user == after.user
        and before.cwd == after.cwd
        and before.state == after.state
    )


Predicate = Callable[[ProcessRecord, RecordText, Collection[ProcessKey]], bool]
_TEXT_INDEX = {field: RecordText._fields.index(field) for field in TEXT_FIELDS}
NO_TEXT = RecordText("", "", "", "", "", "", "")  # for filters without text terms


@dataclass(frozen=True, slots=True)
class ProcessFilter:
    """A parsed filter: all predicates must hold."""

    text: str
    predicates: tuple[Predicate, ...]
    uses_text: bool = False  # some term reads a text field
    uses_alerted: bool = False  # an `alerted` term: it needs the caller's open alerts
    # `port:`/`remote:` terms: (predicate over one connection, negated). A process matches
    # one when it holds a connection that matches (negated: none that matches).
    connection_terms: tuple[tuple[ConnectionPredicate, bool], ...] = ()

    @property
    def uses_connections(self) -> bool:
        return bool(self.connection_terms)

    def matches(
        self,
        record: ProcessRecord,
        alerted: Collection[ProcessKey] = frozenset(),
        text: RecordText | None = None,
        connections: Mapping[ProcessKey, tuple[Connection, ...]] | None = None,
    ) -> bool:
        """Whether `record` passes; `text` is its `record_text` when the caller keeps one;
        `connections` are the open connections by instance (without them a `port:` or
        `remote:` term matches no process)."""
        if text is None:
            text = record_text(record) if self.uses_text else NO_TEXT
        for predicate in self.predicates:
            if not predicate(record, text, alerted):
                return False
        return not self.connection_terms or self.holds(record.key, connections)

    def holds(
        self, key: ProcessKey, connections: Mapping[ProcessKey, tuple[Connection, ...]] | None
    ) -> bool:
        """Whether the instance's connections pass the `port:`/`remote:` terms."""
        held = connections.get(key, ()) if connections is not None else ()
        for holds, negated in self.connection_terms:
            if any(holds(conn) for conn in held) == negated:
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.predicates and not self.connection_terms


def _parse_number(term: str, raw: str, field: str) -> float:
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kmgtKMGT]?)(?:i?[bB])?", raw.strip())
    if not match:
        hint = " (sizes like 100M or 1G)" if field == "rss" else ""
        raise FilterError(f"{term!r}: expected a number after the comparison{hint}")
    if match.group(2) and field != "rss":
        raise FilterError(f"{term!r}: size suffixes only apply to rss")
    return float(match.group(1)) * _SIZE[match.group(2).lower()]


def _suggest(name: str) -> str:
    known = [
        *TEXT_FIELDS,
        *CONTEXT_TERMS,
        *NUMBER_FIELDS,
        *COMPARABLE_FIELDS,
        *PROCESS_TERMS,
        "alerted",
    ]
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _comparison(term: str, field: str, op: str, raw: str) -> Predicate:
    if field not in COMPARABLE_FIELDS:
        raise FilterError(
            f"{term!r}: cannot compare {field!r}; comparable fields are "
            f"{', '.join(COMPARABLE_FIELDS)}{_suggest(field)}"
        )
    limit = _parse_number(term, raw, field)
    attribute = {"cpu": "cpu_percent", "rss": "rss", "threads": "threads"}[field]
    compare: Callable[[float, float], bool] = {
        ">": float.__gt__,
        "<": float.__lt__,
        ">=": float.__ge__,
        "<=": float.__le__,
    }[op]
    return lambda record, _text, _alerted: compare(float(getattr(record, attribute)), limit)


def _term(term: str) -> tuple[Predicate, bool]:
    """The predicate of one term, and whether it reads a text field."""
    if term == "alerted":
        return (lambda record, _text, alerted: record.key in alerted), False
    comparison = _COMPARISON.match(term) or _FIELD_COMPARISON.match(term)
    if comparison:
        return _comparison(term, *comparison.groups()), False
    field, colon, value = term.partition(":")
    if colon and re.fullmatch(r"[a-z_]+", field):
        if field in TEXT_FIELDS:
            needle = value.lower()
            if not needle:
                raise FilterError(f"{term!r}: expected a value after {field}:")
            return (lambda _record, text, _alerted: needle in text[_TEXT_INDEX[field]]), True
        if field in CONTEXT_TERMS:
            if not value:
                raise FilterError(f"{term!r}: expected a value after {field}:")
            return _context_term(value.lower(), CONTEXT_TERMS[field]), False
        if field == NEGATION[:-1] and not value:
            raise FilterError(f"{term!r}: expected a term after {NEGATION}")
        if field in COMPARABLE_FIELDS:
            raise FilterError(f"{term!r}: {field} takes a comparison, e.g. {field}:>{value or '1'}")
        if field in NUMBER_FIELDS:
            if not value.isdigit():
                raise FilterError(f"{term!r}: {field} must be a whole number")
            number = int(value)
            return (lambda record, _text, _alerted: getattr(record, field) == number), False
        raise FilterError(f"{term!r}: unknown field {field!r}{_suggest(field)}")
    needle = term.lower()
    if "\0" in needle:  # could span two fields of `anywhere`: look in each
        return (
            lambda _record, text, _alerted: any(
                needle in field for field in (text.name, text.cmd, text.exe, text.user)
            )
        ), True
    return (lambda _record, text, _alerted: needle in text.anywhere), True


def _context_term(needle: str, attributes: tuple[str, ...]) -> Predicate:
    """`needle` in the record's context attributes, joined by a space and lowered (a process
    with none of them set never matches)."""

    def predicate(
        record: ProcessRecord, _text: RecordText, _alerted: Collection[ProcessKey]
    ) -> bool:
        values = [getattr(record, attribute) for attribute in attributes]
        joined = " ".join(value for value in values if value)
        return bool(joined) and needle in joined.lower()

    return predicate


def _substring_kind(term: str) -> str | None:
    """ "" for a free-text term, the field for a `field:value` text term, None for any other
    term (numbers, comparisons, `alerted`, negations): the terms that a longer value can
    only match less often."""
    if _negation(term) or term == "alerted" or _COMPARISON.match(term):
        return None
    field, colon, value = term.partition(":")
    if not colon or not re.fullmatch(r"[a-z_]+", field):
        return ""
    return field if (field in TEXT_FIELDS or field in CONTEXT_TERMS) and value else None


def narrows(before: str, after: str) -> bool:
    """True when filter `after` can only match processes that `before` matches: it adds
    terms (all must match), or lengthens the last text term (`ng` → `nginx`, `user:ro` →
    `user:root`). A caller may then look only among what `before` matched. False when that
    is not sure (`pid:1` → `pid:12`, `cpu<5` → `cpu<50`, `-ng` → `-ngi`, or a bad filter)."""
    try:
        old, new = shlex.split(before), shlex.split(after)
    except ValueError:
        return False
    if not old:
        return True
    if len(new) < len(old) or new[: len(old) - 1] != old[:-1]:
        return False
    last, grown = old[-1], new[len(old) - 1]
    if grown == last:
        return True
    kind = _substring_kind(last)
    return kind is not None and grown.startswith(last) and _substring_kind(grown) == kind


def _negation(term: str) -> str | None:
    """The term a negation negates (`not:TERM` or `-TERM`), or None when `term` is not one."""
    if term.startswith(NEGATION) and len(term) > len(NEGATION):
        return term[len(NEGATION) :]
    if term.startswith("-") and len(term) > 1:
        return term[1:]
    return None


def _negate(predicate: Predicate) -> Predicate:
    return lambda record, text, alerted: not predicate(record, text, alerted)


def parse_filter(text: str) -> ProcessFilter:
    """Parse a filter line; raises FilterError on the first bad term."""
    try:
        terms = shlex.split(text)
    except ValueError as exc:
        raise FilterError(f"{text!r}: {exc}") from None
    predicates: list[Predicate] = []
    uses_text = uses_alerted = False
    connection_terms: list[tuple[ConnectionPredicate, bool]] = []
    for term in terms:
        negated = _negation(term)
        inner = term if negated is None else negated
        if inner.partition(":")[0] in PROCESS_TERMS and ":" in inner:
            try:
                connection_terms.append(
                    (connection_term(inner, PROCESS_TERMS), negated is not None)
                )
            except ConnectionFilterError as exc:
                raise FilterError(str(exc)) from None
            continue
        predicate, reads_text = _term(inner)
        predicates.append(predicate if negated is None else _negate(predicate))
        uses_text = uses_text or reads_text
        uses_alerted = uses_alerted or inner == "alerted"
    return ProcessFilter(
        text=text,
        predicates=tuple(predicates),
        uses_text=uses_text,
        uses_alerted=uses_alerted,
        connection_terms=tuple(connection_terms),
    )
