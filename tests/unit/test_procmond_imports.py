"""procmond's entry point loads no event loop, TLS, SQLite, dashboard or file watcher."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("asyncio", "ssl", "apsw", "sqlite3", "textual", "rich", "watchfiles")


def test_procmond_entry_point_loads_none_of_the_heavy_modules() -> None:
    code = "import json, sys, daemoneye.procmond.main; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(result.stdout))
    assert "daemoneye.procmond.runner" in loaded  # the check looks at the real thing
    heavy = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert heavy == []
    assert not any(m.startswith(("daemoneye.store", "daemoneye.engine")) for m in loaded)
