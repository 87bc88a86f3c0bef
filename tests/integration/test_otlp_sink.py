"""The OTLP sink against a real OTLP/HTTP receiver: what arrives, and what 429/503/400 mean to
the outbox."""

from __future__ import annotations

import json
from typing import Any

import pytest
from py_ocsf_models.events.findings.detection_finding import DetectionFinding

from daemoneye.engine.sinks import PermanentSinkError, SinkError
from daemoneye.engine.sinks.otlp import OtlpSink
from tests.integration.otlp_receiver import LogsReceiver, logs_receiver


def payload(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event": "alert.raised",
        "event_id": "web-1/7/1",
        "ts": 1714564800.25,
        "time": "2024-05-01T12:00:00.250000Z",
        "host": "web-1",
        "alert_id": 7,
        "occurrence": 1,
        "rule_id": "exec-tmp",
        "rule_name": "Execution from /tmp",
        "description": "",
        "tags": ["T1059"],
        "severity": "high",
        "title": "Execution from /tmp: /tmp/x \x1b[2J",
        "pid": 4242,
        "start_time": 1714564790.5,
        "first_seen": 1714564800.0,
        "last_seen": 1714564800.0,
        "count": 1,
        "state": "open",
        "row": {"exe": "/tmp/x", "uid": None},
    }
    base.update(changes)
    return base


def _body(record: dict[str, Any]) -> dict[str, Any]:
    """An OTLP AnyValue kvlist (as MessageToDict renders it) back into plain JSON values."""

    def value(v: dict[str, Any]) -> Any:
        if "kvlistValue" in v:
            return {
                kv["key"]: value(kv.get("value", {})) for kv in v["kvlistValue"].get("values", [])
            }
        if "arrayValue" in v:
            return [value(item) for item in v["arrayValue"].get("values", [])]
        if "intValue" in v:
            return int(v["intValue"])
        for key in ("stringValue", "doubleValue", "boolValue"):
            if key in v:
                return v[key]
        return None

    return value(record["body"])  # type: ignore[no-any-return]


def test_an_alert_arrives_as_a_log_record() -> None:
    with logs_receiver() as receiver:
        sink = OtlpSink(receiver.url, timeout=5, host="web-1")
        sink.deliver(payload())
        sink.close()
    (record,) = receiver.records()
    assert record["severityText"] == "HIGH" and record["severityNumber"] == "SEVERITY_NUMBER_ERROR"
    attributes = {a["key"]: a["value"] for a in record["attributes"]}
    assert attributes["daemoneye.event_id"] == {"stringValue": "web-1/7/1"}
    assert attributes["daemoneye.rule_id"] == {"stringValue": "exec-tmp"}
    resource = {a["key"]: a["value"] for a in record["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "daemoneye"}
    assert resource["host.name"] == {"stringValue": "web-1"}
    body = _body(record)
    assert body["title"] == "Execution from /tmp: /tmp/x \x1b[2J"  # the exact text, as data
    assert body["row"] == {"exe": "/tmp/x"}  # a null has no place in an OTLP map


def test_the_body_can_be_an_ocsf_detection_finding() -> None:
    with logs_receiver() as receiver:
        sink = OtlpSink(receiver.url, timeout=5, fmt="ocsf")
        sink.deliver(payload())
        sink.close()
    (record,) = receiver.records()
    DetectionFinding.model_validate(json.loads(json.dumps(_body(record))))


def test_429_with_a_long_retry_after_goes_back_to_the_outbox_with_the_hint() -> None:
    script = LogsReceiver(script=lambda n: (429, {"Retry-After": "120"}))
    with logs_receiver(script) as receiver:
        sink = OtlpSink(receiver.url, timeout=2)
        with pytest.raises(SinkError) as caught:
            sink.deliver(payload())
        sink.close()
    assert not isinstance(caught.value, PermanentSinkError)
    assert caught.value.retry_after == pytest.approx(120)
    assert "429" in str(caught.value)


def test_503_then_200_is_retried_by_the_exporter_within_the_timeout() -> None:
    script = LogsReceiver(script=lambda n: (503, {"Retry-After": "0"}) if n == 1 else 200)
    with logs_receiver(script) as receiver:
        sink = OtlpSink(receiver.url, timeout=10)
        sink.deliver(payload())
        sink.close()
    assert receiver.statuses() == [503, 200]
    assert len(receiver.records()) == 1


def test_400_is_permanent() -> None:
    with logs_receiver(LogsReceiver(script=lambda n: 400)) as receiver:
        sink = OtlpSink(receiver.url, timeout=5)
        with pytest.raises(PermanentSinkError, match="HTTP 400"):
            sink.deliver(payload())
        sink.close()


def test_no_receiver_is_transient() -> None:
    sink = OtlpSink("http://127.0.0.1:9/v1/logs", timeout=0.5)
    with pytest.raises(SinkError, match="no answer") as caught:
        sink.deliver(payload())
    sink.close()
    assert not isinstance(caught.value, PermanentSinkError)
