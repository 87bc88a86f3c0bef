"""Alerts as OCSF Detection Findings and ECS documents, through every sink that writes JSON.

The OCSF documents are checked with py-ocsf-models (a maintained OCSF library, pydantic models
of the schema): a missing required attribute or a wrong type fails the test."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from py_ocsf_models.events.findings.detection_finding import DetectionFinding

from daemoneye.config.loading import load_config
from daemoneye.config.schema import ALERT_FORMATS, SinksConfig
from daemoneye.config.sink_values import SyslogAddress
from daemoneye.engine.alerts import alert_payload
from daemoneye.engine.formats import alert_document
from daemoneye.engine.sinks import build_sinks
from daemoneye.engine.sinks.file import FileSink
from daemoneye.engine.sinks.stdout import StdoutSink
from daemoneye.engine.sinks.syslog import SyslogSink, format_rfc5424
from daemoneye.errors import ConfigError
from daemoneye.models import Alert, Rule

RULE = Rule(
    id="shell-from-tmp",
    name="Shell started from /tmp",
    description="An interactive shell whose executable lives in /tmp.",
    severity="high",
    enabled=True,
    tags=("T1059.004", "attack.t1036", "execution"),
    query="SELECT pid, start_time FROM processes",
    title="Shell from /tmp: {exe}",
    dedup_window_s=None,
    throttle_s=None,
    source_file="builtin/execution.toml",
    source_line=1,
)


def alert(**changes: Any) -> Alert:
    base: dict[str, Any] = {
        "id": 7,
        "rule_id": RULE.id,
        "severity": "high",
        "title": "Shell from /tmp: /tmp/.x/sh",
        "pid": 4242,
        "start_time": 1714564790.5,
        "first_seen": 1714564800.0,
        "last_seen": 1714564810.0,
        "count": 2,
        "state": "open",
        "state_changed_at": None,
        "state_changed_by": None,
        "row": (
            ("pid", 4242),
            ("start_time", 1714564790.5),
            ("name", "sh"),
            ("exe", "/tmp/.x/sh"),
            ("cmdline", "sh -i"),
            ("argv", '["sh", "-i"]'),
            ("uid", 1000),
            ("user", "alice"),
            ("ppid", 1),
        ),
    }
    base.update(changes)
    return Alert(**base)


def payload(event: str = "alert.raised", **changes: Any) -> dict[str, Any]:
    return alert_payload(
        alert(**changes), RULE, event=event, occurrence=2, host="web-1", ts=1714564810.25
    )


def test_ocsf_detection_finding_validates_and_carries_the_alert() -> None:
    doc = alert_document(payload(), "ocsf")
    finding = DetectionFinding.model_validate(doc)
    assert finding.class_uid == 2004 and finding.type_uid == 200401
    assert doc["severity_id"] == 4 and doc["status_id"] == 1
    assert doc["time"] == 1714564810250
    info = doc["finding_info"]
    assert info["uid"] == "web-1/7" and info["analytic"]["uid"] == "shell-from-tmp"
    assert [a["technique"]["uid"] for a in info["attacks"]] == ["T1059.004", "T1036"]
    process = doc["evidences"][0]["process"]
    assert process["pid"] == 4242 and process["file"]["path"] == "/tmp/.x/sh"
    assert process["cmd_line"] == "sh -i" and process["user"] == {"uid": "1000", "name": "alice"}
    assert process["created_time"] == 1714564790500
    assert doc["metadata"]["uid"] == "web-1/7/2"  # the same event id every sink and retry sees


@pytest.mark.parametrize(
    ("event", "state", "activity", "status"),
    [
        ("alert.raised", "open", 1, 1),
        ("alert.reopened", "open", 1, 1),
        ("alert.acknowledged", "acknowledged", 2, 2),
        ("alert.closed", "closed", 3, 4),
    ],
)
def test_ocsf_activity_and_status_follow_the_alert(
    event: str, state: str, activity: int, status: int
) -> None:
    doc = alert_document(payload(event, state=state), "ocsf")
    DetectionFinding.model_validate(doc)
    assert (doc["activity_id"], doc["status_id"]) == (activity, status)
    assert doc["type_uid"] == 2004 * 100 + activity


@pytest.mark.parametrize("severity", ["info", "low", "medium", "high", "critical"])
def test_every_severity_maps_to_an_ocsf_severity(severity: str) -> None:
    doc = alert_document(payload(severity=severity), "ocsf")
    DetectionFinding.model_validate(doc)
    assert 1 <= doc["severity_id"] <= 5


def test_a_row_without_process_columns_still_validates() -> None:
    doc = alert_document(payload(row=(("pid", 1), ("start_time", 2.0))), "ocsf")
    DetectionFinding.model_validate(doc)
    assert doc["evidences"] == [{"process": {"pid": 4242, "created_time": 1714564790500}}]


def test_ecs_document_names_the_rule_process_and_technique() -> None:
    doc = alert_document(payload(), "ecs")
    assert doc["@timestamp"] == "2024-05-01T12:00:10.250000Z"
    assert doc["event"]["kind"] == "alert" and doc["event"]["id"] == "web-1/7/2"
    assert doc["rule"]["id"] == "shell-from-tmp"
    assert doc["process"]["executable"] == "/tmp/.x/sh"
    assert doc["process"]["args"] == ["sh", "-i"] and doc["process"]["args_count"] == 2
    assert doc["process"]["start"] == "2024-05-01T11:59:50.500000Z"
    assert doc["user"] == {"id": "1000", "name": "alice"}
    assert doc["threat"]["technique"]["id"] == ["T1059.004", "T1036"]
    assert doc["host"]["name"] == "web-1"


def test_native_is_the_payload_itself() -> None:
    assert alert_document(payload(), "native") == payload()


def test_hostile_text_stays_literal_in_documents(tmp_path: Path) -> None:
    hostile = "x\x1b[2J\u202e\nnext"
    sink = FileSink(tmp_path / "alerts.jsonl", fsync=False, fmt="ocsf")
    sink.deliver(payload(title=hostile))
    line = (tmp_path / "alerts.jsonl").read_text()
    assert line.count("\n") == 1 and "\x1b" not in line and "\u202e" not in line
    assert json.loads(line)["finding_info"]["title"] == hostile


@pytest.mark.parametrize("fmt", ALERT_FORMATS)
def test_file_sink_writes_the_configured_format(tmp_path: Path, fmt: str) -> None:
    sink = FileSink(tmp_path / "alerts.jsonl", fsync=False, fmt=fmt)
    sink.deliver(payload())
    doc = json.loads((tmp_path / "alerts.jsonl").read_text())
    assert doc == json.loads(json.dumps(alert_document(payload(), fmt)))


def test_stdout_json_formats() -> None:
    out = io.StringIO()
    StdoutSink("ocsf", out).deliver(payload())
    StdoutSink("json", out).deliver(payload())
    first, second = out.getvalue().splitlines()
    DetectionFinding.model_validate(json.loads(first))
    assert json.loads(second)["rule_id"] == "shell-from-tmp"


def test_syslog_carries_the_document_as_msg() -> None:
    message = format_rfc5424(
        payload(), facility="daemon", app_name="daemoneye", hostname="web-1", procid=1, fmt="ecs"
    )
    msg = message.split(b"] ", 1)[1]
    assert json.loads(msg)["rule"]["id"] == "shell-from-tmp"


def test_syslog_udp_document_too_big_loses_the_row_not_its_json() -> None:
    big = payload(row=(("pid", 4242), ("start_time", 1.0), ("cmdline", "A" * 5000)))
    message = format_rfc5424(
        big,
        facility="daemon",
        app_name="daemoneye",
        hostname="web-1",
        procid=1,
        max_bytes=2048,
        fmt="ocsf",
    )
    assert len(message) <= 2048
    doc = json.loads(message.split(b"] ", 1)[1])
    DetectionFinding.model_validate(doc)
    assert doc["unmapped"]["daemoneye"]["row"] == {}


def test_syslog_sink_sends_ocsf_over_udp() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    sink = SyslogSink(SyslogAddress("udp", host="127.0.0.1", port=port), fmt="ocsf")
    try:
        sink.deliver(payload())
        data = receiver.recv(65536)
    finally:
        sink.close()
        receiver.close()
    DetectionFinding.model_validate(json.loads(data.split(b"] ", 1)[1]))


def test_format_is_a_key_of_every_sink(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[sinks.file]\nenabled = true\npath = "%s"\nformat = "ecs"\n'
        '[sinks.webhook]\nenabled = true\nurl = "http://127.0.0.1:9/x"\nformat = "ocsf"\n'
        % (tmp_path / "a.jsonl")
    )
    loaded = load_config(config_file=config, env={})
    sinks: SinksConfig = loaded.config.sinks
    assert (sinks.file.format, sinks.webhook.format, sinks.syslog.format) == (
        "ecs",
        "ocsf",
        "native",
    )
    built = build_sinks(sinks)
    assert set(built) == {"file", "webhook"}


def test_an_unknown_format_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[sinks.file]\nformat = "cef"\n')
    with pytest.raises(ConfigError, match=r"sinks\.file\.format"):
        load_config(config_file=config, env={})
