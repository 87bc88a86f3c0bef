"""The static checks CI relies on, run as tests so that the README's one test line covers them:
strict typing over the package, the tests and the benchmarks, lint, one formatting decision,
and the layer contracts of ARCHITECTURE.md §2 (`.importlinter`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHECKED = ["daemoneye", "tests", "benchmarks"]


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    tool = BIN / argv[0]
    if not tool.exists():
        pytest.fail(f"{argv[0]} is not next to {sys.executable}: pip install -e '.[test]'")
    return subprocess.run(
        [str(tool), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )


def test_mypy_strict_over_package_tests_and_benchmarks() -> None:
    result = run_tool("mypy", "--strict", *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint() -> None:
    result = run_tool("ruff", "check", *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied_everywhere() -> None:
    result = run_tool("ruff", "format", "--check", *CHECKED)
    assert result.returncode == 0, "run `ruff format daemoneye tests benchmarks`:\n" + result.stdout


def test_layer_contracts() -> None:
    result = run_tool("lint-imports")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
