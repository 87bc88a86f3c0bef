"""How busy the past was: new process instances and alerts per time bucket, for the dashboard
timeline's activity strip. A plain function over a read-only store (the table names are the
contract: `processes`, `alerts`), separate from history.py's reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

SQLValue = int | float | str | bytes | None

MAX_ACTIVITY_BUCKETS = 2_000  # wider than any terminal; bounds the answer


class ActivitySource(Protocol):
    """What `activity` needs from a store connection (ReadOnlyStore provides it)."""

    def fetch_rows(
        self, sql: str, params: Sequence[SQLValue] = ()
    ) -> list[tuple[SQLValue, ...]]: ...


# New instances are counted from the start_time index alone (no row is read), so a week of
# 1.2 M instances costs one pass over an index range; alerts are few.
_STARTED = """
SELECT CAST((start_time - ?) / ? AS INTEGER) AS bucket, count(*)
FROM processes WHERE start_time >= ? AND start_time < ?
GROUP BY bucket
"""
_ALERTS = """
SELECT CAST((first_seen - ?) / ? AS INTEGER) AS bucket, count(*)
FROM alerts WHERE first_seen >= ? AND first_seen < ?
GROUP BY bucket
"""


def activity(
    store: ActivitySource, since: float, until: float, buckets: int
) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
    """(bucket width in seconds, new instances per bucket, alerts per bucket) over
    [since, until) cut into `buckets` equal buckets, oldest first."""
    if not until > since or not 1 <= buckets <= MAX_ACTIVITY_BUCKETS:
        raise ValueError(f"need since < until and 1 to {MAX_ACTIVITY_BUCKETS} buckets")
    width = (until - since) / buckets
    counts: list[tuple[int, ...]] = []
    for sql in (_STARTED, _ALERTS):
        per_bucket = [0] * buckets
        for bucket, count in store.fetch_rows(sql, (since, width, since, until)):
            index = min(buckets - 1, max(0, int(bucket or 0)))
            per_bucket[index] += int(count or 0)
        counts.append(tuple(per_bucket))
    return width, counts[0], counts[1]
