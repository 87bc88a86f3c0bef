"""The external tools the suite compares against, installed when missing and we may."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def ensure(command: str, package: str) -> str | None:
    """None when `command` is on PATH (after installing `package` with apt-get when running as
    root and it is missing); else the reason it is unavailable. Says what it does."""
    if shutil.which(command):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{command} is not installed (as root with apt-get the suite installs {package})"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", package]):
        print(f"benchmarks: {command} missing, running: {' '.join(argv)}", flush=True)
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            return f"{' '.join(argv)} failed: {' '.join(tail)}"
    if shutil.which(command) is None:
        return f"{package} installed but {command} is still not on PATH"
    return None


def version(argv: list[str]) -> str:
    """First line a tool prints about its version ('' when it prints nothing usable)."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else ""


def build_c(source: Path, binary: Path) -> str | None:
    """Compile `source` with gcc -O2 into `binary`; None on success, else why it failed."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return "no C compiler (gcc/cc) on PATH"
    result = subprocess.run(
        [gcc, "-O2", "-o", str(binary), str(source)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return f"gcc failed: {result.stderr.strip()[:200]}"
    return None
