"""The SQL box's history: up/down walk through earlier queries, newest last, no duplicates."""

from __future__ import annotations


class QueryHistory:
    def __init__(self, limit: int = 100) -> None:
        self._limit = limit
        self._entries: list[str] = []
        self._position = 0  # == len(entries): past the newest (the draft)
        self._draft = ""

    @property
    def entries(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def add(self, sql: str) -> None:
        sql = sql.strip()
        if sql:
            if sql in self._entries:
                self._entries.remove(sql)
            self._entries.append(sql)
            del self._entries[: -self._limit]
        self._position = len(self._entries)
        self._draft = ""

    def older(self, current: str) -> str:
        if self._position == len(self._entries):
            self._draft = current
        if self._position > 0:
            self._position -= 1
        return self._entries[self._position] if self._entries else current

    def newer(self) -> str:
        if self._position < len(self._entries):
            self._position += 1
        if self._position == len(self._entries):
            return self._draft
        return self._entries[self._position]
