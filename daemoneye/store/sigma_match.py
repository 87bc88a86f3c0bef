"""`sigma_match(value, mode, pattern, ...)`: Sigma's value matching as one SQL function.

Sigma compares values case-insensitively, and means it for every script: `ÄRGER` matches
`ärger`, `STRASSE` matches `straße`. SQLite's LIKE folds ASCII letters only, and its GLOB not
at all, so converted Sigma rules call this function instead: both sides are compared after
`str.casefold()` (unless the mode says `cased`). It is deterministic and pure, so it sits on
the sandbox's allow-list like `lower()`.

A pattern is Sigma's own value syntax: `*` any run of characters, `?` one character, `\\`
escapes the next character. `mode` is `any` (one pattern matches) or `all` (every pattern
matches), optionally followed by ` cased`. A NULL value matches nothing (0, never NULL), so
that Sigma's `not filter` holds for a process that lacks the field.

Cost is linear: a pattern that is a plain string, a prefix, a suffix or an infix is a string
comparison on the folded text; anything else runs on RE2 over the folded text. At most
MAX_SUBJECT_CHARS characters of a value are examined, like REGEXP's cap.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import re2

from daemoneye.errors import QueryError

MAX_SUBJECT_CHARS = 64 * 1024
MAX_PATTERN_CHARS = 4096
MAX_PATTERNS = 4096
PATTERN_CACHE_SIZE = 8192
MODES = ("any", "all", "any cased", "all cased")

WILDCARD_MULTI = "*"
WILDCARD_SINGLE = "?"
ESCAPE = "\\"


class SigmaPatternError(QueryError):
    """A `sigma_match` call the function refuses: a bad mode or an oversized pattern."""


def escape(text: str) -> str:
    """`text` as a pattern that matches exactly it (wildcards and backslashes escaped)."""
    return "".join(ESCAPE + char if char in "*?\\" else char for char in text)


def split(pattern: str) -> list[str | None]:
    """The pattern as literal runs and wildcards: `None` stands for `*`, `""` for `?`.
    A trailing lone backslash is a literal backslash (Sigma's reading)."""
    parts: list[str | None] = []
    literal: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == ESCAPE and index + 1 < len(pattern):
            literal.append(pattern[index + 1])
            index += 2
            continue
        if char in (WILDCARD_MULTI, WILDCARD_SINGLE):
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(None if char == WILDCARD_MULTI else "")
        else:
            literal.append(char)
        index += 1
    if literal:
        parts.append("".join(literal))
    return parts


Matcher = Callable[[str], bool]


def _fold(text: str, cased: bool) -> str:
    return text if cased else text.casefold()


@functools.lru_cache(maxsize=PATTERN_CACHE_SIZE)
def compile_matcher(pattern: str, cased: bool) -> Matcher:
    """A predicate over already-folded text that says whether `pattern` matches it whole."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise SigmaPatternError(
            f"sigma_match pattern is {len(pattern)} characters long (at most {MAX_PATTERN_CHARS})"
        )
    parts = [_fold(part, cased) if part else part for part in split(pattern)]
    literals = [part for part in parts if part]
    single = "" in parts
    stars = [index for index, part in enumerate(parts) if part is None]
    if not single and len(literals) <= 1:
        text = literals[0] if literals else ""
        leading = bool(parts) and parts[0] is None
        trailing = len(parts) > 1 and parts[-1] is None
        if not stars:
            return text.__eq__
        if leading and trailing and len(stars) == 2:
            return (lambda value: text in value) if text else _always
        if leading and len(stars) == 1 and len(parts) <= 2:
            return (lambda value: value.endswith(text)) if text else _always
        if trailing and len(stars) == 1 and len(parts) <= 2:
            return lambda value: value.startswith(text)
        if not literals:
            return _always  # "*", "**": anything
    # The general case: RE2 over the folded text, anchored at both ends, `.` matching newlines.
    body = "".join(
        ".*" if part is None else "." if part == "" else re2.escape(part) for part in parts
    )
    options = re2.Options()
    options.never_capture = True
    options.log_errors = False
    options.dot_nl = True
    compiled = re2.compile(body, options)
    return lambda value: compiled.fullmatch(value) is not None


def _always(value: str) -> bool:
    return True


def sigma_match(value: object, mode: object, *patterns: object) -> int:
    """1 when `value` matches one (`any`) or every (`all`) pattern, else 0."""
    if mode not in MODES:
        raise SigmaPatternError(f"sigma_match mode must be one of {', '.join(MODES)}: {mode!r}")
    if len(patterns) > MAX_PATTERNS:
        raise SigmaPatternError(f"sigma_match takes at most {MAX_PATTERNS} patterns")
    if value is None:
        return 0
    assert isinstance(mode, str)
    cased = mode.endswith("cased")
    text = value if isinstance(value, str) else _text(value)
    folded = _fold(text[:MAX_SUBJECT_CHARS], cased)
    matchers = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise SigmaPatternError("sigma_match patterns must be text")
        matchers.append(compile_matcher(pattern, cased))
    if mode.startswith("all"):
        return int(all(matcher(folded) for matcher in matchers))
    return int(any(matcher(folded) for matcher in matchers))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
