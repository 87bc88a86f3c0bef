"""The shipped systemd files are what systemd accepts: the unit passes `systemd-analyze verify`,
the sysusers and tmpfiles files apply in a scratch root, and the unit starts what the install
it documents puts in place."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemoneye.procmond.privileges import PROCMOND_START_CAPABILITIES

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
    # The store and the file sink's usual path must be writable under ProtectSystem=strict.
    assert _unit_lines("ReadWritePaths") == ["-/var/lib/daemoneye -/var/log/daemoneye"]
    assert _unit_lines("RuntimeDirectory") == ["daemoneye"]


def test_the_unit_runs_the_split_with_a_bounding_set_matching_procmond() -> None:
    """Root starts it (no User=), the bounding set is procmond's capabilities at start plus what
    the switch to the daemoneye user takes, and nothing else; NoNewPrivileges stays on."""
    assert _unit_lines("User") == []
    assert _unit_lines("AmbientCapabilities") == []
    (bounding,) = _unit_lines("CapabilityBoundingSet")
    switching = {"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_CHOWN"}
    assert set(bounding.split()) == PROCMOND_START_CAPABILITIES | switching
    assert _unit_lines("NoNewPrivileges") == ["yes"]
    assert _unit_lines("LimitRTPRIO") == ["1"]  # the event reader's SCHED_FIFO, no CAP_SYS_NICE
    # Not StateDirectory=/LogsDirectory=: without User= systemd would chown them to root.
    assert _unit_lines("StateDirectory") == _unit_lines("LogsDirectory") == []


def test_the_syscall_filter_allows_the_privilege_drop() -> None:
    analyze = _tool("systemd-analyze")
    (line,) = _unit_lines("SystemCallFilter")
    allowed = line.split()
    group_names = [name for name in allowed if name.startswith("@")]
    listing = subprocess.run(
        [analyze, "syscall-filter", *group_names], capture_output=True, text=True, timeout=60
    ).stdout
    groups = {line.strip() for line in listing.splitlines() if line.strip().startswith("@")}
    expanded = subprocess.run(
        [analyze, "syscall-filter", *group_names, *sorted(groups)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split() + [name for name in allowed if not name.startswith("@")]
    # the drops, and bpf(2) for loading the exec capture (in @privileged, so named alone)
    for call in ("capset", "prctl", "setgroups", "setresgid", "setresuid", "fchown", "bpf"):
        assert call in expanded, call


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


def test_sysusers_creates_the_daemon_user_and_group(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    _scratch_root(tmp_path)
    result = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(SYSTEMD / "daemoneye.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    groups = (tmp_path / "etc" / "group").read_text().splitlines()
    assert [line.split(":")[0] for line in groups] == ["daemoneye"]
    (user,) = (tmp_path / "etc" / "passwd").read_text().splitlines()
    name, _, uid, gid, _, _, shell = user.split(":")
    assert name == "daemoneye"
    assert 0 < int(uid) < 1000  # a system user
    assert gid == groups[0].split(":")[2]
    assert shell.endswith("nologin")


def _scratch_root(root: Path) -> None:
    (root / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / name).write_text("")


def test_tmpfiles_creates_the_system_mode_directories_for_the_sysusers_user(
    tmp_path: Path,
) -> None:
    """As the README installs them: sysusers first (the user the directories belong to)."""
    sysusers, tmpfiles = _tool("systemd-sysusers"), _tool("systemd-tmpfiles")
    _scratch_root(tmp_path)
    for command in (
        [sysusers, f"--root={tmp_path}", str(SYSTEMD / "daemoneye.sysusers")],
        [tmpfiles, "--create", f"--root={tmp_path}", str(SYSTEMD / "daemoneye.tmpfiles")],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    uid = int((tmp_path / "etc" / "passwd").read_text().split(":")[2])
    for directory in ("etc/daemoneye/rules.d", "var/lib/daemoneye", "var/log/daemoneye"):
        assert (tmp_path / directory).is_dir(), directory
    assert (tmp_path / "var/lib/daemoneye").stat().st_mode & 0o777 == 0o750
    for directory in ("var/lib/daemoneye", "var/log/daemoneye", "run/daemoneye"):
        assert (tmp_path / directory).stat().st_uid == uid, directory
    assert (tmp_path / "etc/daemoneye").stat().st_uid == 0


def test_tmpfiles_gives_the_store_socket_and_log_directories_to_the_daemon_user() -> None:
    owned = {}
    for line in (SYSTEMD / "daemoneye.tmpfiles").read_text().splitlines():
        if line and not line.startswith("#"):
            _, path, _, user, group, _ = line.split()
            owned[path] = (user, group)
    for path in ("/var/lib/daemoneye", "/var/log/daemoneye", "/run/daemoneye"):
        assert owned[path] == ("daemoneye", "daemoneye"), path
    assert owned["/etc/daemoneye"] == ("root", "root")  # config stays root's
