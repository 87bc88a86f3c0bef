"""What the numbers were measured on."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path
from typing import Any

import psutil

from benchmarks.tools import version


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def info() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_model": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_total_gib": round(memory.total / 2**30, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "pid_max": int(Path("/proc/sys/kernel/pid_max").read_text()),
        "processes_at_start": sum(1 for name in os.listdir("/proc") if name.isdigit()),
        "loadavg_at_start": os.getloadavg(),
        "euid": os.geteuid(),
        "top": version(["top", "-V"]),
        "htop": version(["htop", "--version"]),
        "tmux": version(["tmux", "-V"]),
        "gcc": version(["gcc", "--version"]),
        "psutil": psutil.__version__,
    }
