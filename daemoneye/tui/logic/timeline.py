"""The timeline screen and the past view as data: event rows, the activity strip, moments as
the screen writes them, steps and jumps, and what the history cannot answer.

Times are written in the local zone (TZ honoured) with the zone's abbreviation where a moment
stands alone (the banner, a jump's answer), so the hour a DST change repeats reads as two
different moments and a wall clock moved back never turns "ago" negative.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from daemoneye.models import (
    TIMELINE_KINDS,
    HistoryActivity,
    HistoryReach,
    ProcessRecord,
    TimelineEvent,
)
from daemoneye.tui.logic.cells import Cell, RowView
from daemoneye.tui.logic.format import safe_cell
from daemoneye.tui.logic.spark import BARS

MINUTE = 60.0
HOUR = 3600.0
PAGE = 200  # events per request
MAX_EVENTS = 2_000  # events the screen holds at most while paging down; a jump starts over
# (column key, label, most cells; 0: takes the rest), in the order shown
TIMELINE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("time", "TIME", 15),
    ("event", "EVENT", max(map(len, TIMELINE_KINDS))),  # exe_replaced whole, when shown
    ("pid", "PID", 7),
    ("name", "NAME", 16),
    ("user", "USER", 10),
    ("ppid", "PARENT", 7),
    ("detail", "DETAIL", 0),
)
_TONES = {"exec": "new", "start": "new", "fork": "dim", "exit": "ended", "alert": "alert"}
_EXIT_CODE = re.compile(r"exit code (-?[0-9]+)")
_SEVERITY = re.compile(r"(critical|high|medium|low|info) ")


# -- moments --------------------------------------------------------------------------------
def clock_text(ts: float, now: float, *, zone: bool = False) -> str:
    """ "03:12:07" on the day of `now`, "Nov 13 03:12:07" on another day; with `zone`, the
    local zone's abbreviation at that moment follows ("03:12:07 CEST")."""
    local = time.localtime(ts)
    today = time.localtime(now)
    same_day = (local.tm_year, local.tm_yday) == (today.tm_year, today.tm_yday)
    text = time.strftime("%H:%M:%S" if same_day else "%b %d %H:%M:%S", local)
    if zone and local.tm_zone:
        text += f" {local.tm_zone}"
    return text


def span_text(seconds: float) -> str:
    """ "40 s", "12 min", "14 h", "3 d" (rounded down)."""
    seconds = abs(seconds)
    if seconds < MINUTE:
        return f"{int(seconds)} s"
    if seconds < HOUR:
        return f"{int(seconds // MINUTE)} min"
    if seconds < 2 * 86400:
        return f"{int(seconds // HOUR)} h"
    return f"{int(seconds // 86400)} d"


def ago_text(ts: float, now: float) -> str:
    """How far `ts` lies behind the clock: "14 h ago"; after the clock (the wall clock was
    moved back since) it says so instead of counting backwards."""
    if ts > now + 1:
        return f"{span_text(ts - now)} after this clock's now (was the clock set back?)"
    if now - ts < 1:
        return "now"
    return f"{span_text(now - ts)} ago"


def past_banner(at: float, now: float) -> str:
    """The past view's banner: unmistakably not live."""
    return f" AS OF {clock_text(at, now, zone=True)}, {ago_text(at, now)} · the past, not live "


def reach_text(reach: HistoryReach | None, now: float) -> str:
    """ "history from Nov 30 22:13:20 (7 d)", or that there is none yet."""
    if reach is None or reach.oldest is None:
        return "no history yet"
    return f"history from {clock_text(reach.oldest, now)} ({span_text(now - reach.oldest)})"


def reach_problem(moment: float, now: float, reach: HistoryReach | None) -> str | None:
    """Why history cannot show `moment` (the future, before the oldest retained history),
    saying what the window is; None when it can."""
    window = reach_text(reach, now)
    if moment > now + 1:
        return f"{clock_text(moment, now, zone=True)} is in the future; {window} to now"
    if reach is not None and reach.oldest is not None and moment < reach.oldest:
        return (
            f"{clock_text(moment, now, zone=True)} is before the history: {window} "
            "(store.retention and store.max_bytes decide how far back it reaches)"
        )
    if reach is not None and reach.oldest is None:
        return f"{clock_text(moment, now, zone=True)}: {window}"
    return None


def stepped(moment: float | None, seconds: float, now: float, reach: HistoryReach | None) -> float:
    """`moment` (None: now) moved by `seconds`, kept inside the history: never after now,
    never before its oldest moment."""
    start = now if moment is None else min(moment, now)
    target = min(now, start + seconds)
    if reach is not None and reach.oldest is not None:
        target = max(target, min(reach.oldest, now))
    return target


# -- events ---------------------------------------------------------------------------------
def event_key(event: TimelineEvent) -> str:
    """A stable row key: the event's source and row id."""
    return f"{event.seq[0]}:{event.seq[1]}"


def exit_text(code: int | None) -> str:
    """ "exit code 2", "killed by SIGKILL" (a negative code is the signal), "exited"."""
    if code is None:
        return "exited (status unknown)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def event_detail(event: TimelineEvent) -> str:
    """What happened, in words: an exit's status decoded, else the store's detail."""
    if event.kind == "exit":
        match = _EXIT_CODE.fullmatch(event.detail)
        if match:
            return exit_text(int(match.group(1)))
    return event.detail


def event_row(event: TimelineEvent, now: float) -> RowView:
    tone = _TONES.get(event.kind, "")
    if event.kind == "alert":
        severity = _SEVERITY.match(event.detail)
        tone = severity.group(1) if severity else "alert"
    return RowView(
        event_key(event),
        (
            Cell(clock_text(event.ts, now), "dim"),
            Cell(event.kind, tone),
            Cell(str(event.pid), right=True),
            Cell(safe_cell(event.name, 16) if event.name is not None else "?"),
            Cell(safe_cell(event.user, 10) if event.user is not None else "?"),
            Cell("" if event.ppid is None else str(event.ppid), right=True),
            Cell(safe_cell(event_detail(event), 240)),
        ),
    )


def ending_facts(record: ProcessRecord, now: float) -> list[tuple[str, str, str]]:
    """The detail pane's lines about an instance's end: when and how (exit code or signal);
    nothing while it runs."""
    if record.ended_at is None:
        return []
    when = f"{clock_text(record.ended_at, now, zone=True)} ({ago_text(record.ended_at, now)})"
    return [("ended", when, ""), ("how", exit_text(record.exit_code), "")]


@dataclass
class TimelinePages:
    """The events the screen holds: pages newest first from `until` (None: now), where the
    next page starts, and how far back history reaches."""

    until: float | None = None
    events: list[TimelineEvent] | None = None  # None: not loaded yet
    next: tuple[float, int, int] | None = None
    reach: HistoryReach | None = None
    error: str = ""

    def start(self, until: float | None) -> None:
        self.until = until
        self.events = None
        self.next = None
        self.error = ""

    def add(
        self,
        events: Sequence[TimelineEvent],
        next_cursor: tuple[float, int, int] | None,
        reach: HistoryReach,
    ) -> None:
        held = [*(self.events or ()), *events][:MAX_EVENTS]
        self.events = held
        self.next = next_cursor if len(held) < MAX_EVENTS else None
        self.reach = reach

    def event(self, key: str | None) -> TimelineEvent | None:
        for event in self.events or ():
            if event_key(event) == key:
                return event
        return None

    def rows(self, now: float) -> list[RowView]:
        return [event_row(event, now) for event in self.events or ()]

    def wants_more(self, cursor_row: int) -> bool:
        """Near the end of what is held, with more history behind it."""
        held = len(self.events or ())
        return self.next is not None and cursor_row >= held - PAGE // 4


# -- the activity strip ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StripCell:
    char: str
    tone: str  # "", "alert", "cursor"


def strip_window(reach: HistoryReach | None, now: float) -> tuple[float, float]:
    """[since, until) the strip spans: the retained history up to now (an hour at least)."""
    oldest = reach.oldest if reach is not None and reach.oldest is not None else now - HOUR
    return min(oldest, now - HOUR), now


def strip_cells(activity: HistoryActivity | None, width: int, cursor: float) -> list[StripCell]:
    """One cell per bucket: a bar as tall as the bucket's new processes (scaled to the
    busiest), marked where alerts were raised, and the cursor's bucket marked."""
    if activity is None or width <= 0 or not activity.started:
        return []
    counts = activity.started[:width]
    top = max(counts) or 1
    at = int((cursor - activity.since) // activity.bucket_s) if activity.bucket_s > 0 else -1
    at = min(len(counts) - 1, max(0, at))
    cells: list[StripCell] = []
    for index, count in enumerate(counts):
        char = " " if count == 0 else BARS[min(len(BARS) - 1, count * len(BARS) // (top + 1))]
        tone = "alert" if index < len(activity.alerts) and activity.alerts[index] else ""
        if index == at:
            char, tone = ("▼" if char == " " else char), "cursor"
        cells.append(StripCell(char, tone))
    return cells


def axis_line(since: float, cursor: float, now: float, width: int, cursor_col: int) -> str:
    """The line under the strip: the oldest moment at the left, "now" at the right, and the
    cursor's moment under its cell (moved inward where it would not fit)."""
    left, right = f" {clock_text(since, now)}", "now "
    mark = f"▲ {clock_text(cursor, now, zone=True)}"
    if width < len(left) + len(mark) + len(right) + 2:
        return mark[:width]
    start = min(max(cursor_col, len(left) + 1), width - len(right) - len(mark) - 1)
    line = left.ljust(start) + mark
    return line.ljust(width - len(right)) + right


def cursor_column(activity: HistoryActivity | None, cursor: float, width: int) -> int:
    """The strip cell the cursor's moment falls in."""
    if activity is None or activity.bucket_s <= 0 or width <= 0:
        return max(0, width - 1)
    return min(width - 1, max(0, int((cursor - activity.since) // activity.bucket_s)))
