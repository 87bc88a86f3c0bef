"""The shipped systemd files are what systemd accepts: the unit passes `systemd-analyze verify`,
the sysusers and tmpfiles files apply in a scratch root, and the unit starts what the install
it documents puts in place."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "packaging" / "systemd"
INSTALLED = "/opt/daemoneye/.venv/bin/daemoneye"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install systemd provides it)")
    return path


def _unit_lines(key: str) -> list[str]:
    text = (SYSTEMD / "daemoneye.service").read_text()
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def test_exec_start_and_documentation_name_the_documented_install() -> None:
    assert _unit_lines("ExecStart") == [f"{INSTALLED} --mode system daemon"]
    documentation = " ".join(_unit_lines("Documentation")).split()
    assert "file:/opt/daemoneye/README.md" in documentation
    for target in documentation:  # each one is a file of the source tree installed there
        assert target.startswith("file:/opt/daemoneye/"), target
        assert (ROOT / target.removeprefix("file:/opt/daemoneye/")).is_file(), target
    # The file sink's usual path must be writable under ProtectSystem=strict.
    assert _unit_lines("LogsDirectory") == ["daemoneye"]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    # verify also checks that ExecStart exists: point it at this checkout's entry point (the
    # path the unit names is checked above). Works without systemd as PID 1.
    entry_point = Path(sys.executable).with_name("daemoneye")
    assert entry_point.is_file()
    unit = tmp_path / "daemoneye.service"
    unit.write_text(
        (SYSTEMD / "daemoneye.service").read_text().replace(INSTALLED, str(entry_point))
    )
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "daemoneye.service" not in result.stderr, result.stderr  # no warnings about our unit


def test_sysusers_creates_the_socket_group(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (tmp_path / "etc" / name).write_text("")
    result = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(SYSTEMD / "daemoneye.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    groups = (tmp_path / "etc" / "group").read_text().splitlines()
    assert [line.split(":")[0] for line in groups] == ["daemoneye"]
    assert (tmp_path / "etc" / "passwd").read_text() == ""  # the daemon runs as root


def test_tmpfiles_creates_the_system_mode_directories(tmp_path: Path) -> None:
    tmpfiles = _tool("systemd-tmpfiles")
    result = subprocess.run(
        [tmpfiles, "--create", f"--root={tmp_path}", str(SYSTEMD / "daemoneye.tmpfiles")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for directory in ("etc/daemoneye/rules.d", "var/lib/daemoneye", "var/log/daemoneye"):
        assert (tmp_path / directory).is_dir(), directory
    assert (tmp_path / "var/lib/daemoneye").stat().st_mode & 0o777 == 0o750
