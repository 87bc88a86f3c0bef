"""Alerts as Elastic Common Schema documents (ECS 8.11): `event.kind: alert`, the rule as
`rule.*`, the process instance as `process.*`, ATT&CK techniques as `threat.technique.id`.
Fields ECS has no place for (the rule's result row, the dedup occurrence) go under `daemoneye.*`,
the custom namespace ECS asks products to use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemoneye import __version__
from daemoneye.engine.formats.fields import alert_process, techniques
from daemoneye.engine.sinks.base import iso_time

ECS_VERSION = "8.11.0"
# event.severity is a number; ECS leaves the scale to the source: ours is 21..99 like Elastic's
# own detection rules (low 21, medium 47, high 73, critical 99), info 1.
_SEVERITY = {"info": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}


def _time(value: Any) -> str | None:
    return iso_time(float(value)) if isinstance(value, int | float) else None


def _process(payload: Mapping[str, Any]) -> dict[str, Any]:
    proc = alert_process(payload)
    doc: dict[str, Any] = {"pid": proc.pid}
    optional: dict[str, Any] = {
        "start": _time(proc.start_time),
        "name": proc.name,
        "executable": proc.exe,
        "command_line": proc.cmdline,
        "args": list(proc.argv) if proc.argv is not None else None,
        "args_count": len(proc.argv) if proc.argv is not None else None,
        "working_directory": proc.cwd,
        "parent": {"pid": proc.ppid} if proc.ppid is not None else None,
    }
    doc.update({key: value for key, value in optional.items() if value is not None})
    return doc


def alert_document(payload: Mapping[str, Any]) -> dict[str, Any]:
    """One alert payload (alerts.alert_payload) as an ECS document."""
    proc = alert_process(payload)
    rule_id = str(payload.get("rule_id", ""))
    doc: dict[str, Any] = {
        "@timestamp": _time(payload.get("ts")),
        "ecs": {"version": ECS_VERSION},
        "message": str(payload.get("title", "")),
        "event": {
            "kind": "alert",
            "category": ["process"],
            "type": ["info"],
            "action": str(payload.get("event", "")),
            "id": str(payload.get("event_id", "")),
            "severity": _SEVERITY.get(str(payload.get("severity")), 0),
            "created": _time(payload.get("first_seen")),
            "module": "daemoneye",
            "dataset": "daemoneye.alerts",
        },
        "rule": {
            "id": rule_id,
            "name": str(payload.get("rule_name", rule_id)),
            "description": str(payload.get("description", "")),
            "ruleset": "daemoneye",
        },
        "host": {"name": str(payload.get("host", "")), "hostname": str(payload.get("host", ""))},
        "observer": {"product": "DaemonEye", "vendor": "DaemonEye", "version": __version__},
        "process": _process(payload),
        "daemoneye": {
            "alert_id": payload.get("alert_id"),
            "occurrence": payload.get("occurrence"),
            "count": payload.get("count"),
            "state": payload.get("state"),
            "severity": payload.get("severity"),
            "row": payload.get("row"),
        },
    }
    if proc.uid is not None or proc.user is not None:
        user = {"id": None if proc.uid is None else str(proc.uid), "name": proc.user}
        doc["user"] = {key: value for key, value in user.items() if value is not None}
    found = techniques(payload)
    if found:
        doc["threat"] = {"framework": "MITRE ATT&CK", "technique": {"id": list(found)}}
    return doc


# -- process events -------------------------------------------------------------------------

# event.type by the event's kind (ECS allows start, end, change and info for process events)
_PROCESS_TYPE = {"exec": "start", "start": "info", "fork": "start", "exit": "end"}


def process_document(payload: Mapping[str, Any]) -> dict[str, Any]:
    """One process event payload (engine.stream_payload) as an ECS document."""
    kind = str(payload.get("kind", ""))
    argv = payload.get("argv")
    process: dict[str, Any] = {"pid": payload.get("pid")}
    optional: dict[str, Any] = {
        "start": _time(payload.get("start_time")),
        "end": _time(payload.get("ts")) if kind == "exit" else None,
        "exit_code": payload.get("exit_code") if kind == "exit" else None,
        "name": payload.get("name"),
        "executable": payload.get("exe"),
        "command_line": payload.get("cmdline"),
        "args": list(argv) if isinstance(argv, list) else None,
        "args_count": len(argv) if isinstance(argv, list) else None,
        "working_directory": payload.get("cwd"),
        "parent": {"pid": payload["ppid"]} if payload.get("ppid") is not None else None,
    }
    process.update({key: value for key, value in optional.items() if value is not None})
    host = str(payload.get("host", ""))
    doc: dict[str, Any] = {
        "@timestamp": _time(payload.get("ts")),
        "ecs": {"version": ECS_VERSION},
        "message": f"{kind} pid {payload.get('pid')}",
        "event": {
            "kind": "event",
            "category": ["process"],
            "type": [_PROCESS_TYPE.get(kind, "change")],
            "action": kind,
            "id": str(payload.get("event_id", "")),
            "module": "daemoneye",
            "dataset": "daemoneye.process",
        },
        "host": {"name": host, "hostname": host},
        "observer": {"product": "DaemonEye", "vendor": "DaemonEye", "version": __version__},
        "process": process,
        "daemoneye": {
            key: payload.get(key)
            for key in ("kind", "old_value", "new_value", "partial", "source", "unit")
        },
    }
    if payload.get("uid") is not None or payload.get("user") is not None:
        user = {
            "id": None if payload.get("uid") is None else str(payload["uid"]),
            "name": payload.get("user"),
        }
        doc["user"] = {key: value for key, value in user.items() if value is not None}
    if payload.get("container_id") is not None:
        doc["container"] = {"id": payload["container_id"]}
        if payload.get("container_runtime") is not None:
            doc["container"]["runtime"] = payload["container_runtime"]
    return doc
