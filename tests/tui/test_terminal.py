"""The dashboard in a real terminal (tmux): what it leaves on the screen after many partial
repaints must be exactly what a full repaint draws.

The table repaints only the lines a refresh or a cursor step changed, and the status line and
detail pane skip the screen layout while their height stays the same. A mistake in either
leaves a stale line on the user's screen that no in-process test sees: Textual's headless
driver throws its output away. Here the demo dashboard runs in tmux while its processes churn
and keys move the cursor through the list and the tree, and again once it is still (with no
refresh after them to paint over a stale line); then the pane is captured with its colours,
the window is resized away and back (which repaints everything), and the two captures must
be identical.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)"
)

PROCESSES = 60  # few enough that rows which start and end are on screen, shifting the rest
CHURN_S = 5.0


class Terminal:
    """One tmux server; each dashboard runs in a session of its own."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout

    def start(self, session: str, width: int, height: int, command: str) -> None:
        self.tmux(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            str(width),
            "-y",
            str(height),
            command,
        )

    def capture(self, session: str) -> str:
        return self.tmux("capture-pane", "-e", "-p", "-t", session)

    def keys(self, session: str, *keys: str) -> None:
        for key in keys:
            self.tmux("send-keys", "-t", session, key)

    def wait_for(self, session: str, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in (screen := self.capture(session)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared in {session}:\n{screen}")
            time.sleep(0.2)

    def wait_still(self, session: str, quiet_s: float = 2.0, timeout: float = 40.0) -> str:
        """The screen once nothing on it has changed for `quiet_s` (new rows are no longer
        marked, ended ones are gone: the expiry of both is itself a partial repaint)."""
        deadline = time.monotonic() + timeout
        screen, since = self.capture(session), time.monotonic()
        while time.monotonic() - since < quiet_s or "just ended" in screen:
            if time.monotonic() > deadline:
                raise AssertionError(f"{session} never settled:\n{screen}")
            time.sleep(0.25)
            now = self.capture(session)
            if now != screen:
                screen, since = now, time.monotonic()
        return screen

    def resize(self, session: str, width: int) -> None:
        self.tmux("resize-window", "-t", session, "-x", str(width))


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path / "tmux.sock")
    try:
        yield term
    finally:
        subprocess.run(
            ["tmux", "-S", str(term.socket), "kill-server"],
            capture_output=True,
            timeout=30,
            check=False,
        )


def demo_command(home: Path, width: int, height: int) -> str:
    # COLUMNS and LINES exported, as some shells (and pytest) do: the dashboard must still
    # follow its window.
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".state"),
        "TERM": "xterm-256color",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "COLUMNS": str(width),
        "LINES": str(height),
        # The demo lives in tests/fakes, outside the installed package.
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    return " ".join(
        [
            "env",
            *(f"{key}={value}" for key, value in env.items()),
            sys.executable,
            "-m",
            "tests.fakes.demo",
            "--processes",
            str(PROCESSES),
            "--churn-for",
            str(CHURN_S),
        ]
    )


# (session, width, height, view): both sizes of the issue, the list and the tree; the wide
# one shows the detail pane.
SESSIONS = [
    ("list-80x24", 80, 24, "list"),
    ("tree-80x24", 80, 24, "tree"),
    ("list-160x48", 160, 48, "list"),
    ("tree-160x48", 160, 48, "tree"),
]
STEPS = ("Down", "Down", "Down", "PageDown", "Up", "Down", "PageUp", "Down")
QUIET_STEPS = ("Down", "Down", "Up")


def test_partial_repaints_leave_what_a_full_repaint_draws(
    terminal: Terminal, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for session, width, height, _ in SESSIONS:
        terminal.start(session, width, height, demo_command(home, width, height))
    for session, _, _, view in SESSIONS:
        terminal.wait_for(session, f"{PROCESSES} procs")
        if view == "tree":
            terminal.keys(session, "t")
    started = time.monotonic()
    for step in STEPS:  # cursor steps while the processes keep changing
        for session, *_ in SESSIONS:
            terminal.keys(session, step)
        time.sleep(0.4)
    time.sleep(max(0.0, CHURN_S - (time.monotonic() - started)))
    for session, *_ in SESSIONS:
        terminal.wait_still(session)
    for step in QUIET_STEPS:  # cursor steps with no refresh after them to repaint over
        for session, *_ in SESSIONS:
            terminal.keys(session, step)
        time.sleep(0.3)
    still = {session: terminal.wait_still(session, quiet_s=1.0) for session, *_ in SESSIONS}
    for session, width, _, view in SESSIONS:
        assert f"· {view}" in still[session], still[session]
        terminal.resize(session, width + 1)  # resized away and back: every line repainted
    time.sleep(1.0)
    for session, width, *_ in SESSIONS:
        # Laid out again for the new width (the footer's right-hand keys moved over).
        assert terminal.capture(session) != still[session], session
        terminal.resize(session, width)
    time.sleep(1.5)
    for session, *_ in SESSIONS:
        assert terminal.capture(session) == still[session], session
