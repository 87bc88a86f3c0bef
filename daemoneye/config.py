"""Layered, typed configuration (ARCHITECTURE.md §6).

Precedence, lowest first: built-in defaults < system file < user file < environment < flags.
Every value remembers the layer it came from, so `daemoneye config show` can say why a setting
has the value it has. Every problem names its file (and line) or variable, the key, and the
closest valid key.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from daemoneye.errors import ConfigError
from daemoneye.paths import MODE_ENV, Mode, Paths, default_mode, parse_mode, resolve_paths

CONFIG_ENV = "DAEMONEYE_CONFIG"
_RESERVED_ENV = {MODE_ENV, CONFIG_ENV}
# The seed's component prefixes: each names the section its variables set.
_COMPONENT_PREFIXES = (
    ("DAEMONEYE_AGENT_", "daemon"),
    ("DAEMONEYE_CLI_", "cli"),
    ("PROCMOND_", "collector"),
)

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
}
_NUMBER_WITH_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def _spec(kind: str, doc: str, *, lo: float | None = None, hi: float | None = None,
          choices: tuple[str, ...] = (), check: Callable[[Any], None] | None = None,
          redact: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A key's schema. `check` validates a coerced value (raising ValueError); `redact` gives
    the value `config show` prints for a key that may hold a secret."""
    return {"kind": kind, "doc": doc, "lo": lo, "hi": hi, "choices": choices, "check": check,
            "redact": redact}


# -- value formats of the sink keys ---------------------------------------------------------

# RFC 5424 facility codes (12-15 are ntp, log audit, log alert and clock; 16-23 local0-7).
SYSLOG_FACILITY_CODES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21,
    "local6": 22, "local7": 23,
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
        path = text[len("unix:"):]
        path = path[2:] if path.startswith("//") else path
        if not path.startswith("/"):
            raise ValueError(f"expected an absolute socket path after 'unix:', got {text!r}")
        return SyslogAddress("unix", path=path)
    if text.startswith("/"):
        return SyslogAddress("unix", path=text)
    parts = urlsplit(text)
    if parts.scheme not in ("udp", "tcp") or not parts.hostname:
        raise ValueError("expected '/dev/log', 'unix:/path', 'udp://host:port' or "
                         f"'tcp://host:port', got {text!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"expected only a host and a port after {parts.scheme}://, got {text!r}")
    port = parts.port  # ValueError when not a number in 0-65535
    if port == 0:
        raise ValueError(f"port 0 is not a valid syslog port in {text!r}")
    return SyslogAddress(parts.scheme, host=parts.hostname, port=port or 514)


def _check_syslog_address(value: str) -> None:
    parse_syslog_address(value)


def _check_app_name(value: str) -> None:
    if not 1 <= len(value) <= 48 or not all(33 <= ord(c) <= 126 for c in value):
        raise ValueError(f"expected 1 to 48 printable ASCII characters without spaces "
                         f"(RFC 5424 APP-NAME), got {value!r}")


def _check_url(value: str) -> None:
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


def _check_headers(value: tuple[tuple[str, str], ...]) -> None:
    for name, text in value:
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        if name.lower() in _SET_BY_CLIENT:
            raise ValueError(f"header {name!r} is set by the HTTP client and cannot be configured")
        if any(c in text for c in "\r\n\0"):
            raise ValueError(f"the value of header {name!r} contains a line break or NUL")


def _redact_headers(value: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return {name: "<hidden>" for name, _ in value}


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """How processes are observed."""

    interval: float = field(default=1.0, metadata=_spec(
        "duration", "Seconds between two /proc scans.", lo=0.1, hi=3600.0))
    update_interval: float = field(default=10.0, metadata=_spec(
        "duration", "How often changed rss/cpu/state values are written to the store.",
        lo=1.0, hi=3600.0))
    hash_executables: bool = field(default=True, metadata=_spec(
        "bool", "Compute the SHA-256 of every executable (in a worker thread, cached)."))
    hash_max_bytes: int = field(default=64 * 1024**2, metadata=_spec(
        "size", "Executables larger than this are not hashed.", lo=0, hi=16 * 1024**3))
    events: bool = field(default=True, metadata=_spec(
        "bool", "Use the kernel's process-event connector when permitted (root)."))


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where history is kept and for how long."""

    path: str = field(default="", metadata=_spec(
        "path", "Database file; empty means the mode's default path."))
    retention: float = field(default=7 * 86400.0, metadata=_spec(
        "duration", "Ended processes, events and alerts older than this are deleted.",
        lo=60.0, hi=3650 * 86400.0))
    max_bytes: int = field(default=1024**3, metadata=_spec(
        "size", "The oldest history is deleted when the database, not counting the audit log, "
        "grows past this (the audit log is bounded by audit_max_bytes).",
        lo=1024**2, hi=1024**4))
    retention_check_interval: float = field(default=300.0, metadata=_spec(
        "duration", "How often retention runs.", lo=1.0, hi=86400.0))
    audit_retention: float = field(default=90 * 86400.0, metadata=_spec(
        "duration", "Audit log entries older than this are pruned, under a signed checkpoint "
        "that keeps the rest of the chain verifiable.", lo=86400.0, hi=3650 * 86400.0))
    audit_max_bytes: int = field(default=64 * 1024**2, metadata=_spec(
        "size", "The oldest audit log entries are pruned (under a signed checkpoint) when the "
        "audit log grows past this.", lo=1024**2, hi=1024**4))


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The daemon process itself."""

    log_level: str = field(default="info", metadata=_spec(
        "enum", "Logging threshold on stderr.", choices=("debug", "info", "warning", "error")))
    socket: str = field(default="", metadata=_spec(
        "path", "The IPC socket; empty means the mode's default path."))
    admin_group: str = field(default="", metadata=_spec(
        "str", "Members of this group may use admin IPC methods (ack, close, enable, disable, "
        "reload, signal) besides root and the daemon's user; empty means nobody else."))
    max_clients: int = field(default=128, metadata=_spec(
        "int", "IPC connections served at once; more are refused with a message.",
        lo=1, hi=4096))
    client_queue: int = field(default=8 * 1024**2, metadata=_spec(
        "size", "Notifications waiting for one IPC client, at most; past this a client that "
        "does not read gets a resync instead.", lo=256 * 1024, hi=1024**3))
    admin_reserved_clients: int = field(default=8, metadata=_spec(
        "int", "Of max_clients, the connections only admins may take, so that readers can "
        "never lock root out of the admin methods; must be below max_clients.", lo=0, hi=4095))
    max_clients_per_uid: int = field(default=32, metadata=_spec(
        "int", "IPC connections one non-admin uid may hold at once (admins are exempt); 0 "
        "means no per-user cap.", lo=0, hi=4096))
    idle_timeout: float = field(default=300.0, metadata=_spec(
        "duration", "An IPC connection that sends no request and reads no live subscription "
        "for this long is closed with an error saying why.", lo=1.0, hi=7 * 86400.0))
    clients_queue_total: int = field(default=64 * 1024**2, metadata=_spec(
        "size", "Notifications waiting for all IPC clients together, at most; past this the "
        "largest queues are dropped and their clients get a resync.", lo=1024**2, hi=16 * 1024**3))
    refused_audit_rate: int = field(default=10, metadata=_spec(
        "int", "Refused admin calls of one uid written to the audit log per second (bursts of "
        "refused_audit_burst); the rest are counted in one summary entry per second.",
        lo=1, hi=10000))
    refused_audit_burst: int = field(default=20, metadata=_spec(
        "int", "Refused admin calls of one uid audited in a burst before refused_audit_rate "
        "applies.", lo=1, hi=100000))


@dataclass(frozen=True, slots=True)
class CliConfig:
    """Defaults of the command-line client."""

    output: str = field(default="table", metadata=_spec(
        "enum", "Output format of list commands.", choices=("table", "json", "ndjson", "csv")))


@dataclass(frozen=True, slots=True)
class TuiConfig:
    """The dashboard (`daemoneye` on a terminal)."""

    theme: str = field(default="daemoneye-dark", metadata=_spec(
        "str", "Dashboard theme: the name of a themes/*.toml theme. Choosing one from the "
               "command palette saves it here."))


@dataclass(frozen=True, slots=True)
class StdoutSinkConfig:
    """`[sinks.stdout]`: each new alert printed on the daemon's standard output."""

    enabled: bool = field(default=False, metadata=_spec(
        "bool", "Print each new alert on the daemon's stdout."))
    format: str = field(default="human", metadata=_spec(
        "enum", "One line per alert: 'human' text (control characters escaped) or 'json'.",
        choices=("human", "json")))


@dataclass(frozen=True, slots=True)
class FileSinkConfig:
    """`[sinks.file]`: each new alert appended to a file as one JSON object per line."""

    enabled: bool = field(default=False, metadata=_spec(
        "bool", "Append each new alert to `path` as a JSON line."))
    path: str = field(default="", metadata=_spec(
        "path", "The JSON-lines file (created 0600); reopened on SIGHUP and when it is renamed "
                "or deleted, for logrotate."))
    fsync: bool = field(default=True, metadata=_spec(
        "bool", "fsync after every alert, so an alert counts as delivered only once it is on "
                "disk."))


@dataclass(frozen=True, slots=True)
class SyslogSinkConfig:
    """`[sinks.syslog]`: each new alert sent as an RFC 5424 syslog message."""

    enabled: bool = field(default=False, metadata=_spec(
        "bool", "Send each new alert to syslog."))
    address: str = field(default="/dev/log", metadata=_spec(
        "str", "'/dev/log' (a Unix datagram socket), 'udp://host:port' or 'tcp://host:port' "
               "(RFC 6587 octet counting); port 514 when omitted.",
        check=_check_syslog_address))
    facility: str = field(default="daemon", metadata=_spec(
        "enum", "Syslog facility of the messages.", choices=SYSLOG_FACILITIES))
    app_name: str = field(default="daemoneye", metadata=_spec(
        "str", "RFC 5424 APP-NAME of the messages.", check=_check_app_name))


@dataclass(frozen=True, slots=True)
class WebhookSinkConfig:
    """`[sinks.webhook]`: each new alert POSTed as JSON to a URL."""

    enabled: bool = field(default=False, metadata=_spec(
        "bool", "POST each new alert to `url`."))
    url: str = field(default="", metadata=_spec(
        "str", "http:// or https:// endpoint; a 2xx answer means delivered.",
        check=_check_url, redact=redact_url))
    timeout: float = field(default=10.0, metadata=_spec(
        "duration", "How long one delivery may take before it is retried later.",
        lo=0.1, hi=300.0))
    verify_tls: bool = field(default=True, metadata=_spec(
        "bool", "Verify the server's TLS certificate and host name (keep this on)."))
    ca_file: str = field(default="", metadata=_spec(
        "path", "PEM file of CA certificates to trust instead of the system's."))
    headers: tuple[tuple[str, str], ...] = field(default=(), metadata=_spec(
        "table", "Extra HTTP headers, e.g. Authorization (a TOML table; JSON object in the "
                 "environment). Values are hidden by `config show`.",
        check=_check_headers, redact=_redact_headers))


@dataclass(frozen=True, slots=True)
class SinksConfig:
    """Where alerts go besides the store."""

    stdout: StdoutSinkConfig = StdoutSinkConfig()
    file: FileSinkConfig = FileSinkConfig()
    syslog: SyslogSinkConfig = SyslogSinkConfig()
    webhook: WebhookSinkConfig = WebhookSinkConfig()


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """`[delivery]`: retries of alerts a sink did not take."""

    max_attempts: int = field(default=20, metadata=_spec(
        "int", "Attempts per alert and sink before it is dead-lettered.", lo=1, hi=10_000))
    backoff_base: float = field(default=1.0, metadata=_spec(
        "duration", "Delay after the first failure; doubles with every attempt (x0.5-1.5 "
                    "jitter).", lo=0.01, hi=3600.0))
    backoff_max: float = field(default=300.0, metadata=_spec(
        "duration", "Longest delay between two attempts (jitter included).", lo=0.1,
        hi=86400.0))
    max_held_alerts: int = field(default=10_000, metadata=_spec(
        "int", "New alerts kept in memory while the store cannot be written (disk full); "
               "they go to the sinks at once and into the store when it is writable again. "
               "Alerts beyond this are counted and dropped.", lo=1, hi=1_000_000))
    max_held_bytes: int = field(default=16 * 1024**2, metadata=_spec(
        "size", "Memory those held alerts may take (their JSON payloads).", lo=64 * 1024,
        hi=1024**3))


@dataclass(frozen=True, slots=True)
class Config:
    collector: CollectorConfig = CollectorConfig()
    store: StoreConfig = StoreConfig()
    daemon: DaemonConfig = DaemonConfig()
    cli: CliConfig = CliConfig()
    tui: TuiConfig = TuiConfig()
    sinks: SinksConfig = SinksConfig()
    delivery: DeliveryConfig = DeliveryConfig()


@dataclass(frozen=True, slots=True)
class Setting:
    """One effective value and the layer it came from."""

    key: str  # "section.key"
    value: Any
    origin: str
    doc: str


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    paths: Paths  # with store.path / daemon.socket overrides applied
    settings: tuple[Setting, ...]
    files_read: tuple[Path, ...]


def _is_group(cls: type[Any]) -> bool:
    """A dataclass whose fields are sections (`sinks` holds `sinks.webhook`, …), not keys."""
    return all("kind" not in f.metadata for f in fields(cls))


def _walk_sections(cls: type[Any], prefix: str) -> Iterator[tuple[str, type[Any], bool]]:
    """(dotted name, class, is a group) of every section and group under `cls`, depth first."""
    for f in fields(cls):
        name = prefix + f.name
        sub = type(getattr(cls(), f.name))
        group = _is_group(sub)
        yield name, sub, group
        if group:
            yield from _walk_sections(sub, name + ".")


# Sections hold keys ("sinks.webhook" → "sinks.webhook.url"); groups only hold sections.
SECTIONS: dict[str, type[Any]] = {
    name: cls for name, cls, group in _walk_sections(Config, "") if not group}
GROUPS: frozenset[str] = frozenset(name for name, _, group in _walk_sections(Config, "") if group)
KEYS: dict[str, dict[str, Any]] = {
    f"{section}.{f.name}": dict(f.metadata)
    for section, cls in SECTIONS.items() for f in fields(cls)
}


def _closest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def section_of(dotted: str) -> str | None:
    """The known section a dotted key belongs to (the longest that prefixes it), or None."""
    known = [s for s in SECTIONS if dotted.startswith(s + ".")]
    return max(known, key=len) if known else None


def unknown_key_message(dotted: str) -> str:
    if section_of(dotted) is None:
        section = dotted.rpartition(".")[0] or dotted
        if section not in GROUPS:
            candidates = list(SECTIONS) + sorted(GROUPS)
            return f"unknown section {section!r}{_closest(section, candidates)}"
    return f"unknown key {dotted!r}{_closest(dotted, list(KEYS))}"


def _parse_unit(raw: str, units: Mapping[str, float]) -> float | None:
    match = _NUMBER_WITH_UNIT.match(raw)
    if not match or match.group(2).lower() not in units:
        return None
    return float(match.group(1)) * units[match.group(2).lower()]


def coerce(dotted: str, raw: Any, *, from_text: bool) -> Any:
    """Turn a TOML value (or, when from_text, an environment/flag string) into the key's type.
    Raises ValueError with a message that names what is wrong with the value."""
    value = _coerce_kind(dotted, raw, from_text=from_text)
    check = KEYS[dotted]["check"]
    if check is not None:
        check(value)
    return value


def _coerce_table(raw: Any, *, from_text: bool) -> tuple[tuple[str, str], ...]:
    """A table of strings: a TOML table, or (from text) a JSON object."""
    table = raw
    if from_text and isinstance(raw, str):
        try:
            table = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, RecursionError):
            raise ValueError('expected a JSON object such as \'{"Authorization": "Bearer …"}\', '
                             f"got {raw!r}") from None
    if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise ValueError(f"expected a table of strings such as {{ Name = \"value\" }}, "
                         f"got {raw!r}")
    return tuple(table.items())


def _coerce_kind(dotted: str, raw: Any, *, from_text: bool) -> Any:
    spec = KEYS[dotted]
    kind = spec["kind"]
    value: Any
    if kind == "table":
        return _coerce_table(raw, from_text=from_text)
    if kind == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif from_text and isinstance(raw, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", raw):
            value = int(raw)
        else:
            raise ValueError(f"expected a whole number, got {raw!r}")
    elif kind == "bool":
        if isinstance(raw, bool):
            value = raw
        elif from_text and str(raw).strip().lower() in ("1", "true", "yes", "on"):
            value = True
        elif from_text and str(raw).strip().lower() in ("0", "false", "no", "off"):
            value = False
        else:
            raise ValueError(f"expected true or false, got {raw!r}")
        return value
    elif kind in ("duration", "size"):
        units = _DURATION_UNITS if kind == "duration" else _SIZE_UNITS
        if isinstance(raw, bool):
            raise ValueError(f"expected a {kind}, got {raw!r}")
        if isinstance(raw, int | float):
            number: float | None = float(raw)
        elif isinstance(raw, str):
            number = _parse_unit(raw, {**units, "": 1.0} if kind == "duration" else units)
        else:
            number = None
        if number is None or not math.isfinite(number):
            example = "'500ms', '10s', '5m', '7d'" if kind == "duration" else "'64MiB', '1GiB'"
            raise ValueError(f"expected a {kind} such as {example}, got {raw!r}")
        value = number if kind == "duration" else int(number)
    elif kind == "enum":
        if not isinstance(raw, str) or raw.strip().lower() not in spec["choices"]:
            raise ValueError(f"expected one of {', '.join(spec['choices'])}, got {raw!r}")
        return raw.strip().lower()
    elif kind in ("path", "str"):
        if not isinstance(raw, str):
            raise ValueError(f"expected a string, got {raw!r}")
        return os.path.expanduser(raw) if kind == "path" and raw else raw
    else:  # pragma: no cover - a schema error, caught by the tests over KEYS
        raise AssertionError(f"unknown kind {kind}")
    lo, hi = spec["lo"], spec["hi"]
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{raw!r} is out of range ({_fmt_bound(kind, lo)} to "
                         f"{_fmt_bound(kind, hi)})")
    return value


def _fmt_bound(kind: str, bound: float | None) -> str:
    if bound is None:
        return "unbounded"
    if kind == "duration":
        return f"{bound:g} s"
    if kind == "int":
        return str(int(bound))
    return f"{int(bound)} bytes"


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """Best-effort line number of `[section]` / `key =` in a TOML text, for error messages."""
    in_section = False
    header = re.compile(r"^\s*\[\s*" + re.escape(section) + r"\s*\]")
    for number, line in enumerate(text.splitlines(), start=1):
        if header.match(line):
            if key is None:
                return number
            in_section = True
        elif line.lstrip().startswith("["):
            in_section = False
        elif in_section and key is not None and re.match(
                r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=", line):
            return number
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse and validate one config file into {"section.key": value}."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    values: dict[str, Any] = {}
    for section, table in document.items():
        _read_table(path, text, section, table, values)
    return values


def _read_table(path: Path, text: str, section: str, table: Any, values: dict[str, Any]) -> None:
    """Validate `[section]` (or, for a group such as `[sinks]`, each section in it) into
    `values`."""
    where = _line_of(text, section, None)
    prefix = f"{path}:{where}" if where else str(path)
    if section not in SECTIONS and section not in GROUPS:
        parent = section.rpartition(".")[0]
        if parent in GROUPS and not isinstance(table, dict):
            raise ConfigError(f"{prefix}: {unknown_key_message(section)}")
        raise ConfigError(f"{prefix}: {unknown_key_message(section + '.')}")
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: {section!r} must be a table ([{section}])")
    if section in GROUPS:
        for name, sub in table.items():
            _read_table(path, text, f"{section}.{name}", sub, values)
        return
    for key, raw in table.items():
        dotted = f"{section}.{key}"
        line = _line_of(text, section, key) or _line_of(text, dotted, None)
        prefix = f"{path}:{line}" if line else str(path)
        if dotted not in KEYS:
            raise ConfigError(f"{prefix}: {unknown_key_message(dotted)}")
        try:
            values[dotted] = coerce(dotted, raw, from_text=False)
        except ValueError as exc:
            raise ConfigError(f"{prefix}: {dotted}: {exc}") from None


def env_key(name: str) -> str | None:
    """The dotted key an environment variable sets, None if it is not a config variable.
    Raises ConfigError for a variable that looks like ours but names no key."""
    if name in _RESERVED_ENV:
        return None
    for prefix, section in _COMPONENT_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix):].lower()
            dotted = rest.replace("__", ".") if "__" in rest else f"{section}.{rest}"
            break
    else:
        if not name.startswith("DAEMONEYE_"):
            return None
        rest = name[len("DAEMONEYE_"):].lower()
        if "__" not in rest:
            raise ConfigError(f"environment variable {name}: expected DAEMONEYE_<SECTION>__<KEY>"
                              f"{_closest(rest.replace('_', '.', 1), list(KEYS))}")
        dotted = rest.replace("__", ".")
    if dotted not in KEYS:
        raise ConfigError(f"environment variable {name}: {unknown_key_message(dotted)}")
    return dotted


def read_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """{"section.key": (value, variable name)}; generic DAEMONEYE_S__K beats component prefixes."""
    found: dict[str, tuple[Any, str]] = {}
    generic: dict[str, tuple[Any, str]] = {}
    for name in sorted(env):
        dotted = env_key(name)
        if dotted is None:
            continue
        try:
            value = coerce(dotted, env[name], from_text=True)
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}: {dotted}: {exc}") from None
        target = generic if name.startswith("DAEMONEYE_") and "__" in name and not any(
            name.startswith(p) for p, _ in _COMPONENT_PREFIXES) else found
        target[dotted] = (value, name)
    return {**found, **generic}


def _exists(path: Path) -> bool:
    """Whether a config file is there; a path we may not even look at is an error that says
    so, not a traceback (e.g. a home directory the user cannot traverse)."""
    try:
        return path.exists()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot access: {exc.strerror}") from None


def load_config(
    *,
    mode: Mode | None = None,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    euid: int | None = None,
) -> LoadedConfig:
    """Resolve the effective configuration. `flags` maps dotted keys to already-typed values
    (or strings, which are coerced like environment values)."""
    env = dict(os.environ) if env is None else dict(env)
    if mode is None:
        mode = default_mode(env, os.geteuid() if euid is None else euid)
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    paths = resolve_paths(mode, env)

    layers: list[tuple[str, dict[str, Any]]] = []
    files_read: list[Path] = []
    own_file = paths.user_config_file or paths.system_config_file
    for path in paths.config_files:
        label = "system file" if path == paths.system_config_file else "user file"
        if path == own_file and config_file is not None:
            path, label = config_file, "--config file"
            if not _exists(path):
                raise ConfigError(f"{path}: config file not found")
        if not _exists(path):
            continue
        layers.append((f"{label} {path}", read_config_file(path)))
        files_read.append(path)
    env_values = read_env(env)
    layers.append(("env", {k: v for k, (v, _) in env_values.items()}))
    flag_values: dict[str, Any] = {}
    for dotted, raw in (flags or {}).items():
        if dotted not in KEYS:
            raise ConfigError(f"flag: {unknown_key_message(dotted)}")
        try:
            flag_values[dotted] = coerce(dotted, raw, from_text=isinstance(raw, str))
        except ValueError as exc:
            raise ConfigError(f"flag for {dotted}: {exc}") from None
    layers.append(("flag", flag_values))
    return _merge(layers, env_values, paths, tuple(files_read))


def _merge(layers: list[tuple[str, dict[str, Any]]], env_values: Mapping[str, tuple[Any, str]],
           paths: Paths, files_read: tuple[Path, ...]) -> LoadedConfig:
    effective: dict[str, tuple[Any, str]] = {}
    defaults = Config()
    for dotted in KEYS:
        value: Any = defaults
        for part in dotted.split("."):
            value = getattr(value, part)
        effective[dotted] = (value, "default")
    for label, values in layers:
        for dotted, value in values.items():
            origin = f"env {env_values[dotted][1]}" if label == "env" else label
            effective[dotted] = (value, origin)
    config = _build(Config, "", effective)
    _check_consistent(config)
    if config.store.path:
        paths = replace(paths, db=Path(config.store.path))
    if config.daemon.socket:
        paths = replace(paths, socket=Path(config.daemon.socket))
    settings = tuple(Setting(k, _shown(k, v), o, KEYS[k]["doc"])
                     for k, (v, o) in effective.items())
    return LoadedConfig(config=config, paths=paths, settings=settings, files_read=files_read)


def _build(cls: type[Any], prefix: str, effective: Mapping[str, tuple[Any, str]]) -> Any:
    """An instance of the section or group `cls` from the effective values."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        name = prefix + f.name
        if "kind" in f.metadata:
            kwargs[f.name] = effective[name][0]
        else:
            kwargs[f.name] = _build(type(getattr(cls(), f.name)), name + ".", effective)
    return cls(**kwargs)


def _shown(dotted: str, value: Any) -> Any:
    """The value as `config show` prints it: secrets hidden."""
    redact = KEYS[dotted]["redact"]
    return redact(value) if redact is not None else value


def _check_consistent(config: Config) -> None:
    """Problems no single key shows: an enabled sink without its destination."""
    daemon = config.daemon
    if daemon.admin_reserved_clients >= daemon.max_clients:
        raise ConfigError(f"daemon.admin_reserved_clients ({daemon.admin_reserved_clients}) must "
                          f"be below daemon.max_clients ({daemon.max_clients}): readers need "
                          "at least one slot")
    sinks = config.sinks
    if sinks.file.enabled and not sinks.file.path:
        raise ConfigError("sinks.file.enabled is true but sinks.file.path is empty: set the "
                          "file alerts are appended to ([sinks.file] path = …)")
    if sinks.webhook.enabled and not sinks.webhook.url:
        raise ConfigError("sinks.webhook.enabled is true but sinks.webhook.url is empty: set "
                          "the URL alerts are POSTed to ([sinks.webhook] url = …)")


def mode_from_flag(value: str | None) -> Mode | None:
    return None if value is None else parse_mode(value, "--mode")

