"""The dashboard's own layering: its logic runs without Textual, and the dashboard reaches
the daemon only through `ipc.client` and `models` (ARCHITECTURE.md §2)."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import daemoneye.tui.logic

ROOT = Path(__file__).resolve().parents[2]  # tests.fakes is importable from the repo root

PLAIN_MODULES = [
    "daemoneye.tui.source",
    "tests.fakes.dashboard_source",
    "daemoneye.tui.preferences",
    *(
        info.name
        for info in pkgutil.walk_packages(daemoneye.tui.logic.__path__, "daemoneye.tui.logic.")
    ),
]
DAEMON_SIDE = (
    "daemoneye.store",
    "daemoneye.engine",
    "daemoneye.collector",
    "daemoneye.daemon",
    "daemoneye.ipc.server",
    "daemoneye.commands",
)


def loaded_by(*modules: str) -> set[str]:
    code = f"import json, sys, {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=ROOT,
    )
    return set(json.loads(result.stdout))


def test_dashboard_logic_never_imports_textual() -> None:
    loaded = loaded_by(*PLAIN_MODULES)
    assert not any(m == "textual" or m.startswith("textual.") for m in loaded)


def test_the_dashboard_reaches_the_daemon_only_through_the_ipc_client() -> None:
    loaded = loaded_by("daemoneye.tui.app", "daemoneye.tui.launcher", "daemoneye.tui.ipc_source")
    leaked = sorted(m for m in loaded if m.startswith(DAEMON_SIDE))
    assert not leaked
    assert "daemoneye.ipc.client" in loaded


def frame_rate(environment: dict[str, str]) -> int:
    code = "import daemoneye.tui.app, textual.constants as c; print(c.MAX_FPS)"
    env = {key: value for key, value in os.environ.items() if key != "TEXTUAL_FPS"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**env, **environment},
    )
    return int(result.stdout)


def test_the_dashboard_asks_for_240_frames_unless_the_user_chose() -> None:
    """Textual's repaint timer skips up to two frames after a long one; at 240 frames a
    second a key right behind a refresh waits at most 8 ms for its frame."""
    assert frame_rate({}) == 240
    assert frame_rate({"TEXTUAL_FPS": "30"}) == 30
