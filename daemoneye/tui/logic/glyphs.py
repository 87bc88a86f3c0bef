"""Non-ASCII glyphs the dashboard draws, named once (linters take them for look-alikes)."""

from __future__ import annotations

TIMES = "\u00d7"  # multiplication sign: "<TIMES>12 since 12:00:00", and ended rows' mark
CHEVRON = "\u203a"  # single right angle quote: between the ancestors of a process
ARROW = "\u2192"  # rightwards arrow: from a socket's local end to its remote end
