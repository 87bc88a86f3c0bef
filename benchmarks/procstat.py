"""What one process costs, read from /proc: CPU ticks (utime + stime, all threads) and RSS."""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole thread group (stat fields 14 and 15), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        raw = stat.read()
    fields = raw[raw.rfind(b")") + 2 :].split()  # fields[0] is field 3
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """VmRSS from /proc/<pid>/status, in bytes (0 for a zombie or kernel thread)."""
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm", "rb") as name:
        return name.read().decode("utf-8", "replace").strip()


def children(pid: int) -> list[int]:
    """Direct children of `pid` (a scan of /proc: fine for the few times we need it)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        if int(raw[raw.rfind(b")") + 2 :].split()[1]) == pid:
            found.append(int(name))
    return found


def _is_procmond(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"daemoneye.procmond" in cmdline.read()
    except OSError:
        return False


def collector_of(agent_pid: int) -> int | None:
    """The agent's procmond (its child running `daemoneye.procmond`, or its grandchild through
    procmond's launcher when the agent started as root), None when there is none."""
    for pid in children(agent_pid):
        if _is_procmond(pid):
            return pid
        for grandchild in children(pid):
            if _is_procmond(grandchild):
                return grandchild
    return None


def daemon_pids(agent_pid: int) -> tuple[int, ...]:
    """The daemon's processes: the agent, then its procmond when it runs, then the rest (the
    launcher, started as root, which costs nothing while idle)."""
    collector = collector_of(agent_pid)
    if collector is None:
        return (agent_pid,)
    return (agent_pid, collector, *(p for p in children(agent_pid) if p != collector))
