"""The one way a person writes a moment — `--since`, `--until`, `--at`, the dashboard's jump:
absolute clock times and dates, relative offsets back from now, in the local zone unless a
zone is given. A plain function with no daemoneye dependencies beyond units.py.

Accepted forms (case-insensitive):
- relative: `now`, `10m ago`, `-2h`, `1h30m` (a bare duration means that long ago, as
  `--since 15m` reads; the duration syntax is units.parse_duration's)
- clock time today: `03:12`, `03:12:07`; `today 03:12`, `yesterday 23:40`; `today`,
  `yesterday` alone mean their midnight
- date and time: `2026-12-07`, `2026-12-07 03:12`, `2026-12-07T03:12:07.5`
- any absolute form may end in a zone: `Z`, `UTC`, `+01:00`, `-0530`, or an IANA name
  (`Europe/Berlin`); without one the local zone applies.

In the local zone a clock time that happens twice (the hour a DST change repeats) means the
first of the two; one that does not happen (the hour skipped) is read with the offset in force
before the change, which lands just after the gap.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemoneye.units import parse_duration

TIME_EXAMPLES = (
    "now, 10m ago, -2h, 1h30m, 03:12, yesterday 23:40, 2026-12-07 03:12, "
    "2026-12-07T03:12:07+01:00, 2026-12-07 03:12 UTC"
)

_MAX_TEXT = 100  # a moment is short; longer text is refused before any parsing

_RELATIVE = re.compile(r"(?:-\s*(?P<minus>.+)|(?P<ago>.+?)\s+ago)")
_DAY_WORD = re.compile(r"(?P<day>today|yesterday)(?:\s+(?P<rest>.*))?")
_CLOCK = re.compile(r"(?P<h>[0-9]{1,2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2}(?:\.[0-9]{1,6})?))?")
_DATE = re.compile(r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})")
_ABSOLUTE = re.compile(
    rf"(?:(?P<date>{_DATE.pattern})(?:[ t]+(?P<clock1>{_CLOCK.pattern.replace('?P<', '?P<a_')}))?"
    rf"|(?P<clock2>[0-9]{{1,2}}:[0-9]{{2}}(?::[0-9]{{2}}(?:\.[0-9]{{1,6}})?)?))"
    r"\s*(?P<zone>z|utc|gmt|[+-][0-9]{2}(?::?[0-9]{2})?|[a-z][a-z0-9_+-]*(?:/[a-z0-9_+-]+)*)?",
    re.IGNORECASE,
)


class TimeParseError(ValueError):
    """Text that is not a moment; the message names the text and shows the accepted forms."""


def parse_time(text: str, now: float, local: tzinfo | None = None) -> float:
    """Epoch seconds for `text` (see the module docstring), relative to `now`; `local` is the
    zone for times written without one (None: the system's local zone, TZ honoured)."""
    cleaned = " ".join(text.split()).lower()
    if len(cleaned) > _MAX_TEXT or not cleaned:
        raise _error(text)
    if cleaned == "now":
        return now
    relative = _relative(cleaned)
    if relative is not None:
        return now - relative
    day_word = _DAY_WORD.fullmatch(cleaned)
    if day_word:
        return _day_relative(day_word.group("day"), day_word.group("rest"), now, local, text)
    moment = _absolute(cleaned, _local_date(now, local), local)
    if moment is None:
        raise _error(text)
    return moment


def _error(text: str) -> TimeParseError:
    shown = text if len(text) <= 40 else text[:40] + "…"
    return TimeParseError(f"cannot read {shown!r} as a time; accepted forms: {TIME_EXAMPLES}")


def _relative(cleaned: str) -> float | None:
    """Seconds back from now for `10m ago`, `-2h`, a bare `15m`; None for other text."""
    match = _RELATIVE.fullmatch(cleaned)
    duration_text = (match.group("minus") or match.group("ago")) if match else cleaned
    if _CLOCK.fullmatch(duration_text.strip()):
        return None  # `-03:12` is no duration
    seconds = parse_duration(duration_text)
    if seconds is None or not math.isfinite(seconds):
        return None
    return seconds


def _local_date(now: float, local: tzinfo | None) -> date:
    return datetime.fromtimestamp(now, local).date()  # None: naive, the system's zone


def _day_relative(day: str, rest: str | None, now: float, local: tzinfo | None, text: str) -> float:
    on = _local_date(now, local) - timedelta(days=1 if day == "yesterday" else 0)
    moment = _absolute(rest or "00:00", on, local, clock_only=True)
    if moment is None:
        raise _error(text)
    return moment


def _absolute(
    cleaned: str, today: date, local: tzinfo | None, *, clock_only: bool = False
) -> float | None:
    match = _ABSOLUTE.fullmatch(cleaned)
    if match is None or (clock_only and match.group("date")):
        return None
    try:
        zone = _zone(match.group("zone"))
        if match.group("date"):
            on = date(int(match.group("y")), int(match.group("mo")), int(match.group("d")))
            clock = _clock(match.group("clock1") or "00:00")
        else:
            on, clock = today, _clock(match.group("clock2"))
    except (ValueError, ZoneInfoNotFoundError):
        return None
    moment = datetime.combine(on, clock)
    chosen = zone if zone is not None else local
    try:
        # naive: the system's local zone (mktime), which refuses some years
        return moment.replace(tzinfo=chosen).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _clock(text: str) -> time:
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise ValueError(text)
    seconds = float(match.group("s") or 0)
    whole = int(seconds)
    return time(
        int(match.group("h")),
        int(match.group("m")),
        whole,
        round((seconds - whole) * 1_000_000),
    )


def _zone(text: str | None) -> tzinfo | None:
    if text is None:
        return None
    if text in ("z", "utc", "gmt"):
        return UTC
    if text[0] in "+-":
        digits = text[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(text)
        offset = timedelta(hours=hours, minutes=minutes)
        return timezone(-offset if text[0] == "-" else offset)
    # IANA names are case-sensitive on disk; the text was lowered, so find the real spelling.
    return ZoneInfo(_zone_name(text))


def _zone_name(lowered: str) -> str:
    from zoneinfo import available_timezones

    for name in available_timezones():
        if name.lower() == lowered:
            return name
    raise ZoneInfoNotFoundError(lowered)
