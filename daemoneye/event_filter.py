"""The timeline's filter: the process filter language (daemoneye/filters.py) over the fields an
event carries, plus `event:KIND` (`event:exec`, `event:exec|exit`, `not:event:fork`).

    ssh  name:ssh  user:root  cmd:--listen  pid:123  ppid:1  event:exec|alert  not:TERM

`cmd:` and free text look in the event's detail (the command line of an exec or start, the
exit status, what a change after start changed as `old → new`, the alert's title). Terms about
fields an event does not carry (cpu, rss, exe, cwd, …) are refused rather than silently matching
nothing.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from daemoneye.filters import NEGATION, FilterError, ProcessFilter, parse_filter
from daemoneye.models import TIMELINE_KINDS, ProcessRecord, TimelineEvent

EVENT_KINDS = TIMELINE_KINDS
EVENT_TEXT_FIELDS = ("user", "name", "cmd")
EVENT_NUMBER_FIELDS = ("pid", "ppid")
_EVENT = "event:"
_COMPARISON = re.compile(r"^[a-z_]+(<=|>=|<|>)")


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A parsed timeline filter: the event kinds it admits and the process terms."""

    text: str
    kinds: tuple[str, ...]  # in EVENT_KINDS order; never empty
    process: ProcessFilter

    def matches(self, event: TimelineEvent) -> bool:
        """Whether `event` passes (its kind is checked by the caller's query)."""
        return event.kind in self.kinds and (
            self.process.empty or self.process.matches(_as_record(event))
        )


def _as_record(event: TimelineEvent) -> ProcessRecord:
    """The event as the process filter sees a record: what the event carries, blanks else."""
    return ProcessRecord(
        pid=event.pid,
        ppid=event.ppid or 0,
        start_time=event.start_time,
        name=event.name or "",
        exe=None,
        cmdline=(event.detail,),
        cwd=None,
        uid=None,
        user=event.user,
        gid=None,
        state="",
        threads=0,
        rss=0,
        cpu_percent=0.0,
        exe_sha256=None,
        exe_deleted=False,
        first_seen=event.ts,
        last_seen=event.ts,
    )


def _kinds(term: str, value: str) -> set[str]:
    chosen = {kind for part in value.replace(",", "|").split("|") if (kind := part.strip())}
    unknown = sorted(chosen - set(EVENT_KINDS))
    if not chosen or unknown:
        what = f"unknown event kind {unknown[0]!r}" if unknown else "expected a kind"
        raise FilterError(f"{term!r}: {what}; event kinds are {'|'.join(EVENT_KINDS)}")
    return chosen


def _check_field(term: str) -> None:
    if _COMPARISON.match(term) and ":" not in term:
        raise FilterError(f"{term!r}: events carry no cpu, rss or threads to compare")
    field, colon, _value = term.partition(":")
    if not colon or not re.fullmatch(r"[a-z_]+", field):
        return
    allowed = (*EVENT_TEXT_FIELDS, *EVENT_NUMBER_FIELDS)
    if field not in allowed:
        raise FilterError(
            f"{term!r}: events carry no {field!r}; the timeline filters by free text, "
            f"{', '.join(f + ':' for f in allowed)} and event:{'|'.join(EVENT_KINDS)}"
        )


def parse_event_filter(text: str) -> EventFilter:
    """Parse a timeline filter line; raises FilterError on the first bad term."""
    try:
        terms = shlex.split(text)
    except ValueError as exc:
        raise FilterError(f"{text!r}: {exc}") from None
    kinds = set(EVENT_KINDS)
    rest: list[str] = []
    for term in terms:
        negated = term[len(NEGATION) :] if term.startswith(NEGATION) else None
        if negated is None and term.startswith("-") and len(term) > 1:
            negated = term[1:]
        inner = term if negated is None else negated
        if inner.startswith(_EVENT):
            chosen = _kinds(term, inner[len(_EVENT) :])
            kinds = kinds - chosen if negated is not None else kinds & chosen
            continue
        _check_field(inner)
        rest.append(term)
    if not kinds:
        raise FilterError(f"{text!r}: no event kind is left to show")
    return EventFilter(
        text=text,
        kinds=tuple(kind for kind in EVENT_KINDS if kind in kinds),
        process=parse_filter(shlex.join(rest)),
    )
