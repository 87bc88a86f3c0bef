"""`daemoneye config show`: the effective configuration, each value with its layer."""

from __future__ import annotations

import sys

from daemoneye.commands.common import Context, note
from daemoneye.output import render


def show_config(ctx: Context) -> int:
    loaded = ctx.loaded
    rows = [(s.key, s.value, s.origin) for s in loaded.settings]
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
