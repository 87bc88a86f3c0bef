"""Process-supplied text is hostile: these helpers make it safe for a person to read.

A process chooses its own name and command line, and those reach tables, CSV, JSON, sinks and
the daemon's log. Whatever a terminal, a log viewer or a spreadsheet would act on instead of
show is made visible here, in one place:

- C0 controls, DEL and the C1 controls (U+0080 to U+009F, among them U+009B, the 8-bit CSI that
  some terminals obey like ESC [): a title can otherwise set the window title, clear the screen
  or forge a log line;
- bidi overrides, embeddings, isolates and marks (U+202A to U+202E, U+2066 to U+2069,
  U+200E, U+200F, U+061C), which reorder what is shown (an RLO in "evil<RLO>txt.sh" shows
  it as "evilhs.txt");
- invisible format characters (zero-width space and joiners, word joiner, BOM, U+2028/U+2029
  line and paragraph separators) that make two different names look the same;
- lone surrogates, which are what undecodable bytes become.

`visible` is for plain text (tables, log lines, syslog MSG), `json_text` for JSON,
`csv_cell` for CSV.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Format and control characters a person must see rather than have acted on (see above).
_FORMAT_CHARS = (  # Unicode's Cf, Zl and Zp (invisible, bidi, tags) and lone surrogates
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f\ud800-\udfff"
)
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_FORMAT_CHARS}]")
# In JSON text json.dumps already escapes C0 (and a pretty-printed document's own newlines
# must stay): the rest is escaped here.
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f{_FORMAT_CHARS}]")
# A run of safe characters, or one unsafe character.
_PIECES = re.compile(f"[^\x00-\x1f\x7f-\x9f{_FORMAT_CHARS}]+|[\x00-\x1f\x7f-\x9f{_FORMAT_CHARS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A CSV cell starting with one of these is a formula to a spreadsheet (the OWASP rule).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _escape_char(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _escape(match: re.Match[str]) -> str:
    return _escape_char(match.group())


def visible(text: str) -> str:
    """`text` with every control and dangerous format character shown as a visible escape
    (`\\x1b`, `\\n`, `\\u202e`)."""
    return _UNSAFE.sub(_escape, text)


def visible_bounded(text: str, limit: int) -> str:
    """`visible(text)` at most `limit` characters long (plus a marker): when longer it is cut
    and ends in `…(N more chars)`, N counted in `text`. Costs O(limit), however long `text`
    is, so a megabyte of hostile text costs no more than a short line."""
    pieces: list[str] = []
    room = limit
    consumed = 0
    for match in _PIECES.finditer(text, 0, limit + 1):
        piece = match.group()
        shown = piece if len(piece) > 1 or not _UNSAFE.match(piece) else _escape_char(piece)
        if len(shown) > room:
            if shown is piece:  # a run of plain characters: keep what fits
                pieces.append(piece[:room])
                consumed += room
            break
        pieces.append(shown)
        room -= len(shown)
        consumed += len(piece)
    if consumed >= len(text):
        return "".join(pieces)
    return "".join(pieces) + f"…({len(text) - consumed} more chars)"


def json_text(value: Any, *, indent: int | None = None, compact: bool = False) -> str:
    """`value` as JSON for a reader who may be a person: like `json.dumps(ensure_ascii=False)`
    (non-ASCII text stays readable) but DEL, the C1 controls, bidi and invisible format
    characters and lone surrogates are written as `\\u` escapes. The result is valid JSON and
    parses back to exactly `value`."""
    separators = (",", ":") if compact else None
    text = json.dumps(value, ensure_ascii=False, indent=indent, separators=separators)
    return _JSON_UNSAFE.sub(_json_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    """A JSON \\u escape; characters past U+FFFF as their UTF-16 surrogate pair, as JSON
    requires (four hex digits per escape)."""
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def csv_cell(value: Any) -> str:
    """One CSV cell a spreadsheet shows as text: control characters made visible like a table
    cell, and text that a spreadsheet would take for a formula (starting with `=`, `+`, `-`,
    `@`, tab or CR) prefixed with `'`. Numbers (int and float values, never text that looks
    like one) stay as they are, so a negative number is still a number."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, bytes):
        return value.hex()
    text = str(value)
    shown = visible(text)
    return "'" + shown if text.startswith(_FORMULA_STARTS) else shown


def shorten(text: str, width: int) -> str:
    """At most `width` characters, ending in an ellipsis when cut."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"
