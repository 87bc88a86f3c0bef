"""`daemoneye config show`: the effective configuration, each value with its layer."""

from __future__ import annotations

import sys
from typing import Any

from daemoneye.commands.common import Context, note
from daemoneye.config.schema import KEYS
from daemoneye.output import render
from daemoneye.units import write_duration, write_size


def as_written(key: str, value: Any) -> Any:
    """A value as the config file writes it (`1s`, `64MiB`, `true`), from the key's kind;
    other kinds (and redacted values) as they are."""
    kind = KEYS[key]["kind"] if key in KEYS else None
    if kind == "bool" and isinstance(value, bool):
        return "true" if value else "false"
    if kind == "duration" and isinstance(value, int | float) and not isinstance(value, bool):
        return write_duration(float(value))
    if kind == "size" and isinstance(value, int) and not isinstance(value, bool):
        return write_size(value)
    if kind == "names" and isinstance(value, tuple):
        return ",".join(value)
    return value


def show_config(ctx: Context) -> int:
    """Table and CSV print values as a config file writes them; JSON keeps their types
    (seconds and bytes as numbers, booleans as booleans)."""
    loaded = ctx.loaded
    text = ctx.output in ("table", "csv")
    rows = [
        (s.key, as_written(s.key, s.value) if text else s.value, s.origin) for s in loaded.settings
    ]
    paths = loaded.paths
    rows += [
        ("paths.mode", paths.mode.value, "DAEMONEYE_MODE, --mode, or root → system"),
        ("paths.db", str(paths.db), "store.path or the mode's default"),
        ("paths.socket", str(paths.socket), "daemon.socket or the mode's default"),
        ("paths.rules_dirs", ":".join(map(str, paths.rules_dirs)), "the mode's default"),
    ]
    render(("key", "value", "source"), rows, ctx.output, sys.stdout)
    if ctx.output == "table":
        read = ", ".join(map(str, loaded.files_read)) or "none"
        note(f"config files read: {read}")
    return 0
