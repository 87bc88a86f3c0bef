"""Alert sinks and their registry. A sink is one module here named after its section of the
configuration (`[sinks.NAME]` → `engine/sinks/NAME.py`) with a `build(section) -> Sink`
function; the sink names, their order and what gets built all come from the config's
`SinksConfig` fields. Delivery itself — outbox, retries, dead letters — is
`daemoneye.engine.delivery`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Protocol

from daemoneye.config.schema import SinksConfig
from daemoneye.engine.sinks.base import PermanentSinkError, Sink, SinkError

SINK_NAMES = tuple(field.name for field in dataclasses.fields(SinksConfig))

__all__ = [
    "SINK_NAMES",
    "PermanentSinkError",
    "Sink",
    "SinkError",
    "build_sinks",
    "enabled_sink_names",
    "sink_builder",
]


class SinkBuilder(Protocol):
    def __call__(self, section: Any, /) -> Sink: ...


def sink_builder(name: str) -> SinkBuilder:
    """The `build` function of the sink module named `name`."""
    module = importlib.import_module(f"{__name__}.{name}")
    builder: SinkBuilder = module.build
    return builder


def enabled_sink_names(config: SinksConfig) -> tuple[str, ...]:
    """The names of the enabled sinks, in SINK_NAMES order: each new alert gets one outbox row
    per name."""
    return tuple(name for name in SINK_NAMES if getattr(config, name).enabled)


def build_sinks(config: SinksConfig) -> dict[str, Sink]:
    """One sink per enabled section. Raises ConfigError for what only shows when a sink is
    built (an unreadable `ca_file`)."""
    return {name: sink_builder(name)(getattr(config, name)) for name in enabled_sink_names(config)}
