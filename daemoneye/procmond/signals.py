"""procmond signals exactly the process instance a client saw, never a reused pid.

A pid names whichever process holds it now; the client names an instance (pid + start time).
The check and the kill are made race-free with a pidfd: the descriptor is opened first, so it
pins the process that held the pid at that moment; the start time read from /proc afterwards
must be the client's, and the signal then goes through the descriptor — if that process has
died since, the kernel refuses (ESRCH) instead of hitting a newcomer. Without pidfd support
(Linux < 5.3) the start time is checked immediately before kill(2), a window of microseconds.
"""

from __future__ import annotations

import os
import signal

from daemoneye.collector.procfs import CLOCK_TICKS, parse_stat_fields


class StaleProcess(Exception):
    """The instance is gone, or its pid now belongs to another process."""


class SignalRefused(Exception):
    """The signal was not sent: refused by policy or by the kernel."""


def start_time_of(pid: int, boot_time: float, proc_root: str = "/proc") -> float:
    """The start time of whatever process holds `pid` now, computed exactly as the scanner
    does (boot time + start ticks / CLK_TCK). Raises StaleProcess when no process has it."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as stat_file:
            raw = stat_file.read()
        ticks = parse_stat_fields(raw).start_ticks
    except (FileNotFoundError, ProcessLookupError, ValueError):
        raise StaleProcess(f"no process with pid {pid} is running: nothing was signalled") from None
    return boot_time + ticks / CLOCK_TICKS


def signal_instance(
    pid: int, start_time: float, sig: signal.Signals, *, boot_time: float, proc_root: str = "/proc"
) -> str:
    """Send `sig` to the instance (pid, start_time); returns "pidfd" or "kill", the way it was
    sent. Raises StaleProcess or SignalRefused, in which case nothing was sent."""
    if pid <= 1:
        raise SignalRefused(
            f"refusing to signal pid {pid}: only real processes other than init may be signalled"
        )
    if pid in (os.getpid(), os.getppid()):
        raise SignalRefused(
            "refusing to signal the daemon itself (stop it with its service "
            "manager, or SIGTERM from a shell)"
        )
    pidfd = _pidfd_open(pid)
    try:
        actual = start_time_of(pid, boot_time, proc_root)
        if abs(actual - start_time) > 0.5 / CLOCK_TICKS:
            raise StaleProcess(
                f"pid {pid} now belongs to another process (started at {actual:.2f}, not "
                f"{start_time:.2f}): the instance you saw has ended; nothing was signalled"
            )
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
                return "pidfd"
            os.kill(pid, sig)
            return "kill"
        except ProcessLookupError:
            raise StaleProcess(f"pid {pid} ended just now: nothing was signalled") from None
        except PermissionError:
            raise SignalRefused(
                f"the kernel refused to send {sig.name} to pid {pid}: "
                "permission denied (the daemon runs as uid "
                f"{os.geteuid()})"
            ) from None
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd_open(pid: int) -> int | None:
    """A pidfd for `pid`, None when the kernel or Python has none (fall back to kill)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except ProcessLookupError:
        raise StaleProcess(f"no process with pid {pid} is running: nothing was signalled") from None
    except OSError:  # ENOSYS (old kernel), EMFILE …: the checked kill still works
        return None
    return fd
