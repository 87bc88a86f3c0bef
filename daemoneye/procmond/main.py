"""procmond's entry point (`procmond`, `python -m daemoneye.procmond`).

The agent starts it with one end of a socket pair as an inherited descriptor (`--fd`), the
boot time its store keys instances by (`--boot-time`) and the effective `[collector]` settings
(`--settings`, JSON), so both processes agree on every value. Loads no asyncio, ssl, SQLite,
Textual or Rich (tests/unit/test_procmond_imports.py). Exit codes: 0 the agent closed the pair,
2 bad arguments, 3 the agent sent a frame that did not validate, 1 the collector cannot run.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import sys

from daemoneye import heap
from daemoneye.collector.procfs import read_boot_time
from daemoneye.config.schema import CollectorConfig
from daemoneye.errors import DaemonEyeError
from daemoneye.ipc.codec import CodecError, from_wire
from daemoneye.procmond import frames
from daemoneye.procmond.privileges import (
    Account,
    PrivilegeError,
    drop_procmond,
    lookup_account,
    shed_start_capabilities,
)
from daemoneye.procmond.runner import Procmond, open_exec_capture, open_task_passes

log = logging.getLogger("daemoneye.procmond")

_PR_SET_PDEATHSIG = 1
SWITCH_INTERVAL_S = 0.0002


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the agent (its parent) dies; if the agent
    died before the request took effect, exit now. EOF on the pair is the second guard."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() == 1:
        log.error("the agent is gone already: exiting")
        sys.exit(0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="procmond",
        description="DaemonEye's collector process. It is started by the agent "
        "(`daemoneye daemon`, `daemoneye-agent`) and talks only to it.",
    )
    parser.add_argument("--fd", type=int, required=True, help="the inherited socket pair end")
    parser.add_argument("--boot-time", type=float, help="boot time (epoch seconds)")
    parser.add_argument("--settings", default="{}", help="[collector] settings as JSON")
    parser.add_argument("--proc-root", default="/proc")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--user",
        help="started as root: run as this user keeping only the collector's capabilities",
    )
    return parser.parse_args(argv)


def drop_privileges(user: str | None) -> None:
    """Keep only the collector's capabilities (procmond/privileges.py) as `user`, first thing:
    capabilities belong to threads, and the event reader and the hasher are threads. Without
    `user` (an ordinary user's daemon) there is nothing to keep but no_new_privs."""
    if user is not None:
        drop_procmond(lookup_account(user))
    elif os.geteuid() != 0:
        drop_procmond(Account("", os.getuid(), os.getgid(), ()))


def main(argv: list[str] | None = None) -> int:
    heap.limit_arenas()  # before the event reader and the hasher start
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="procmond[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = from_wire(CollectorConfig, json.loads(args.settings), strict=True)
    except (json.JSONDecodeError, CodecError) as exc:
        log.error("--settings: %s", exc)
        return 2
    die_with_parent()
    try:
        drop_privileges(args.user)
    except PrivilegeError as exc:
        log.error("%s", exc)
        return 1
    if os.getppid() == 1:
        log.error("the agent is gone already: exiting")
        return 0
    capture = open_exec_capture(settings)
    tasks = open_task_passes(settings)
    try:
        shed_start_capabilities()
    except PrivilegeError as exc:
        log.error("%s", exc)
        return 1
    # The event reader thread must get the interpreter the moment it wakes: a scan on the
    # main thread would otherwise keep it waiting up to the default 5 ms switch interval.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        pair = socket.socket(fileno=args.fd)
    except OSError as exc:
        log.error("--fd %d is not a socket: %s", args.fd, exc)
        return 2
    boot_time = args.boot_time if args.boot_time is not None else read_boot_time(args.proc_root)
    try:
        procmond = Procmond(
            pair,
            settings,
            boot_time=boot_time,
            proc_root=args.proc_root,
            capture=capture,
            tasks=tasks,
        )
    except DaemonEyeError as exc:
        log.error("%s", exc)
        return 1
    try:
        procmond.start_events()
        procmond.run()
    except (frames.PairClosed, BrokenPipeError, ConnectionResetError):
        log.debug("the agent closed the pair: exiting")
        return 0
    except frames.FrameError as exc:
        log.error("refused a frame from the agent (%s): exiting; the agent restarts procmond", exc)
        return 3
    finally:
        procmond.close()
    return 0
