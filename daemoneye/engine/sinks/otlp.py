"""The OTLP sink: each alert (and streamed process event) exported as one OpenTelemetry log
record over OTLP/HTTP with the official exporter (opentelemetry-exporter-otlp-proto-http), so a
fleet's OpenTelemetry Collector takes DaemonEye's alerts like any other log.

The record's body is the alert in the section's format (native, ocsf or ecs) as an OTLP map;
its severity follows the alert's; its attributes name the rule, the alert and the event id
(the same for every retry, so a pipeline can drop duplicates); the resource says
service.name=daemoneye and host.name.

The exporter retries by itself within `timeout` (honouring Retry-After); when it gives up, this
sink tells the outbox why: a 4xx other than 408/429 will never be taken (dead-lettered at once),
anything else is retried later, after the receiver's Retry-After when it sent one. The exporter
and the SDK are optional (`daemoneye[otlp]`): without them the sink is a configuration error
that says what to install.

The records due together go in one request (`deliver_batch`, up to the outbox's batch of 50):
one HTTP round trip for a burst of alerts, not one each.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from daemoneye import __version__
from daemoneye.config.schema import OtlpSinkConfig
from daemoneye.config.sink_values import redact_url
from daemoneye.engine.formats import document
from daemoneye.engine.sinks.base import PermanentSinkError, SinkError
from daemoneye.engine.stream_payload import is_process_event
from daemoneye.errors import ConfigError

if TYPE_CHECKING:
    import requests

# OTLP severity numbers (opentelemetry.proto.logs.v1.SeverityNumber)
_SEVERITY_NUMBER = {"info": 9, "low": 13, "medium": 14, "high": 17, "critical": 21}
_RETRYABLE_4XX = frozenset({408, 429})


def _any_value(value: Any) -> Any:
    """`value` as an OTLP AnyValue: maps and lists kept, None dropped from maps (AnyValue has no
    null in a map), other scalars as they are."""
    if isinstance(value, Mapping):
        return {str(k): _any_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_any_value(item) for item in value if item is not None]
    return value


def _retry_after(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return max(float(header), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(header).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _attributes(payload: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """The record's attributes: what a pipeline routes and dedupes on."""
    attributes: dict[str, Any] = {
        "event.name": "daemoneye." + str(payload.get("event", "alert")),
        "daemoneye.event_id": str(payload.get("event_id", "")),
        "daemoneye.format": fmt,
    }
    if is_process_event(payload):
        attributes["process.pid"] = int(payload.get("pid") or 0)
    else:
        attributes["daemoneye.alert_id"] = int(payload.get("alert_id") or 0)
        attributes["daemoneye.rule_id"] = str(payload.get("rule_id", ""))
    return attributes


class _LastResponse:
    """What the exporter's last HTTP answer was, seen through a requests response hook."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.retry_after: float | None = None

    def reset(self) -> None:
        self.status = None
        self.retry_after = None

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.status = response.status_code
        self.retry_after = _retry_after(response.headers.get("Retry-After"))


class OtlpSink:
    """Exports alerts to `endpoint` as OTLP log records."""

    name = "otlp"

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        ca_file: str | None = None,
        fmt: str = "native",
        host: str | None = None,
    ) -> None:
        try:
            import requests
            from opentelemetry._logs import LogRecord, SeverityNumber
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            from opentelemetry.sdk._logs import ReadableLogRecord
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        except ImportError as exc:
            raise ConfigError(
                "sinks.otlp: the OpenTelemetry exporter is not installed "
                f"({exc.name}); install it with: pip install 'daemoneye[otlp]'"
            ) from None
        self._LogRecord = LogRecord
        self._SeverityNumber = SeverityNumber
        self._ReadableLogRecord = ReadableLogRecord
        self.endpoint = endpoint
        self._shown = redact_url(endpoint)
        self._format = fmt
        self._last = _LastResponse()
        session = requests.Session()
        session.hooks["response"].append(self._last.hook)
        self._exporter = OTLPLogExporter(
            endpoint=endpoint,
            certificate_file=ca_file or None,
            headers=dict(headers or {}),
            timeout=timeout,
            session=session,
        )
        self._resource = Resource.create(
            {"service.name": "daemoneye", "host.name": host or socket.gethostname()}
        )
        self._scope = InstrumentationScope("daemoneye", __version__)
        # The exporter logs each failed attempt at WARNING/ERROR itself; the outbox already says
        # what happened to each alert, once.
        logging.getLogger("opentelemetry.exporter.otlp.proto.http").setLevel(logging.CRITICAL)

    def _record(self, payload: Mapping[str, Any]) -> Any:
        ts = payload.get("ts")
        nanos = int(float(ts) * 1e9) if isinstance(ts, int | float) else time.time_ns()
        severity = str(payload.get("severity", ""))
        record = self._LogRecord(
            timestamp=nanos,
            observed_timestamp=time.time_ns(),
            severity_text=severity.upper() or None,
            severity_number=self._SeverityNumber(_SEVERITY_NUMBER.get(severity, 9)),
            body=_any_value(document(payload, self._format)),
            attributes=_attributes(payload, self._format),
            event_name="daemoneye." + str(payload.get("event", "alert")),
        )
        return self._ReadableLogRecord(record, self._resource, self._scope)

    def deliver(self, payload: Mapping[str, Any]) -> None:
        self.deliver_batch([payload])

    def deliver_batch(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Export `payloads` as the log records of one request: all are taken or none."""
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        self._last.reset()
        result = self._exporter.export([self._record(payload) for payload in payloads])
        if result == LogRecordExportResult.SUCCESS:
            return
        status = self._last.status
        if status is None:
            raise SinkError(f"cannot export to {self._shown}: no answer (connection failed)")
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            raise PermanentSinkError(
                f"{self._shown} refused the log records with HTTP {status}; it will never take them"
            )
        raise SinkError(f"{self._shown} answered HTTP {status}", retry_after=self._last.retry_after)

    def reopen(self) -> None:
        """Connections are the exporter's session's; nothing to reopen."""

    def close(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]


def build(section: OtlpSinkConfig) -> OtlpSink:
    """The sink of `[sinks.otlp]`."""
    return OtlpSink(
        section.endpoint,
        timeout=section.timeout,
        headers=dict(section.headers),
        ca_file=section.ca_file or None,
        fmt=section.format,
    )
