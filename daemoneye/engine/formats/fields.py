"""What the standard formats read from a native alert payload: the process it names, as far as
the rule's result row carries it, and the rule's ATT&CK technique ids."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TECHNIQUE = re.compile(r"^(?:attack\.)?(t\d{4}(?:\.\d{3})?)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class AlertProcess:
    """The process an alert names. Only pid and start_time are sure; the rest is present when
    the rule's query selected it (`exe`, `name`, `cmdline`/`argv`, `uid`, `user`, `ppid`, `cwd`)."""

    pid: int | None
    start_time: float | None
    name: str | None
    exe: str | None
    cmdline: str | None
    argv: tuple[str, ...] | None
    cwd: str | None
    uid: int | None
    user: str | None
    ppid: int | None


def _text(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _argv(row: Mapping[str, Any]) -> tuple[str, ...] | None:
    raw = row.get("argv")
    if not isinstance(raw, str):
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
        return tuple(parsed)
    return None


def alert_process(payload: Mapping[str, Any]) -> AlertProcess:
    row = payload.get("row")
    row = row if isinstance(row, Mapping) else {}
    start = payload.get("start_time")
    return AlertProcess(
        pid=_int(payload.get("pid")),
        start_time=float(start) if isinstance(start, int | float) else None,
        name=_text(row, "name"),
        exe=_text(row, "exe"),
        cmdline=_text(row, "cmdline"),
        argv=_argv(row),
        cwd=_text(row, "cwd"),
        uid=_int(row.get("uid")),
        user=_text(row, "user"),
        ppid=_int(row.get("ppid")),
    )


def techniques(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """ATT&CK technique ids among the rule's tags (`T1059`, `attack.t1059.004` → `T1059.004`)."""
    found: list[str] = []
    for tag in payload.get("tags") or ():
        match = _TECHNIQUE.match(str(tag))
        if match and match.group(1).upper() not in found:
            found.append(match.group(1).upper())
    return tuple(found)


def epoch_ms(value: Any) -> int | None:
    return round(float(value) * 1000) if isinstance(value, int | float) else None
