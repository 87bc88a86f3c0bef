"""Caches a process can fill: each one is a dict that starts over when it reaches its limit, so
a flood of distinct keys (hostile names, paths, namespaces) costs reads again, never memory."""

from __future__ import annotations

from typing import TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


def keep(table: dict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """`table[key] = value`, the table emptied first when it already holds `limit` entries."""
    if len(table) >= limit:
        table.clear()
    table[key] = value
