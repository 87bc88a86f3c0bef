"""What every sink is: something that takes one alert payload or says why it could not.

A sink either returns (the alert is delivered: the delivery worker marks its outbox row done) or
raises `SinkError`. A plain SinkError is transient (the row is retried with backoff);
`PermanentSinkError` means retrying cannot help (e.g. HTTP 400) and the row is dead-lettered at
once. Sinks are driven by one delivery thread each, so they need not be thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from daemoneye.errors import DaemonEyeError
from daemoneye.text import shorten, visible


class SinkError(DaemonEyeError):
    """A delivery failed and may succeed later. `retry_after` is the receiver's own hint in
    seconds (HTTP Retry-After), when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSinkError(SinkError):
    """A delivery failed in a way retrying cannot fix: the alert is dead-lettered."""


class Sink(Protocol):
    """A destination for alerts."""

    name: str

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Hand one alert payload over; raise SinkError when it was not taken."""
        ...

    def reopen(self) -> None:
        """Drop open files or connections so the next delivery opens them anew (SIGHUP)."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...


class BatchSink(Sink, Protocol):
    """A sink that takes several payloads in one round trip (OTLP: one export request)."""

    def deliver_batch(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Hand all of `payloads` over, or raise SinkError: none of them counts as taken.
        PermanentSinkError says the request was refused, not which payload: the caller
        delivers them one by one to find out."""
        ...


def batch_sink(sink: Sink) -> BatchSink | None:
    """`sink` when it takes batches."""
    return sink if callable(getattr(sink, "deliver_batch", None)) else None  # type: ignore[return-value]


def iso_time(ts: float) -> str:
    """RFC 3339 UTC with microseconds, e.g. 2024-05-01T12:00:00.123456Z."""
    whole = int(ts // 1)
    micros = min(round((ts - whole) * 1_000_000), 999_999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


def alert_text(payload: Mapping[str, Any]) -> str:
    """The alert (or process event) as one line of text without a timestamp, control
    characters made visible: `HIGH exec-from-tmp pid 4242: Execution from /tmp (alert 7)`,
    `EXEC pid 4242 ppid 1 user root: /bin/sh -c :`."""
    if str(payload.get("event", "")).startswith("process."):
        return _event_text(payload)
    severity = str(payload.get("severity", "?")).upper()
    rule = str(payload.get("rule_id", "?"))
    reopened = ", reopened" if payload.get("event") == "alert.reopened" else ""
    text = (
        f"{severity} {rule} pid {payload.get('pid', '?')}: {payload.get('title', '')} "
        f"(alert {payload.get('alert_id', '?')}{reopened})"
    )
    return visible(text)


def _event_text(payload: Mapping[str, Any]) -> str:
    kind = str(payload.get("kind", "?"))
    text = f"{kind.upper()} pid {payload.get('pid', '?')} ppid {payload.get('ppid', '?')}"
    if payload.get("user") is not None:
        text += f" user {payload['user']}"
    if kind == "exit":
        code = payload.get("exit_code")
        detail = (
            "exited"
            if code is None
            else f"killed by signal {-code}"
            if isinstance(code, int) and code < 0
            else f"exit code {code}"
        )
    elif payload.get("old_value") is not None or payload.get("new_value") is not None:
        detail = f"{payload.get('old_value')} -> {payload.get('new_value')}"
    else:
        detail = str(payload.get("cmdline") or payload.get("name") or "")
    return visible(shorten(f"{text}: {detail}", 2000))


def human_line(payload: Mapping[str, Any]) -> str:
    """`alert_text` preceded by the alert's time, for the stdout sink."""
    ts = payload.get("ts")
    when = iso_time(float(ts)) if isinstance(ts, int | float) else "-"
    return f"{when} {alert_text(payload)}"
