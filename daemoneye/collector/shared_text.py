"""One object for each text that many processes share (an executable, a directory, an
argument, a name), so that the collector's live records do not hold thousands of copies."""

from __future__ import annotations

from typing import overload

_SHARED_MAX = 8192  # distinct texts kept
_SHARED_BYTES = 512  # an exe or cwd path, or a whole command line, longer than this is not kept


class SharedText:
    """One str object for equal texts across processes: thousands of processes run the same
    few executables in the same few directories with the same arguments, and the collector
    keeps every live record. Bounded in entries (cleared when full) and in size (a long,
    hostile text is never kept, so a process that is gone cannot pin memory through it).
    Safe to share between the scanner's and the event reader's threads (dict.setdefault)."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    @overload
    def one(self, text: str) -> str: ...

    @overload
    def one(self, text: None) -> None: ...

    def one(self, text: str | None) -> str | None:
        if text is None or len(text) > _SHARED_BYTES:
            return text
        texts = self._texts
        if len(texts) >= _SHARED_MAX:
            texts.clear()
        return texts.setdefault(text, text)

    def argv(self, raw_length: int, argv: tuple[str, ...]) -> tuple[str, ...]:
        """`argv` with each argument shared (when the whole line is short: one C-level pass)."""
        if raw_length > _SHARED_BYTES or not argv:
            return argv
        texts = self._texts
        if len(texts) + len(argv) >= _SHARED_MAX:
            texts.clear()
        return tuple(map(texts.setdefault, argv, argv))

    def clear(self) -> None:
        """Forget every text (what a fresh procmond starts with; the benchmarks measure its
        first scan so)."""
        self._texts.clear()

    def many(self, values: tuple[str | None, ...]) -> tuple[str | None, ...]:
        """`values` (texts or None) each shared, when none is longer than the bound; else
        `values` itself. Two C-level passes: the agent runs it on every record it decodes."""
        if not values or max(map(len, filter(None, values)), default=0) > _SHARED_BYTES:
            return values
        texts: dict[str | None, str | None] = self._texts  # type: ignore[assignment]
        if len(texts) + len(values) >= _SHARED_MAX:
            texts.clear()
        return tuple(map(texts.setdefault, values, values))


SHARED = SharedText()
