"""Alert sinks (stdout, JSON-lines file, syslog, webhook) and building them from the
configuration. Delivery itself — outbox, retries, dead letters — is `daemoneye.engine.delivery`.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from daemoneye.config.schema import SinksConfig
from daemoneye.config.sink_values import parse_syslog_address
from daemoneye.engine.sinks.base import PermanentSinkError, Sink, SinkError
from daemoneye.engine.sinks.file import FileSink
from daemoneye.engine.sinks.stdout import StdoutSink
from daemoneye.engine.sinks.syslog import SyslogSink
from daemoneye.engine.sinks.webhook import WebhookSink
from daemoneye.errors import ConfigError

SINK_NAMES = ("stdout", "file", "syslog", "webhook")

__all__ = [
    "SINK_NAMES",
    "FileSink",
    "PermanentSinkError",
    "Sink",
    "SinkError",
    "StdoutSink",
    "SyslogSink",
    "WebhookSink",
    "build_sinks",
    "enabled_sink_names",
]


def enabled_sink_names(config: SinksConfig) -> tuple[str, ...]:
    """The names of the enabled sinks, in SINK_NAMES order: each new alert gets one outbox row
    per name."""
    return tuple(name for name in SINK_NAMES if getattr(config, name).enabled)


def build_sinks(config: SinksConfig) -> dict[str, Sink]:
    """One sink per enabled section. Raises ConfigError for what only shows when a sink is
    built (an unreadable `ca_file`)."""
    sinks: dict[str, Sink] = {}
    if config.stdout.enabled:
        sinks["stdout"] = StdoutSink(config.stdout.format)
    if config.file.enabled:
        sinks["file"] = FileSink(Path(config.file.path), fsync=config.file.fsync)
    if config.syslog.enabled:
        try:
            address = parse_syslog_address(config.syslog.address)
        except ValueError as exc:
            raise ConfigError(f"sinks.syslog.address: {exc}") from None
        sinks["syslog"] = SyslogSink(
            address, facility=config.syslog.facility, app_name=config.syslog.app_name
        )
    if config.webhook.enabled:
        hook = config.webhook
        try:
            sinks["webhook"] = WebhookSink(
                hook.url,
                timeout=hook.timeout,
                verify_tls=hook.verify_tls,
                ca_file=hook.ca_file or None,
                headers=hook.headers,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"sinks.webhook.ca_file: cannot load {hook.ca_file}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
    return sinks
