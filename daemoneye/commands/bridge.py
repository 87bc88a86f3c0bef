"""`daemoneye-cli bridge`: the remote end of `--host ssh://…`. It connects to this host's daemon
socket and relays bytes between it and its own stdin/stdout (ssh's channel) until either side
closes. It reads nothing it relays: the daemon checks every message, and authorizes the peer —
this process, running as the SSH user — by SO_PEERCRED as for any local client.

Without --socket it tries the socket of its mode, then the system daemon's socket, so an
ordinary SSH user reaches the host's system daemon. Exit 3 (BRIDGE_NO_DAEMON) with the reason
on stderr when none answers; the local side turns that into "no DaemonEye daemon answers on …".
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from pathlib import Path

from daemoneye.commands.common import Context
from daemoneye.ipc.ssh import BRIDGE_NO_DAEMON
from daemoneye.paths import SYSTEM_SOCKET

_CHUNK = 65536


def _candidates(ctx: Context, socket_given: bool) -> list[Path]:
    own = ctx.loaded.paths.socket
    if socket_given:
        return [own]
    system = SYSTEM_SOCKET
    return [own] if own == system else [own, system]


def _connect(paths: list[Path]) -> socket.socket | str:
    reasons: list[str] = []
    for path in paths:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except OSError as exc:
            sock.close()
            reasons.append(f"{path}: {exc.strerror or exc}")
    return "; ".join(reasons)


def _pump_in(sock: socket.socket) -> None:
    """stdin → daemon; at EOF (ssh closed the channel) say so to the daemon."""
    try:
        while data := os.read(0, _CHUNK):
            sock.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def run_bridge(ctx: Context, *, socket_given: bool) -> int:
    target = _connect(_candidates(ctx, socket_given))
    if isinstance(target, str):
        print(f"daemoneye bridge: no daemon answers: {target}", file=sys.stderr)
        return BRIDGE_NO_DAEMON
    sock = target
    threading.Thread(target=_pump_in, args=(sock,), daemon=True, name="bridge-in").start()
    try:
        while data := sock.recv(_CHUNK):  # daemon → stdout, blocking: ssh's pace is ours
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
    except OSError:
        pass  # ssh went away, or the daemon dropped us: either way the relay is over
    finally:
        sock.close()
    return 0
