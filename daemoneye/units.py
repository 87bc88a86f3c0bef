"""How sizes and times are written for people, the same in the CLI and the dashboard.
Plain functions with no dependencies, so every layer can use them."""

from __future__ import annotations

import re
import time


def format_bytes(count: int | None) -> str:
    """1536 → "1.5K" (binary units); None → ""."""
    if count is None:
        return ""
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_time(ts: float | None, now: float | None = None) -> str:
    """Clock time for today, date and time for anything older; None → ""."""
    if ts is None:
        return ""
    now = time.time() if now is None else now
    local = time.localtime(ts)
    if now - ts < 86400 and time.localtime(now).tm_yday == local.tm_yday:
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M", local)


def format_span(seconds: float, *, with_seconds: bool = True) -> str:
    """A span of time, short: `3d 4h`, `4h 07m`, `5m 03s`, `42s`; without seconds `12m`."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if not with_seconds:
        return f"{minutes}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_uptime(seconds: float) -> str:
    """Time since boot as top and htop write it, short: `3d 4h`, `4h 07m`, `12m`."""
    return format_span(seconds, with_seconds=False)


def format_elapsed(seconds: float) -> str:
    """How long something took or has taken so far, tenths under ten seconds: `0.4s`, `41s`,
    `5m 03s`, `1h 07m`."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f}s"
    return format_span(round(seconds))


# The units a config file writes, largest first (parsed by daemoneye/config/loading.py).
_DURATION_WRITTEN = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))
_SIZE_WRITTEN = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def write_duration(seconds: float) -> str:
    """A duration as a config file writes it: 1.0 → "1s", 0.5 → "500ms", 604800 → "7d";
    the largest unit it is a whole number of, else seconds ("1.25s")."""
    if seconds == 0:
        return "0s"
    for unit, size in _DURATION_WRITTEN:
        count = seconds / size
        if abs(count) >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def write_size(count: int) -> str:
    """A byte count as a config file writes it: 67108864 → "64MiB"; the largest binary unit
    it is a whole number of, else plain bytes ("1000")."""
    for unit, size in _SIZE_WRITTEN:
        if count and count % size == 0:
            return f"{count // size}{unit}"
    return str(count)


# The one duration syntax of config values, rule windows and `--since` (number, then unit;
# parts may follow one another: "1h30m"). A bare number is seconds.
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)")
_DURATION_TEXT = re.compile(r"\s*(?:[0-9]+(?:\.[0-9]+)?\s*(?:ms|s|m|h|d|w)\s*)+")
_SECONDS_TEXT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*")
DURATION_EXAMPLES = "'500ms', '90s', '5m', '1h30m', '7d', '1w'"


def parse_duration(text: str) -> float | None:
    """Seconds from duration text — "500ms", "90s", "5m", "1h30m", "7d", "1w", or a bare
    number of seconds ("30"), case-insensitive — or None when `text` is not one. Callers
    check the range (and that the value is finite) and word their own error."""
    lowered = text.lower()
    bare = _SECONDS_TEXT.fullmatch(lowered)
    if bare:
        return float(bare.group(1))
    if not _DURATION_TEXT.fullmatch(lowered):
        return None
    return sum(
        float(number) * DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(lowered)
    )
