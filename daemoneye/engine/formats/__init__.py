"""The shapes an alert or a streamed process event can leave the daemon in: `native` (the
payload itself: alerts.alert_payload, engine.stream_payload), `ocsf` (an OCSF Detection Finding;
a Process Activity for an event) or `ecs` (an Elastic Common Schema document). Each format is one
module here with `alert_document(payload)` and `process_document(payload)`; a sink section's
`format` key names one of `FORMATS`; sinks call `document`, which picks the one for the
payload. The payload itself is what the outbox keeps, so changing a sink's format applies to
alerts still waiting to be delivered too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from daemoneye.config.schema import ALERT_FORMATS as FORMATS
from daemoneye.engine.formats import ecs, ocsf
from daemoneye.engine.stream_payload import is_process_event

__all__ = ["FORMATS", "Document", "alert_document", "document"]

Document = Mapping[str, Any]


def _native(payload: Mapping[str, Any]) -> Document:
    return payload


_ALERT_DOCUMENTS: dict[str, Callable[[Mapping[str, Any]], Document]] = {
    "native": _native,
    "ocsf": ocsf.alert_document,
    "ecs": ecs.alert_document,
}
_PROCESS_DOCUMENTS: dict[str, Callable[[Mapping[str, Any]], Document]] = {
    "native": _native,
    "ocsf": ocsf.process_document,
    "ecs": ecs.process_document,
}


def alert_document(payload: Mapping[str, Any], fmt: str) -> Document:
    """The alert payload in format `fmt` (one of FORMATS)."""
    try:
        render = _ALERT_DOCUMENTS[fmt]
    except KeyError:
        raise ValueError(f"unknown alert format {fmt!r}; one of {', '.join(FORMATS)}") from None
    return render(payload)


def document(payload: Mapping[str, Any], fmt: str) -> Document:
    """An alert or a process event payload in format `fmt`."""
    if not is_process_event(payload):
        return alert_document(payload, fmt)
    try:
        render = _PROCESS_DOCUMENTS[fmt]
    except KeyError:
        raise ValueError(f"unknown alert format {fmt!r}; one of {', '.join(FORMATS)}") from None
    return render(payload)
