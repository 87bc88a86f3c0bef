"""Alerts as OCSF Detection Findings (class 2004, category 2 Findings; OCSF 1.5.0).

https://schema.ocsf.io/1.5.0/classes/detection_finding — `activity_id` 1 Create for a new alert
and a reopened one's first report, 2 Update for a repeat, 3 Close when it is closed; the rule
is the finding's analytic (type 1 Rule); the process instance is the finding's evidence. What has
no OCSF attribute (the rule's result row, the dedup occurrence) goes under `unmapped`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemoneye import __version__
from daemoneye.engine.formats.fields import alert_process, epoch_ms, techniques

OCSF_VERSION = "1.5.0"
CLASS_UID = 2004  # Detection Finding
CATEGORY_UID = 2  # Findings

# (activity_id, activity_name) by the payload's event
_ACTIVITY = {
    "alert.raised": (1, "Create"),
    "alert.reopened": (1, "Create"),
    "alert.repeated": (2, "Update"),
    "alert.acknowledged": (2, "Update"),
    "alert.closed": (3, "Close"),
}
_SEVERITY = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
_SEVERITY_NAME = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical", 0: "Unknown"}
# (status_id, status) by the alert's state
_STATUS = {"open": (1, "New"), "acknowledged": (2, "In Progress"), "closed": (4, "Resolved")}


def _process(payload: Mapping[str, Any]) -> dict[str, Any]:
    proc = alert_process(payload)
    doc: dict[str, Any] = {"pid": proc.pid}
    if proc.start_time is not None:
        doc["created_time"] = epoch_ms(proc.start_time)
    if proc.name is not None:
        doc["name"] = proc.name
    if proc.cmdline is not None:
        doc["cmd_line"] = proc.cmdline
    if proc.exe is not None:
        doc["file"] = {"path": proc.exe, "name": proc.exe.rsplit("/", 1)[-1], "type_id": 1}
    if proc.cwd is not None:
        doc["working_directory"] = proc.cwd
    if proc.uid is not None or proc.user is not None:
        doc["user"] = {
            key: value
            for key, value in (
                ("uid", None if proc.uid is None else str(proc.uid)),
                ("name", proc.user),
            )
            if value is not None
        }
    if proc.ppid is not None:
        doc["parent_process"] = {"pid": proc.ppid}
    return doc


def alert_document(payload: Mapping[str, Any]) -> dict[str, Any]:
    """One alert payload (alerts.alert_payload) as an OCSF Detection Finding."""
    activity_id, activity_name = _ACTIVITY.get(str(payload.get("event")), (99, "Other"))
    severity_id = _SEVERITY.get(str(payload.get("severity")), 0)
    status_id, status = _STATUS.get(str(payload.get("state")), (0, "Unknown"))
    host = str(payload.get("host", ""))
    rule_id = str(payload.get("rule_id", ""))
    finding: dict[str, Any] = {
        "uid": f"{host}/{payload.get('alert_id')}",
        "title": str(payload.get("title", "")),
        "desc": str(payload.get("description", "")),
        "analytic": {
            "uid": rule_id,
            "name": str(payload.get("rule_name", rule_id)),
            "type_id": 1,
            "type": "Rule",
        },
        "first_seen_time": epoch_ms(payload.get("first_seen")),
        "last_seen_time": epoch_ms(payload.get("last_seen")),
        "types": ["Process"],
        "product": {"name": "DaemonEye", "vendor_name": "DaemonEye", "version": __version__},
    }
    # The rule's tags carry technique ids, not names; OCSF wants a name too, so it is the id.
    attacks = [
        {"technique": {"uid": technique, "name": technique}} for technique in techniques(payload)
    ]
    if attacks:
        finding["attacks"] = attacks
    return {
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"Detection Finding: {activity_name}",
        "time": epoch_ms(payload.get("ts")),
        "severity_id": severity_id,
        "severity": _SEVERITY_NAME[severity_id],
        "status_id": status_id,
        "status": status,
        "count": payload.get("count"),
        "message": str(payload.get("title", "")),
        "is_alert": True,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": str(payload.get("event_id", "")),
            "product": {"name": "DaemonEye", "vendor_name": "DaemonEye", "version": __version__},
            "log_name": "alerts",
        },
        "device": {"hostname": host, "name": host, "type_id": 0, "type": "Unknown"},
        "finding_info": finding,
        "evidences": [{"process": _process(payload)}],
        "unmapped": {
            "daemoneye": {
                "event": payload.get("event"),
                "alert_id": payload.get("alert_id"),
                "occurrence": payload.get("occurrence"),
                "rule_severity": payload.get("severity"),
                "row": payload.get("row"),
            }
        },
    }


# -- process events: OCSF Process Activity ------------------------------------------------

PROCESS_CLASS_UID = 1007  # Process Activity
SYSTEM_CATEGORY_UID = 1  # System Activity
# (activity_id, activity_name) by the event's kind; what OCSF has no activity for is 99 Other,
# named after the kind.
_PROCESS_ACTIVITY = {
    "exec": (1, "Launch"),
    "exit": (2, "Terminate"),
    "ptrace": (4, "Inject"),
    "uid": (5, "Set User ID"),
}


def _event_process(payload: Mapping[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"pid": payload.get("pid")}
    if isinstance(payload.get("start_time"), int | float):
        doc["created_time"] = epoch_ms(payload["start_time"])
        doc["uid"] = f"{payload.get('host', '')}/{payload.get('pid')}/{payload['start_time']!r}"
    exe = payload.get("exe")
    optional: dict[str, Any] = {
        "name": payload.get("name"),
        "cmd_line": payload.get("cmdline"),
        "file": {"path": exe, "name": exe.rsplit("/", 1)[-1], "type_id": 1}
        if isinstance(exe, str)
        else None,
        "working_directory": payload.get("cwd"),
        "user": _event_user(payload),
        "parent_process": {"pid": payload["ppid"]} if payload.get("ppid") is not None else None,
    }
    if payload.get("kind") == "exit" and payload.get("ts") is not None:
        optional["terminated_time"] = epoch_ms(payload.get("ts"))
    doc.update({key: value for key, value in optional.items() if value is not None})
    return doc


def _event_user(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    user = {
        key: value
        for key, value in (
            ("uid", None if payload.get("uid") is None else str(payload["uid"])),
            ("name", payload.get("user")),
        )
        if value is not None
    }
    return user or None


def process_document(payload: Mapping[str, Any]) -> dict[str, Any]:
    """One process event payload (engine.stream_payload) as an OCSF Process Activity."""
    kind = str(payload.get("kind", ""))
    activity_id, activity_name = _PROCESS_ACTIVITY.get(kind, (99, kind.replace("_", " ").title()))
    host = str(payload.get("host", ""))
    process = _event_process(payload)
    # The actor is who did it: the parent for a launch, the tracer for an inject, the process
    # itself for what it did to itself.
    if kind == "exec" and payload.get("ppid") is not None:
        actor: dict[str, Any] = {"process": {"pid": payload["ppid"]}}
    elif kind == "ptrace" and str(payload.get("new_value", "")).isdigit():
        actor = {"process": {"pid": int(str(payload["new_value"]))}}
    else:
        actor = {"process": {"pid": payload.get("pid")}}
    doc: dict[str, Any] = {
        "class_uid": PROCESS_CLASS_UID,
        "class_name": "Process Activity",
        "category_uid": SYSTEM_CATEGORY_UID,
        "category_name": "System Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": PROCESS_CLASS_UID * 100 + activity_id,
        "type_name": f"Process Activity: {activity_name}",
        "time": epoch_ms(payload.get("ts")),
        "severity_id": 1,
        "severity": "Informational",
        "message": f"{kind} pid {payload.get('pid')}",
        "metadata": {
            "version": OCSF_VERSION,
            "uid": str(payload.get("event_id", "")),
            "product": {"name": "DaemonEye", "vendor_name": "DaemonEye", "version": __version__},
            "log_name": "process_events",
        },
        "device": {"hostname": host, "name": host, "type_id": 0, "type": "Unknown"},
        "actor": actor,
        "process": process,
        "unmapped": {
            "daemoneye": {
                key: payload.get(key)
                for key in ("kind", "old_value", "new_value", "partial", "source", "unit")
            }
        },
    }
    if kind == "exit" and payload.get("exit_code") is not None:
        doc["exit_code"] = payload["exit_code"]
    if payload.get("container_id") is not None or payload.get("container_runtime") is not None:
        container = {
            "uid": payload.get("container_id"),
            "runtime": payload.get("container_runtime"),
        }
        doc["container"] = {key: value for key, value in container.items() if value is not None}
    return doc
