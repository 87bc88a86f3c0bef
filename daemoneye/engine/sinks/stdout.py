"""The stdout sink: one line per alert on the daemon's standard output (journald under
systemd). Both formats escape control, bidi and format characters (text.py): titles carry
process-supplied text."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from daemoneye.config.schema import StdoutSinkConfig
from daemoneye.engine.formats import FORMATS, document
from daemoneye.engine.sinks.base import SinkError, human_line
from daemoneye.text import json_text


class StdoutSink:
    """Writes `human` text or compact JSON (`json` native, `ocsf`, `ecs`), one alert per line,
    flushed at once."""

    name = "stdout"

    def __init__(self, fmt: str = "human", stream: TextIO | None = None) -> None:
        if fmt not in ("human", "json", *FORMATS):
            raise ValueError(f"unknown stdout format {fmt!r}")
        self._fmt = "native" if fmt == "json" else fmt
        self._stream = stream  # None: whatever sys.stdout is at delivery time

    def deliver(self, payload: Mapping[str, Any]) -> None:
        if self._fmt == "human":
            line = human_line(payload)
        else:
            line = json_text(document(payload, self._fmt), compact=True)
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            raise SinkError(f"cannot write to stdout: {exc}") from exc

    def reopen(self) -> None:
        """Nothing to reopen."""

    def close(self) -> None:
        """Standard output is not ours to close."""


def build(section: StdoutSinkConfig) -> StdoutSink:
    """The sink of `[sinks.stdout]` (engine/sinks/__init__.py finds it by the section's name)."""
    return StdoutSink(section.format)
