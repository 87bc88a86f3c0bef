"""A non-editable wheel carries what the program loads at run time: the built-in rule pack,
the themes and the dashboard's stylesheets, and nothing that only tests use (the dashboard's
fake data source and its demo live in tests/fakes)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_rules_themes_and_styles(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("daemoneye-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"daemoneye/engine/rules/{p.name}"
        for p in (ROOT / "daemoneye" / "engine" / "rules").glob("*.toml")
    }
    expected |= {f"themes/{p.name}" for p in (ROOT / "themes").glob("*.toml")}
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "daemoneye").rglob("*.tcss")}
    assert len(expected) > 10
    assert expected <= names, sorted(expected - names)
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    assert not [name for name in names if "fake" in name or name.endswith("/demo.py")]
