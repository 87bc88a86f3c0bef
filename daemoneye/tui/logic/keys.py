"""Row keys: a process instance as one string, f"{pid}:{start_time!r}".

The dashboard keys everything by this string rather than by `ProcessKey`: a str caches its hash,
while the frozen dataclass computes it in Python on every dict lookup, which at 10,000
processes was most of the cost of a refresh.
"""

from __future__ import annotations

from daemoneye.models import ProcessKey, ProcessRecord


def row_key_of(pid: int, start_time: float) -> str:
    return f"{pid}:{start_time!r}"


def row_key(key: ProcessKey) -> str:
    """The row key of an instance: pid and start time, never the pid alone."""
    return f"{key.pid}:{key.start_time!r}"


def record_key(record: ProcessRecord) -> str:
    return f"{record.pid}:{record.start_time!r}"


def parse_row_key(text: str) -> ProcessKey:
    pid, _, start = text.partition(":")
    return ProcessKey(int(pid), float(start))
