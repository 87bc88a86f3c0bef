"""Process-supplied text is hostile: these helpers make it safe to print as plain characters."""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (which include CSI 0x9b), and the Unicode line/paragraph
# separators and bidi overrides that can reorder what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control character shown as a visible escape (`\\x1b`, `\\n`)."""
    return _UNSAFE.sub(_escape, text)


def shorten(text: str, width: int) -> str:
    """At most `width` characters, ending in an ellipsis when cut."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"
