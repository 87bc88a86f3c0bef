"""What one audit entry may hold: its detail is bounded in size, shape and cost before it is
hashed, whoever the caller is (a refused admin call carries whatever a peer sent).

The detail becomes plain JSON data (strings SQLite can store, non-finite floats and unknown
types as text) with these bounds, each visible in the entry where it applied:

- a string keeps its first `MAX_STRING_CHARS` characters and gains "…[N chars, truncated]";
- an object keeps its first `MAX_ITEMS` keys (keys are cut like strings) and gains the key
  "…" saying how many more there were; a list keeps its first items and ends with that count;
- a container nested deeper than `MAX_DEPTH` is replaced by a note of its type and size;
- at most `MAX_NODES` values are visited in all, so the work is bounded whatever the input;
- the canonical JSON of the detail is at most `MAX_DETAIL_BYTES`: when it is larger, strings
  are cut shorter, and as a last resort the detail is replaced by a note with its first keys.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from typing import Any

from daemoneye.store.rows import safe_text

MAX_DETAIL_BYTES = 4096
MAX_STRING_CHARS = 512
MAX_KEY_CHARS = 64
MAX_ACTOR_CHARS = 256
MAX_ITEMS = 32
MAX_DEPTH = 4
MAX_NODES = 256
# Shorter string caps tried in turn when the detail is still over MAX_DETAIL_BYTES.
_STRING_CAPS = (MAX_STRING_CHARS, 128, 32)
MORE_KEY = "…"


def canonical_json(value: Any) -> str:
    """The one encoding hashed and stored: sorted keys, no whitespace, non-ASCII kept."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def bounded_text(value: str, limit: int) -> str:
    """`value` cut to `limit` characters with a marker naming its length; storable Unicode."""
    if len(value) <= limit:
        return safe_text(value)
    return safe_text(value[:limit]) + f"…[{len(value)} chars, truncated]"


def _int(value: int) -> int | str:
    # Beyond 64 bits an integer is noted, not printed: its decimal text can be huge.
    bits = value.bit_length()
    return value if bits <= 64 else f"<integer of {bits} bits>"


class _Bounder:
    """One pass over a detail with a shared budget of visited values."""

    def __init__(self, string_cap: int) -> None:
        self.string_cap = string_cap
        self.nodes_left = MAX_NODES

    def plain(self, value: Any, depth: int) -> Any:
        self.nodes_left -= 1
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return _int(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else repr(value)
        if isinstance(value, str):
            return bounded_text(value, self.string_cap)
        if isinstance(value, Mapping):
            if depth >= MAX_DEPTH or self.nodes_left <= 0:
                return f"<object with {len(value)} keys>"
            return self._mapping(value, depth)
        if isinstance(value, list | tuple):
            if depth >= MAX_DEPTH or self.nodes_left <= 0:
                return f"<list of {len(value)} items>"
            return self._sequence(value, depth)
        return bounded_text(str(value), self.string_cap)

    def _mapping(self, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, item in itertools.islice(value.items(), MAX_ITEMS):
            if self.nodes_left <= 0:
                break
            result[bounded_text(str(key), MAX_KEY_CHARS)] = self.plain(item, depth + 1)
        if len(result) < len(value):
            result[MORE_KEY] = f"{len(value) - len(result)} more keys, truncated"
        return result

    def _sequence(self, value: list[Any] | tuple[Any, ...], depth: int) -> list[Any]:
        result: list[Any] = []
        for item in itertools.islice(value, MAX_ITEMS):
            if self.nodes_left <= 0:
                break
            result.append(self.plain(item, depth + 1))
        if len(result) < len(value):
            result.append(f"…[{len(value) - len(result)} more items, truncated]")
        return result


def bounded_detail(detail: Mapping[str, Any]) -> str:
    """The canonical JSON text of `detail` within the bounds of the module docstring."""
    for cap in _STRING_CAPS:
        text = canonical_json(_Bounder(cap).plain(detail, 0))
        if len(text.encode("utf-8")) <= MAX_DETAIL_BYTES:
            return text
    keys = [bounded_text(str(k), MAX_KEY_CHARS) for k in itertools.islice(detail, 8)]
    return canonical_json(
        {MORE_KEY: f"detail over {MAX_DETAIL_BYTES} bytes, truncated", "keys": keys}
    )
