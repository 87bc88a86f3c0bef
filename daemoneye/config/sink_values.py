"""Value formats of the sink keys: syslog addresses and facilities, webhook URLs and headers,
and how `config show` redacts the ones that may hold a secret."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# RFC 5424 facility codes (12-15 are ntp, log audit, log alert and clock; 16-23 local0-7).
SYSLOG_FACILITY_CODES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "security": 13,
    "console": 14,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
SYSLOG_FACILITIES = tuple(SYSLOG_FACILITY_CODES)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_SET_BY_CLIENT = frozenset({"content-length", "host", "transfer-encoding", "connection"})


@dataclass(frozen=True, slots=True)
class SyslogAddress:
    """Where the syslog sink sends: a Unix datagram socket, or a UDP or TCP host and port."""

    transport: str  # 'unix', 'udp' or 'tcp'
    path: str = ""  # unix
    host: str = ""  # udp, tcp
    port: int = 514


def parse_syslog_address(text: str) -> SyslogAddress:
    """'/dev/log' or 'unix:/dev/log' (a Unix datagram socket), 'udp://host:port' or
    'tcp://host:port' (port 514 when omitted; IPv6 as [::1]). ValueError when malformed."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        path = path[2:] if path.startswith("//") else path
        if not path.startswith("/"):
            raise ValueError(f"expected an absolute socket path after 'unix:', got {text!r}")
        return SyslogAddress("unix", path=path)
    if text.startswith("/"):
        return SyslogAddress("unix", path=text)
    parts = urlsplit(text)
    if parts.scheme not in ("udp", "tcp") or not parts.hostname:
        raise ValueError(
            "expected '/dev/log', 'unix:/path', 'udp://host:port' or "
            f"'tcp://host:port', got {text!r}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"expected only a host and a port after {parts.scheme}://, got {text!r}")
    port = parts.port  # ValueError when not a number in 0-65535
    if port == 0:
        raise ValueError(f"port 0 is not a valid syslog port in {text!r}")
    return SyslogAddress(parts.scheme, host=parts.hostname, port=port or 514)


def check_syslog_address(value: str) -> None:
    parse_syslog_address(value)


def check_app_name(value: str) -> None:
    if not 1 <= len(value) <= 48 or not all(33 <= ord(c) <= 126 for c in value):
        raise ValueError(
            f"expected 1 to 48 printable ASCII characters without spaces "
            f"(RFC 5424 APP-NAME), got {value!r}"
        )


def check_url(value: str) -> None:
    if not value:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {redact_url(value)!r}")
    _ = parts.port  # ValueError for a malformed port


def redact_url(value: str) -> str:
    """The URL without what may be a secret: a password, the path and the query (a Slack-style
    webhook URL carries its token in the path)."""
    if not value:
        return value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "<hidden: malformed URL>"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    shown = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    return shown + ("/<hidden>" if parts.path.strip("/") or parts.query else "/")


def check_headers(value: tuple[tuple[str, str], ...]) -> None:
    for name, text in value:
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        if name.lower() in _SET_BY_CLIENT:
            raise ValueError(f"header {name!r} is set by the HTTP client and cannot be configured")
        if any(c in text for c in "\r\n\0"):
            raise ValueError(f"the value of header {name!r} contains a line break or NUL")


def redact_headers(value: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return {name: "<hidden>" for name, _ in value}
