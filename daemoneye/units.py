"""How sizes and times are written for people, the same in the CLI and the dashboard.
Plain functions with no dependencies, so every layer can use them."""

from __future__ import annotations

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
