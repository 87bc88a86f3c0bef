"""The connection to the daemon as the header shows it, and the header's summary line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from daemoneye.models import SEVERITIES
from daemoneye.tui.logic.format import format_duration, format_time, safe_cell
from daemoneye.tui.logic.severity import label

Part = tuple[str, str]  # text, tone


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """Where the dashboard stands with the daemon."""

    state: str = "connecting"  # connecting | connected | disconnected
    host: str = ""
    role: str = ""  # admin | reader, from hello
    peer_uid: int | None = None
    since: float = 0.0  # when the state last changed
    reason: str = ""  # why the connection was lost
    retry_in: float | None = None
    last_data: float | None = None  # when data last arrived (kept while disconnected)
    private_daemon: str = ""  # "private daemon pid 4242" when the dashboard started one
    # Several hosts (`--host a --host b`): (label, up) of each, and the one shown
    hosts: tuple[tuple[str, bool], ...] = ()
    current_host: str = ""

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    @property
    def admin(self) -> bool:
        return self.connected and self.role == "admin"


def hosts_parts(hosts: tuple[tuple[str, bool], ...]) -> list[Part]:
    """` · hosts 2/3 (db down)`: how many of several hosts answer, and which do not."""
    if len(hosts) < 2:
        return []
    down = [safe_cell(label, 16) for label, up in hosts if not up]
    parts: list[Part] = [(f" · hosts {len(hosts) - len(down)}/{len(hosts)}", "dim")]
    if down:
        parts.append((f" ({', '.join(down)} down)", "critical"))
    return parts


def connection_parts(connection: ConnectionState, now: float) -> list[Part]:
    if connection.state == "connected":
        parts: list[Part] = [("● connected", "ok")]
        if connection.role:
            parts.append((f" ({connection.role})", "dim"))
    elif connection.state == "disconnected":
        text = "○ DISCONNECTED"
        if connection.retry_in is not None:
            text += f" · retry in {connection.retry_in:.0f}s"
        parts = [(text, "critical")]
        if connection.last_data is not None:
            parts.append((f" · data from {format_time(connection.last_data, now)}", "dim"))
        elif connection.since:
            parts.append((f" · for {format_duration(now - connection.since)}", "dim"))
    else:
        parts = [("◌ connecting…", "medium")]
    if connection.private_daemon:
        parts.append((f" · {connection.private_daemon}", "medium"))
    return parts


def header_parts(
    connection: ConnectionState,
    processes: int,
    open_alerts: Mapping[str, int],
    rules: int,
    rule_problems: int,
    now: float,
) -> list[Part]:
    """The header line: host, connection state, counts."""
    host = safe_cell(connection.host, 24) if connection.host else "daemoneye"
    if connection.current_host and connection.current_host != connection.host:
        host = safe_cell(connection.current_host, 24) + (f" ({host})" if connection.host else "")
    parts: list[Part] = [(host, "title"), ("  ", "")]
    parts.extend(connection_parts(connection, now))
    parts.extend(hosts_parts(connection.hosts))
    parts.append((f"  {processes} procs", ""))
    parts.append(("  alerts", ""))
    if not any(open_alerts.values()):
        parts.append((" none", "dim"))
    for severity in reversed(SEVERITIES):
        count = open_alerts.get(severity, 0)
        if count:
            parts.append((" ", ""))
            parts.append((f"{count} {label(severity)}", severity))
    parts.append((f"  rules {rules}", ""))
    if rule_problems:
        parts.append((f" {rule_problems}⚠", "high"))
    return parts
