"""The configuration's schema: one frozen dataclass per section, each key's kind, bounds,
check and doc in its field's metadata, and the tables derived from them (SECTIONS, GROUPS,
KEYS) that loading, `config show` and the tests walk."""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from daemoneye.config.remote_values import parse_ssh_target
from daemoneye.config.sink_values import (
    SYSLOG_FACILITIES,
    check_app_name,
    check_headers,
    check_syslog_address,
    check_url,
    redact_headers,
    redact_url,
)
from daemoneye.filters import FilterError, parse_filter
from daemoneye.models import CHANGE_KINDS, DEFAULT_ENVIRONMENT
from daemoneye.paths import Paths


def _spec(
    kind: str,
    doc: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] = (),
    check: Callable[[Any], None] | None = None,
    redact: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """A key's schema. `check` validates a coerced value (raising ValueError); `redact` gives
    the value `config show` prints for a key that may hold a secret."""
    return {
        "kind": kind,
        "doc": doc,
        "lo": lo,
        "hi": hi,
        "choices": choices,
        "check": check,
        "redact": redact,
    }


def check_environment_names(names: tuple[str, ...]) -> None:
    """Variable names as the shell writes them: no '=', no NUL, no spaces, at most 64 of them."""
    if len(names) > 64:
        raise ValueError(f"at most 64 names, got {len(names)}")
    for name in names:
        if not name or len(name) > 128 or not all(c.isalnum() or c == "_" for c in name):
            raise ValueError(f"{name!r} is not an environment variable name (letters, digits, _)")


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """How processes are observed."""

    interval: float = field(
        default=1.0,
        metadata=_spec("duration", "Seconds between two /proc scans.", lo=0.1, hi=3600.0),
    )
    update_interval: float = field(
        default=10.0,
        metadata=_spec(
            "duration",
            "How often changed rss/cpu/state values are written to the store.",
            lo=1.0,
            hi=3600.0,
        ),
    )
    hash_executables: bool = field(
        default=True,
        metadata=_spec(
            "bool", "Compute the SHA-256 of every executable (in a worker thread, cached)."
        ),
    )
    hash_max_bytes: int = field(
        default=64 * 1024**2,
        metadata=_spec(
            "size", "Executables larger than this are not hashed.", lo=0, hi=16 * 1024**3
        ),
    )
    events: bool = field(
        default=True,
        metadata=_spec("bool", "Use the kernel's process-event connector when permitted (root)."),
    )
    event_buffer: int = field(
        default=4 * 1024**2,
        metadata=_spec(
            "size",
            "The process connector's socket receive buffer at start; it doubles on each kernel "
            "overrun up to 64MiB.",
            lo=64 * 1024,
            hi=64 * 1024**2,
        ),
    )
    environment: tuple[str, ...] = field(
        default=DEFAULT_ENVIRONMENT,
        metadata=_spec(
            "names",
            "The environment variables stored and shown for each process (read at start and "
            "exec); nothing else from a process's environment is kept. Empty: none.",
            check=check_environment_names,
        ),
    )
    connections_interval: float = field(
        default=5.0,
        metadata=_spec(
            "duration",
            "Seconds between two refreshes of the connections table (sockets per process); "
            "0 turns connection collection off.",
            lo=0.0,
            hi=3600.0,
        ),
    )
    exec_capture: bool = field(
        default=True,
        metadata=_spec(
            "bool",
            "Take each exec's argv and context in the kernel (eBPF) so that programs gone "
            "before /proc is read are still stored whole, and let the scan ask the kernel which "
            "processes changed; needs root (CAP_BPF, CAP_PERFMON at start) and BTF.",
        ),
    )


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where history is kept and for how long."""

    path: str = field(
        default="", metadata=_spec("path", "Database file; empty means the mode's default path.")
    )
    retention: float = field(
        default=7 * 86400.0,
        metadata=_spec(
            "duration",
            "Ended processes, events and alerts older than this are deleted.",
            lo=60.0,
            hi=3650 * 86400.0,
        ),
    )
    max_bytes: int = field(
        default=1024**3,
        metadata=_spec(
            "size",
            "The oldest history is deleted when the database, not counting the audit log, "
            "grows past this (the audit log is bounded by audit_max_bytes).",
            lo=1024**2,
            hi=1024**4,
        ),
    )
    retention_check_interval: float = field(
        default=300.0, metadata=_spec("duration", "How often retention runs.", lo=1.0, hi=86400.0)
    )
    audit_retention: float = field(
        default=90 * 86400.0,
        metadata=_spec(
            "duration",
            "Audit log entries older than this are pruned, under a signed checkpoint "
            "that keeps the rest of the chain verifiable.",
            lo=86400.0,
            hi=3650 * 86400.0,
        ),
    )
    audit_max_bytes: int = field(
        default=64 * 1024**2,
        metadata=_spec(
            "size",
            "The oldest audit log entries are pruned (under a signed checkpoint) when the "
            "audit log grows past this.",
            lo=1024**2,
            hi=1024**4,
        ),
    )


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The daemon process itself."""

    log_level: str = field(
        default="info",
        metadata=_spec(
            "enum", "Logging threshold on stderr.", choices=("debug", "info", "warning", "error")
        ),
    )
    socket: str = field(
        default="", metadata=_spec("path", "The IPC socket; empty means the mode's default path.")
    )
    admin_group: str = field(
        default="",
        metadata=_spec(
            "str",
            "Members of this group may use admin IPC methods (ack, close, enable, disable, "
            "reload, signal) besides root and the daemon's user; empty means nobody else.",
        ),
    )
    max_clients: int = field(
        default=128,
        metadata=_spec(
            "int", "IPC connections served at once; more are refused with a message.", lo=1, hi=4096
        ),
    )
    client_queue: int = field(
        default=8 * 1024**2,
        metadata=_spec(
            "size",
            "Notifications waiting for one IPC client, at most; past this a client that "
            "does not read gets a resync instead.",
            lo=256 * 1024,
            hi=1024**3,
        ),
    )
    admin_reserved_clients: int = field(
        default=8,
        metadata=_spec(
            "int",
            "Of max_clients, the connections only admins may take, so that readers can "
            "never lock root out of the admin methods; must be below max_clients.",
            lo=0,
            hi=4095,
        ),
    )
    max_clients_per_uid: int = field(
        default=32,
        metadata=_spec(
            "int",
            "IPC connections one non-admin uid may hold at once (admins are exempt); 0 "
            "means no per-user cap.",
            lo=0,
            hi=4096,
        ),
    )
    idle_timeout: float = field(
        default=300.0,
        metadata=_spec(
            "duration",
            "An IPC connection that sends no request and reads no live subscription "
            "for this long is closed with an error saying why.",
            lo=1.0,
            hi=7 * 86400.0,
        ),
    )
    clients_queue_total: int = field(
        default=64 * 1024**2,
        metadata=_spec(
            "size",
            "Notifications waiting for all IPC clients together, at most; past this the "
            "largest queues are dropped and their clients get a resync.",
            lo=1024**2,
            hi=16 * 1024**3,
        ),
    )
    refused_audit_rate: int = field(
        default=10,
        metadata=_spec(
            "int",
            "Refused admin calls of one uid written to the audit log per second (bursts of "
            "refused_audit_burst); the rest are counted in one summary entry per second.",
            lo=1,
            hi=10000,
        ),
    )
    refused_audit_burst: int = field(
        default=20,
        metadata=_spec(
            "int",
            "Refused admin calls of one uid audited in a burst before refused_audit_rate applies.",
            lo=1,
            hi=100000,
        ),
    )
    user: str = field(
        default="daemoneye",
        metadata=_spec(
            "str",
            "Started as root, the daemon runs as this user once its collector (procmond) is "
            "started: the agent with no capabilities, procmond with the four it needs. 'root' "
            "keeps uid 0 without capabilities. Ignored when not started as root.",
        ),
    )


@dataclass(frozen=True, slots=True)
class CliConfig:
    """Defaults of the command-line client."""

    output: str = field(
        default="table",
        metadata=_spec(
            "enum", "Output format of list commands.", choices=("table", "json", "ndjson", "csv")
        ),
    )


def _check_command(value: str) -> None:
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot split {value!r} into words: {exc}") from None
    if not words:
        raise ValueError("must name a program")


def _check_hosts(value: tuple[tuple[str, str], ...]) -> None:
    for name, url in value:
        if not name or name.startswith("ssh:"):
            raise ValueError(f"{name!r} is not a host name to use with --host")
        parse_ssh_target(url)


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """`--host ssh://…`: the dashboard and the CLI against another host's daemon, through the
    user's own ssh (docs/remote.md)."""

    ssh: str = field(
        default="ssh",
        metadata=_spec(
            "str",
            "The ssh program (with options, split like a shell would) used for --host; "
            "BatchMode, -T and the port are added.",
            check=_check_command,
        ),
    )
    command: str = field(
        default="daemoneye-cli",
        metadata=_spec(
            "str",
            "What ssh runs on the remote host (its `bridge` subcommand relays to the local "
            "socket there); a full path when it is not on a non-interactive PATH.",
            check=_check_command,
        ),
    )
    hosts: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata=_spec(
            "table",
            'Named hosts for --host NAME, e.g. { web1 = "ssh://ops@web1.example.com" }.',
            check=_check_hosts,
        ),
    )


@dataclass(frozen=True, slots=True)
class TuiConfig:
    """The dashboard (`daemoneye` on a terminal)."""

    theme: str = field(
        default="daemoneye-dark",
        metadata=_spec(
            "str",
            "Dashboard theme: the name of a themes/*.toml theme. Choosing one from the "
            "command palette saves it here.",
        ),
    )
    hide_kernel_threads: bool = field(
        default=False,
        metadata=_spec(
            "bool",
            "Hide kernel threads (kthreadd and its children) on the processes screen. "
            "The K key toggles it and saves it here.",
        ),
    )
    show_container: bool = field(
        default=False,
        metadata=_spec(
            "bool",
            "Show the CONTAINER column (runtime and id, or host) on the processes screen. "
            "The C key toggles it and saves it here.",
        ),
    )
    show_meters: bool = field(
        default=True,
        metadata=_spec(
            "bool",
            "Show the host meters (CPU per core, memory, swap, load, uptime) above the "
            "processes table. The m key toggles it and saves it here.",
        ),
    )


# The shapes an alert can leave in (engine/formats/): the daemon's own JSON, an OCSF Detection
# Finding, or an Elastic Common Schema document.
ALERT_FORMATS = ("native", "ocsf", "ecs")
_FORMAT_HELP = (
    "Shape of each alert: 'native' (DaemonEye's own JSON), 'ocsf' (an OCSF 1.5 Detection "
    "Finding) or 'ecs' (an Elastic Common Schema 8.11 document)."
)


def _headers_field() -> Any:
    """`headers` of an HTTP sink (webhook, otlp): values are secrets to `config show`."""
    return field(
        default=(),
        metadata=_spec(
            "table",
            "Extra HTTP headers, e.g. Authorization or an API key (a TOML table; JSON object "
            "in the environment). Values are hidden by `config show`.",
            check=check_headers,
            redact=redact_headers,
        ),
    )


def _format_field() -> Any:
    return field(default="native", metadata=_spec("enum", _FORMAT_HELP, choices=ALERT_FORMATS))


@dataclass(frozen=True, slots=True)
class StdoutSinkConfig:
    """`[sinks.stdout]`: each new alert printed on the daemon's standard output."""

    enabled: bool = field(
        default=False, metadata=_spec("bool", "Print each new alert on the daemon's stdout.")
    )
    format: str = field(
        default="human",
        metadata=_spec(
            "enum",
            "One line per alert: 'human' text (control characters escaped), or JSON: 'json' "
            "(DaemonEye's own), 'ocsf' or 'ecs' (see [sinks.file] format).",
            choices=("human", "json", *ALERT_FORMATS[1:]),
        ),
    )


@dataclass(frozen=True, slots=True)
class FileSinkConfig:
    """`[sinks.file]`: each new alert appended to a file as one JSON object per line."""

    enabled: bool = field(
        default=False, metadata=_spec("bool", "Append each new alert to `path` as a JSON line.")
    )
    path: str = field(
        default="",
        metadata=_spec(
            "path",
            "The JSON-lines file (created 0600); reopened on SIGHUP and when it is renamed "
            "or deleted, for logrotate.",
        ),
    )
    fsync: bool = field(
        default=True,
        metadata=_spec(
            "bool",
            "fsync after every alert, so an alert counts as delivered only once it is on disk.",
        ),
    )
    format: str = _format_field()


@dataclass(frozen=True, slots=True)
class SyslogSinkConfig:
    """`[sinks.syslog]`: each new alert sent as an RFC 5424 syslog message."""

    enabled: bool = field(default=False, metadata=_spec("bool", "Send each new alert to syslog."))
    address: str = field(
        default="/dev/log",
        metadata=_spec(
            "str",
            "'/dev/log' (a Unix datagram socket), 'udp://host:port' or 'tcp://host:port' "
            "(RFC 6587 octet counting); port 514 when omitted.",
            check=check_syslog_address,
        ),
    )
    facility: str = field(
        default="daemon",
        metadata=_spec("enum", "Syslog facility of the messages.", choices=SYSLOG_FACILITIES),
    )
    app_name: str = field(
        default="daemoneye",
        metadata=_spec("str", "RFC 5424 APP-NAME of the messages.", check=check_app_name),
    )
    format: str = _format_field()


@dataclass(frozen=True, slots=True)
class WebhookSinkConfig:
    """`[sinks.webhook]`: each new alert POSTed as JSON to a URL."""

    enabled: bool = field(default=False, metadata=_spec("bool", "POST each new alert to `url`."))
    url: str = field(
        default="",
        metadata=_spec(
            "str",
            "http:// or https:// endpoint; a 2xx answer means delivered.",
            check=check_url,
            redact=redact_url,
        ),
    )
    timeout: float = field(
        default=10.0,
        metadata=_spec(
            "duration",
            "How long one delivery may take before it is retried later.",
            lo=0.1,
            hi=300.0,
        ),
    )
    verify_tls: bool = field(
        default=True,
        metadata=_spec("bool", "Verify the server's TLS certificate and host name (keep this on)."),
    )
    ca_file: str = field(
        default="",
        metadata=_spec("path", "PEM file of CA certificates to trust instead of the system's."),
    )
    headers: tuple[tuple[str, str], ...] = _headers_field()
    format: str = _format_field()


@dataclass(frozen=True, slots=True)
class OtlpSinkConfig:
    """`[sinks.otlp]`: each new alert exported as an OpenTelemetry log record over OTLP/HTTP."""

    enabled: bool = field(
        default=False,
        metadata=_spec(
            "bool",
            "Export each new alert to an OpenTelemetry Collector over OTLP/HTTP "
            "(needs `pip install 'daemoneye[otlp]'`).",
        ),
    )
    endpoint: str = field(
        default="http://127.0.0.1:4318/v1/logs",
        metadata=_spec(
            "str",
            "The collector's OTLP/HTTP logs URL, path included.",
            check=check_url,
            redact=redact_url,
        ),
    )
    timeout: float = field(
        default=10.0,
        metadata=_spec(
            "duration",
            "How long one export (with the exporter's own retries) may take before the alert "
            "is retried later.",
            lo=0.1,
            hi=300.0,
        ),
    )
    ca_file: str = field(
        default="",
        metadata=_spec("path", "PEM file of CA certificates to trust for an https endpoint."),
    )
    headers: tuple[tuple[str, str], ...] = _headers_field()
    format: str = _format_field()


@dataclass(frozen=True, slots=True)
class SinksConfig:
    """Where alerts go besides the store."""

    stdout: StdoutSinkConfig = StdoutSinkConfig()
    file: FileSinkConfig = FileSinkConfig()
    syslog: SyslogSinkConfig = SyslogSinkConfig()
    webhook: WebhookSinkConfig = WebhookSinkConfig()
    otlp: OtlpSinkConfig = OtlpSinkConfig()


STREAM_KINDS = ("start", "exec", "exit", "change", *CHANGE_KINDS)


def check_stream_sinks(names: tuple[str, ...]) -> None:
    """Sink names, each once."""
    sinks = tuple(f.name for f in fields(SinksConfig))
    for name in names:
        if name not in sinks:
            raise ValueError(f"{name!r} is not a sink; one of {', '.join(sinks)}")
    if len(set(names)) != len(names):
        raise ValueError("a sink is named twice")


def check_stream_kinds(kinds: tuple[str, ...]) -> None:
    """Event kinds the stream may carry; 'change' stands for every change after start."""
    for kind in kinds:
        if kind not in STREAM_KINDS:
            raise ValueError(f"{kind!r} is not an event kind; one of {', '.join(STREAM_KINDS)}")


def check_stream_filter(text: str) -> None:
    """A process filter over the record an event is about: no `port:`/`remote:` (connections
    are refreshed seconds later) and no `alerted`."""
    try:
        parsed = parse_filter(text)
    except FilterError as exc:
        raise ValueError(str(exc)) from None
    if parsed.uses_connections:
        raise ValueError("port: and remote: terms cannot filter the stream")
    if parsed.uses_alerted:
        raise ValueError("the alerted term cannot filter the stream")


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """`[stream]`: process events (exec, exit, changes after start) sent to sinks beside the
    alerts, for a SIEM that wants the raw events. Best effort: the store keeps every event;
    what the rate cap or a slow sink drops is counted in `health`."""

    sinks: tuple[str, ...] = field(
        default=(),
        metadata=_spec(
            "names",
            "The sinks that also carry process events, in their own format "
            "(e.g. ['file', 'otlp']); each must be enabled. Empty: no events are streamed.",
            check=check_stream_sinks,
        ),
    )
    kinds: tuple[str, ...] = field(
        default=("exec", "exit", "change"),
        metadata=_spec(
            "names",
            "Event kinds streamed: start (first seen by the scanner), exec, exit, and 'change' "
            "(every change after start) or single changes (rename, uid, gid, ptrace, "
            "exe_deleted, exe_replaced, cwd).",
            check=check_stream_kinds,
        ),
    )
    filter: str = field(
        default="",
        metadata=_spec(
            "str",
            "Only events whose process matches this filter (the processes filter language, "
            "e.g. 'not:user:root' or 'container:docker'). Empty: all.",
            check=check_stream_filter,
        ),
    )
    rate: int = field(
        default=500,
        metadata=_spec(
            "int",
            "Events per second streamed at most (a burst of one second's worth is allowed); "
            "the rest are dropped and counted.",
            lo=1,
            hi=1_000_000,
        ),
    )
    queue: int = field(
        default=10_000,
        metadata=_spec(
            "int",
            "Events held per sink while it is slow or down; beyond this new events are "
            "dropped and counted.",
            lo=100,
            hi=1_000_000,
        ),
    )
    queue_bytes: int = field(
        default=16 * 1024**2,
        metadata=_spec(
            "size",
            "Memory those held events may take per sink (their command lines mostly); beyond "
            "this new events are dropped and counted.",
            lo=64 * 1024,
            hi=1024**3,
        ),
    )


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """`[delivery]`: retries of alerts a sink did not take."""

    max_attempts: int = field(
        default=20,
        metadata=_spec(
            "int", "Attempts per alert and sink before it is dead-lettered.", lo=1, hi=10_000
        ),
    )
    backoff_base: float = field(
        default=1.0,
        metadata=_spec(
            "duration",
            "Delay after the first failure; doubles with every attempt (x0.5-1.5 jitter).",
            lo=0.01,
            hi=3600.0,
        ),
    )
    backoff_max: float = field(
        default=300.0,
        metadata=_spec(
            "duration", "Longest delay between two attempts (jitter included).", lo=0.1, hi=86400.0
        ),
    )
    max_held_alerts: int = field(
        default=10_000,
        metadata=_spec(
            "int",
            "New alerts kept in memory while the store cannot be written (disk full); "
            "they go to the sinks at once and into the store when it is writable again. "
            "Alerts beyond this are counted and dropped.",
            lo=1,
            hi=1_000_000,
        ),
    )
    max_held_bytes: int = field(
        default=16 * 1024**2,
        metadata=_spec(
            "size",
            "Memory those held alerts may take (their JSON payloads).",
            lo=64 * 1024,
            hi=1024**3,
        ),
    )


@dataclass(frozen=True, slots=True)
class Config:
    collector: CollectorConfig = CollectorConfig()
    store: StoreConfig = StoreConfig()
    daemon: DaemonConfig = DaemonConfig()
    cli: CliConfig = CliConfig()
    tui: TuiConfig = TuiConfig()
    sinks: SinksConfig = SinksConfig()
    remote: RemoteConfig = RemoteConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    stream: StreamConfig = StreamConfig()


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
    name: cls for name, cls, group in _walk_sections(Config, "") if not group
}
GROUPS: frozenset[str] = frozenset(name for name, _, group in _walk_sections(Config, "") if group)
KEYS: dict[str, dict[str, Any]] = {
    f"{section}.{f.name}": dict(f.metadata)
    for section, cls in SECTIONS.items()
    for f in fields(cls)
}


def closest_hint(name: str, candidates: list[str]) -> str:
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
            return f"unknown section {section!r}{closest_hint(section, candidates)}"
    return f"unknown key {dotted!r}{closest_hint(dotted, list(KEYS))}"
