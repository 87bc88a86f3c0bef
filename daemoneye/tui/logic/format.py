"""How the dashboard writes numbers, times and hostile text.

`format_bytes` and `format_time` are the CLI's (daemoneye.units), so both write alike.
Everything that came from a process goes through `safe` or `cmd_cell`: control characters made
visible, length capped before any work is done on it, so a 128 KiB command line costs nothing.
"""

from __future__ import annotations

import time

from daemoneye.models import Alert, ProcessRecord
from daemoneye.text import shorten, visible
from daemoneye.tui.logic.glyphs import TIMES
from daemoneye.units import format_bytes as format_bytes
from daemoneye.units import format_span
from daemoneye.units import format_time as format_time

CMD_CELL_CHARS = 240  # a table cell never holds more of a command line than this
DETAIL_TEXT_CHARS = 16 * 1024  # the detail pane's cap for one command line, path or title
DASH = "—"


def format_started(ts: float, now: float) -> str:
    """At most 8 characters, like ps: "14:03:07" today, "Nov 24" this year, "2023" before."""
    local, today = time.localtime(ts), time.localtime(now)
    if now - ts < 86400 and today.tm_yday == local.tm_yday:
        return time.strftime("%H:%M:%S", local)
    if local.tm_year == today.tm_year:
        return time.strftime("%b %d", local)
    return time.strftime("%Y", local)


def format_duration(seconds: float | None) -> str:
    """A short human duration: "42s", "5m 03s", "3h 07m", "12d 4h"."""
    return DASH if seconds is None else format_span(seconds)


def format_percent(value: float) -> str:
    return f"{value:.1f}"


def safe(text: str | None, limit: int = DETAIL_TEXT_CHARS) -> str:
    """Hostile text made printable: cut to `limit` characters first, then escaped."""
    if text is None:
        return ""
    if len(text) <= limit:
        return visible(text)
    return visible(text[:limit]) + f"… (+{len(text) - limit} chars)"


def safe_cell(text: str | None, width: int) -> str:
    """Hostile text for one table cell of `width` characters."""
    if text is None:
        return ""
    return shorten(visible(text[: width + 1]), width)


def cmdline_of(record: ProcessRecord) -> str:
    """The full command line as one string (the kernel's name in brackets when empty)."""
    return " ".join(record.cmdline) if record.cmdline else f"[{record.name}]"


def cmd_cell(record: ProcessRecord, width: int = CMD_CELL_CHARS) -> str:
    """The command line for a table cell: only the first `width` characters are ever joined."""
    if not record.cmdline:
        return safe_cell(f"[{record.name}]", width)
    parts: list[str] = []
    used = 0
    for argument in record.cmdline:
        parts.append(argument[: width - used + 1])
        used += len(parts[-1]) + 1
        if used > width:
            break
    return safe_cell(" ".join(parts), width)


def repeats(alert: Alert, now: float) -> str:
    """ "<TIMES>3 since 12:01:02" for an alert seen more than once, else the first-seen
    time."""
    since = format_time(alert.first_seen, now)
    return f"{TIMES}{alert.count} since {since}" if alert.count > 1 else since
