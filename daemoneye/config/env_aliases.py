"""The seed's environment variable names, accepted as documented aliases.

Users coming from the system DaemonEye re-implements type its names: the README's own
`PROCMOND_APP__SCAN_INTERVAL_MS=15000`, the collector-core overrides
`PROCMOND_COLLECTOR_<KEY>` (one underscore) and `DAEMONEYE_AGENT_TEST_MODE`. Each either sets a
key of ours (its value translated; `config show` names the alias as the source) or is accepted
with a warning that says why it has no effect here. None is silently ignored, and a native
variable (`DAEMONEYE_…`) for the same key wins over an alias.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(name: str, raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false (1/0), got {raw!r}")


def _milliseconds(name: str, raw: str) -> str | None:
    if not raw.strip().isdigit():
        raise ValueError(f"expected a whole number of milliseconds, got {raw!r}")
    return f"{int(raw)}ms"


def _size(name: str, raw: str) -> str | None:
    return raw


def _debug_logging(name: str, raw: str) -> str | None:
    return "debug" if _flag(name, raw) else None


def _checked_flag(name: str, raw: str) -> str | None:
    """A boolean the seed reads and we do not: checked, then nothing is set."""
    _flag(name, raw)
    return None


def _checked_count(name: str, raw: str) -> str | None:
    """A count the seed reads and we do not: checked, then nothing is set."""
    if not raw.strip().isdigit():
        raise ValueError(f"expected a whole number, got {raw!r}")
    return None


@dataclass(frozen=True, slots=True)
class EnvAlias:
    """`key` is what the alias sets (None: nothing); `translate` checks the raw value and
    returns the text our key is parsed from, or None when this value sets nothing; `unused`
    says why, for the warning."""

    key: str | None
    translate: Callable[[str, str], str | None]
    unused: str


ENV_ALIASES: dict[str, EnvAlias] = {
    "PROCMOND_APP__SCAN_INTERVAL_MS": EnvAlias(
        "collector.interval", _milliseconds, "it always sets collector.interval"
    ),
    "PROCMOND_COLLECTOR_EVENT_BUFFER_SIZE": EnvAlias(
        "collector.event_buffer", _size, "it always sets collector.event_buffer"
    ),
    "PROCMOND_COLLECTOR_DEBUG_LOGGING": EnvAlias(
        "daemon.log_level",
        _debug_logging,
        "false leaves daemon.log_level as the files and DAEMONEYE_DAEMON__LOG_LEVEL set it",
    ),
    "PROCMOND_COLLECTOR_MAX_EVENT_SOURCES": EnvAlias(
        None,
        _checked_count,
        "DaemonEye has one kernel event source (the process connector, collector.events) "
        "with /proc scans behind it, so there is no number of sources to limit",
    ),
    "PROCMOND_COLLECTOR_ENABLE_TELEMETRY": EnvAlias(
        None,
        _checked_flag,
        "`daemoneye health` always reports the daemon's own telemetry (scans, CPU, event "
        "counters, sinks) and nothing is sent off the host either way",
    ),
    "DAEMONEYE_AGENT_TEST_MODE": EnvAlias(
        None,
        _checked_flag,
        "there is no test mode: for a private test daemon run `daemoneye --mode user daemon` "
        "with XDG_STATE_HOME, XDG_CONFIG_HOME and XDG_RUNTIME_DIR in a scratch directory",
    ),
}
