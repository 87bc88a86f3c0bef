"""A process event as the stream sends it: the native payload every format starts from.

A process event payload says what happened (`event`: `process.exec`, `process.exit`,
`process.rename` …) to which instance, with the process as the agent knew it at that moment:

    {"event": "process.exec", "event_id": "web1/exec/4242/1733540000.12/1733540000.13",
     "ts": 1733540000.13, "host": "web1", "kind": "exec", "pid": 4242, "ppid": 1,
     "start_time": 1733540000.12, "name": "sh", "exe": "/usr/bin/dash",
     "cmdline": "/bin/sh -c :", "argv": ["/bin/sh", "-c", ":"], "cwd": "/", "uid": 0,
     "user": "root", "gid": 0, "container_runtime": null, "container_id": null, "unit": null,
     "exit_code": null, "old_value": null, "new_value": null, "partial": false, "truncated": false,
     "source": "netlink"}

`event_id` is the same for the same event every time it is built, so a pipeline can drop
duplicates. Alert payloads (`alerts.alert_payload`) start with `alert.`; `is_process_event`
tells the two apart for the formats and the sinks.
"""

from __future__ import annotations

from typing import Any

from daemoneye.models import ProcessEvent, ProcessRecord

PROCESS_EVENT_PREFIX = "process."
# A command line longer than this (in characters, arguments together) is cut in the payload and
# marked `truncated`: a process may hold megabytes of argv, the stream is not where it goes
# whole (the store keeps it; `daemoneye processes show` prints it).
MAX_ARGV_CHARS = 32 * 1024


def is_process_event(payload: Any) -> bool:
    return str(payload.get("event", "")).startswith(PROCESS_EVENT_PREFIX)


def process_payload(event: ProcessEvent, record: ProcessRecord | None, host: str) -> dict[str, Any]:
    """The native payload of `event`; `record` is the instance as known then (None: only what
    the event itself carries)."""
    argv = (
        list(record.cmdline)
        if record is not None and record.cmdline
        else list(event.cmdline)
        if event.cmdline
        else None
    )
    truncated = argv is not None and sum(len(arg) for arg in argv) > MAX_ARGV_CHARS
    if truncated and argv is not None:
        argv = _cut(argv)
    exe = event.exe if event.exe is not None else record.exe if record is not None else None
    ppid = event.ppid if event.ppid is not None else record.ppid if record is not None else None
    return {
        "event": PROCESS_EVENT_PREFIX + event.kind,
        "event_id": f"{host}/{event.kind}/{event.pid}/{event.start_time!r}/{event.ts!r}",
        "ts": event.ts,
        "host": host,
        "kind": event.kind,
        "pid": event.pid,
        "ppid": ppid,
        "start_time": event.start_time,
        "name": record.name if record is not None else None,
        "exe": exe,
        "cmdline": " ".join(argv) if argv is not None else None,
        "argv": argv,
        "cwd": record.cwd if record is not None else None,
        "uid": record.uid if record is not None else None,
        "user": record.user if record is not None else None,
        "gid": record.gid if record is not None else None,
        "container_runtime": record.container_runtime if record is not None else None,
        "container_id": record.container_id if record is not None else None,
        "unit": record.unit if record is not None else None,
        "exit_code": event.exit_code,
        "old_value": event.old_value,
        "new_value": event.new_value,
        "partial": event.partial,
        "truncated": truncated,
        "source": event.source,
    }


def _cut(argv: list[str]) -> list[str]:
    """The arguments that fit in MAX_ARGV_CHARS, the last one shortened."""
    kept: list[str] = []
    room = MAX_ARGV_CHARS
    for arg in argv:
        if len(arg) >= room:
            kept.append(arg[:room])
            break
        kept.append(arg)
        room -= len(arg)
    return kept


def weight(payload: dict[str, Any]) -> int:
    """About how many bytes `payload` holds in memory, for the stream's queue bound."""
    text = sum(len(payload.get(key) or "") for key in ("exe", "cwd", "name", "user"))
    return 600 + text + 2 * len(payload.get("cmdline") or "")
