"""The process filter language shared by `daemoneye processes FILTER` and the dashboard's `/` line.

    ssh                free text: in name, command line, exe or user (case-insensitive)
    user:root name:ssh exe:/tmp cmd:--listen cwd:/srv state:Z   substring of that field
    pid:123 ppid:1 uid:0                                       exact number
    cpu>5 cpu<1 rss>100M rss<1G threads>10                     comparisons (sizes: K M G)
    alerted                                                    has an open alert
    -term                                                      negation of any term

All terms must match. A mistake raises FilterError naming the term and what was expected.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Collection
from dataclasses import dataclass

from daemoneye.errors import DaemonEyeError
from daemoneye.models import ProcessKey, ProcessRecord

TEXT_FIELDS = ("user", "name", "exe", "cmd", "cwd", "state")
NUMBER_FIELDS = ("pid", "ppid", "uid")
COMPARABLE_FIELDS = ("cpu", "rss", "threads")
_SIZE = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_COMPARISON = re.compile(r"^([a-z_]+)(<=|>=|<|>)(.*)$")


class FilterError(DaemonEyeError):
    """A filter expression could not be parsed; the message names the term."""

    exit_code = 2


Predicate = Callable[[ProcessRecord, Collection[ProcessKey]], bool]


@dataclass(frozen=True, slots=True)
class ProcessFilter:
    """A parsed filter: all predicates must hold."""

    text: str
    predicates: tuple[Predicate, ...]

    def matches(self, record: ProcessRecord,
                alerted: Collection[ProcessKey] = frozenset()) -> bool:
        return all(predicate(record, alerted) for predicate in self.predicates)

    @property
    def empty(self) -> bool:
        return not self.predicates


def _text_of(record: ProcessRecord, field: str) -> str:
    if field == "cmd":
        return " ".join(record.cmdline)
    value = getattr(record, field)
    return "" if value is None else str(value)


def _parse_number(term: str, raw: str, field: str) -> float:
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kmgtKMGT]?)(?:i?[bB])?", raw.strip())
    if not match:
        hint = " (sizes like 100M or 1G)" if field == "rss" else ""
        raise FilterError(f"{term!r}: expected a number after the comparison{hint}")
    if match.group(2) and field != "rss":
        raise FilterError(f"{term!r}: size suffixes only apply to rss")
    return float(match.group(1)) * _SIZE[match.group(2).lower()]


def _suggest(name: str) -> str:
    known = [*TEXT_FIELDS, *NUMBER_FIELDS, *COMPARABLE_FIELDS, "alerted"]
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _comparison(term: str, field: str, op: str, raw: str) -> Predicate:
    if field not in COMPARABLE_FIELDS:
        raise FilterError(f"{term!r}: cannot compare {field!r}; comparable fields are "
                          f"{', '.join(COMPARABLE_FIELDS)}{_suggest(field)}")
    limit = _parse_number(term, raw, field)
    attribute = {"cpu": "cpu_percent", "rss": "rss", "threads": "threads"}[field]
    compare: Callable[[float, float], bool] = {
        ">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__}[op]
    return lambda record, _alerted: compare(float(getattr(record, attribute)), limit)


def _term(term: str) -> Predicate:
    if term == "alerted":
        return lambda record, alerted: record.key in alerted
    comparison = _COMPARISON.match(term)
    if comparison:
        return _comparison(term, *comparison.groups())
    field, colon, value = term.partition(":")
    if colon and re.fullmatch(r"[a-z_]+", field):
        if field in TEXT_FIELDS:
            needle = value.lower()
            if not needle:
                raise FilterError(f"{term!r}: expected a value after {field}:")
            return lambda record, _alerted: needle in _text_of(record, field).lower()
        if field in NUMBER_FIELDS:
            if not value.isdigit():
                raise FilterError(f"{term!r}: {field} must be a whole number")
            number = int(value)
            return lambda record, _alerted: getattr(record, field) == number
        raise FilterError(f"{term!r}: unknown field {field!r}{_suggest(field)}")
    needle = term.lower()
    return lambda record, _alerted: any(
        needle in _text_of(record, f).lower() for f in ("name", "cmd", "exe", "user"))


def _negate(predicate: Predicate) -> Predicate:
    return lambda record, alerted: not predicate(record, alerted)


def parse_filter(text: str) -> ProcessFilter:
    """Parse a filter line; raises FilterError on the first bad term."""
    try:
        terms = shlex.split(text)
    except ValueError as exc:
        raise FilterError(f"{text!r}: {exc}") from None
    predicates: list[Predicate] = []
    for term in terms:
        if term.startswith("-") and len(term) > 1:
            predicates.append(_negate(_term(term[1:])))
        else:
            predicates.append(_term(term))
    return ProcessFilter(text=text, predicates=tuple(predicates))
