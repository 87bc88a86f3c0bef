"""The agent loads what it runs with, not what a rare command needs: each module stays in its
RSS for the daemon's life."""

from __future__ import annotations

import json
import subprocess
import sys

# shtab (completion scripts) loads importlib.metadata, email and zipfile: 2.8 MiB.
RARE_COMMANDS_ONLY = ("shtab", "importlib.metadata", "argparse_manpage")


def test_the_agents_entry_point_loads_no_completion_machinery() -> None:
    code = (
        "import json, sys, daemoneye.cli, daemoneye.daemon.lifecycle; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(result.stdout))
    assert "daemoneye.daemon.lifecycle" in loaded  # the check looks at the real thing
    assert sorted(m for m in loaded if m.startswith(RARE_COMMANDS_ONLY)) == []
