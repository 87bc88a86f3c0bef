"""The syslog sink: RFC 5424 messages to a local Unix datagram socket (`/dev/log`), or to a
collector over UDP (RFC 5426) or TCP with octet-counting framing (RFC 6587 §3.4.1).

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [daemoneye@32473 rule="…" …] MSG

PRI is facility * 8 + the alert's severity mapped to a syslog severity. MSGID is the event
(`alert.raised`, `alert.reopened`). The structured data carries the fields a pipeline filters
on; 32473 is the private enterprise number RFC 5612 reserves for examples and documentation —
DaemonEye has none of its own. MSG is UTF-8 without a BOM (RFC 5424 MSG-ANY), which receivers
that do not expect the BOM show cleanly.

Delivery guarantees differ by transport: a Unix socket or TCP refuses when the receiver is
down (the alert is retried); UDP cannot tell, so a UDP send counts as delivered.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Mapping
from typing import Any

from daemoneye.config.schema import SyslogSinkConfig
from daemoneye.config.sink_values import SYSLOG_FACILITY_CODES, SyslogAddress, parse_syslog_address
from daemoneye.engine.formats import document
from daemoneye.engine.sinks.base import SinkError, alert_text, iso_time
from daemoneye.engine.stream_payload import is_process_event
from daemoneye.errors import ConfigError
from daemoneye.text import json_text, shorten, visible

SD_ID = "daemoneye@32473"
# Alert severity → syslog severity (RFC 5424 table 2).
SYSLOG_SEVERITY = {"info": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}
# Longest message per transport; a longer MSG is cut (RFC 5426 asks UDP senders for ≤ 2048).
MAX_MESSAGE_BYTES = {"unix": 8192, "udp": 2048, "tcp": 8192}
_SD_FIELDS = (
    ("alert_id", "alert_id"),
    ("event_id", "event_id"),
    ("rule", "rule_id"),
    ("severity", "severity"),
    ("pid", "pid"),
    ("start_time", "start_time"),
    ("count", "count"),
    ("kind", "kind"),
)


def _header_token(text: str, limit: int) -> str:
    """A header field: printable ASCII without spaces, at most `limit` long, '-' if empty."""
    token = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return token or "-"


def _sd_value(value: object) -> str:
    """A PARAM-VALUE: control, bidi and format characters made visible, then '"', '\\' and ']'
    escaped (RFC 5424 §6.3.3)."""
    return visible(str(value)).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_rfc5424(
    payload: Mapping[str, Any],
    *,
    facility: str,
    app_name: str,
    hostname: str,
    procid: int,
    max_bytes: int = 8192,
    fmt: str = "native",
) -> bytes:
    """The RFC 5424 message for one alert payload: structured data from the payload, and as
    MSG the alert as a line of text (`native`) or its OCSF/ECS document as compact JSON."""
    severity = SYSLOG_SEVERITY.get(
        str(payload.get("severity")), 6 if is_process_event(payload) else 4
    )
    pri = SYSLOG_FACILITY_CODES[facility] * 8 + severity
    ts = payload.get("ts")
    timestamp = iso_time(float(ts)) if isinstance(ts, int | float) else "-"
    params = " ".join(
        f'{name}="{_sd_value(payload[key])}"'
        for name, key in _SD_FIELDS
        if payload.get(key) is not None
    )
    structured = f"[{SD_ID} {params}]" if params else "-"
    header = (
        f"<{pri}>1 {timestamp} {_header_token(hostname, 255)} "
        f"{_header_token(app_name, 48)} {_header_token(str(procid), 128)} "
        f"{_header_token(str(payload.get('event', 'alert')), 32)} {structured} "
    )
    head = header.encode("ascii", "replace")
    room = max(0, max_bytes - len(head))
    body = _message(payload, fmt, room)
    if len(body) > room:
        body = body[:room].decode("utf-8", "ignore").encode("utf-8")  # cut on a character
    return head + body


def _message(payload: Mapping[str, Any], fmt: str, room: int) -> bytes:
    """MSG: the alert as text, or its document as JSON. A document that does not fit in `room`
    (UDP's 2048 bytes) is sent without the rule's result row rather than cut into invalid JSON;
    only if even that does not fit is it cut."""
    if fmt == "native":
        return alert_text(payload).encode("utf-8", "backslashreplace")
    body = json_text(document(payload, fmt), compact=True).encode("utf-8", "backslashreplace")
    if len(body) > room:
        slim = {**payload, "row": {}}
        if is_process_event(payload):  # an event's bulk is its command line
            slim = {**payload, "argv": None, "cmdline": shorten(str(payload.get("cmdline")), 256)}
        body = json_text(document(slim, fmt), compact=True).encode("utf-8", "backslashreplace")
    return body


class SyslogSink:
    """Sends each alert as one RFC 5424 message to `address`."""

    name = "syslog"

    def __init__(
        self,
        address: SyslogAddress,
        *,
        facility: str = "daemon",
        app_name: str = "daemoneye",
        hostname: str | None = None,
        timeout: float = 5.0,
        fmt: str = "native",
    ) -> None:
        self._format = fmt
        if facility not in SYSLOG_FACILITY_CODES:
            raise ValueError(f"unknown syslog facility {facility!r}")
        self.address = address
        self._facility = facility
        self._app_name = app_name
        self._hostname = hostname or socket.gethostname()
        self._timeout = timeout
        self._sock: socket.socket | None = None

    @property
    def destination(self) -> str:
        if self.address.transport == "unix":
            return self.address.path
        return f"{self.address.transport}://{self.address.host}:{self.address.port}"

    def deliver(self, payload: Mapping[str, Any]) -> None:
        message = format_rfc5424(
            payload,
            facility=self._facility,
            app_name=self._app_name,
            hostname=self._hostname,
            procid=os.getpid(),
            max_bytes=MAX_MESSAGE_BYTES[self.address.transport],
            fmt=self._format,
        )
        try:
            sock = self._connect()
            if self.address.transport == "tcp":
                sock.sendall(f"{len(message)} ".encode("ascii") + message)
            else:
                sock.send(message)
        except OSError as exc:
            self._drop()  # reconnect next time: the receiver may have been restarted
            raise SinkError(
                f"cannot send to syslog at {self.destination}: {exc.strerror or exc}"
            ) from exc

    def _connect(self) -> socket.socket:
        if self._sock is not None and self.address.transport == "tcp" and _peer_closed(self._sock):
            self._drop()
        if self._sock is not None:
            return self._sock
        address = self.address
        if address.transport == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(address.path)
            except OSError:
                sock.close()
                raise
        elif address.transport == "udp":
            family, kind, proto, _, target = socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.connect(target)  # a connected UDP socket reports ICMP port-unreachable
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection((address.host, address.port), timeout=self._timeout)
        self._sock = sock
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()

    def reopen(self) -> None:
        """Reconnect at the next alert (e.g. after the local syslog daemon restarted)."""
        self._drop()

    def close(self) -> None:
        self._drop()


def _peer_closed(sock: socket.socket) -> bool:
    """True when a TCP peer has closed (or reset) the connection: sending on it would appear
    to succeed and the message would be lost."""
    # poll, not select: select() refuses descriptors above 1023, and the daemon holds thousands.
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    try:
        if not poller.poll(0):
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def build(section: SyslogSinkConfig) -> SyslogSink:
    """The sink of `[sinks.syslog]`."""
    try:
        address = parse_syslog_address(section.address)
    except ValueError as exc:
        raise ConfigError(f"sinks.syslog.address: {exc}") from None
    return SyslogSink(
        address, facility=section.facility, app_name=section.app_name, fmt=section.format
    )
