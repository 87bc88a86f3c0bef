"""The environment every test daemon runs in: nothing of the caller's DaemonEye, collector,
systemd or XDG settings, and every path under one temporary root."""

from __future__ import annotations

import os
from pathlib import Path

INHERITED_NOT = ("DAEMONEYE_", "PROCMOND_", "NOTIFY_SOCKET", "XDG_")


def isolated_env(root: Path, *, mode: str | None = "user") -> dict[str, str]:
    """This process's environment without DaemonEye's and XDG's variables, with HOME and the
    XDG directories under `root` (a short path: Unix socket paths are limited to 107 bytes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_NOT)}
    env.update(
        {
            "HOME": str(root),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_STATE_HOME": str(root / "state"),
            "XDG_RUNTIME_DIR": str(root),
        }
    )
    if mode is not None:
        env["DAEMONEYE_MODE"] = mode
    # Started as root, a test daemon drops to uid 0 without capabilities (procmond keeps its
    # own): the temporary directories are root's (0700), and so may be this Python (pyenv
    # under /root). tests/integration/test_privileges.py drops to another user for real.
    env["DAEMONEYE_DAEMON__USER"] = "root"
    return env
