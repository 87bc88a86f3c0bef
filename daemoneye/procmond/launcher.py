"""procmond's launcher: so that an agent that has already dropped to the daemon's user can
start procmond again, with its capabilities, after procmond died.

The agent forks the launcher before it drops. The launcher keeps procmond's capabilities, as
ambient capabilities under the daemon's user (`drop_launcher`), and nothing else. It waits on
a socket pair for one kind of request: argv plus one descriptor (procmond's end of a new
collector pair, passed with SCM_RIGHTS). It answers with the pid of the procmond it
fork+exec'd, and reaps it when it ends.

- The agent watches that procmond through a pidfd (`os.pidfd_open`), because procmond is the
  launcher's child, not the agent's.
- Both run as the same user, so the agent may still signal procmond.
- The launcher dies with the agent (PR_SET_PDEATHSIG), and procmond dies with the launcher
  (its own PDEATHSIG), so killing the agent leaves no collector behind.

Stdlib only.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import os
import signal
import socket
from dataclasses import dataclass

from daemoneye.procmond.privileges import (
    PROCMOND_CAPABILITIES,
    Account,
    PrivilegeError,
    drop_launcher,
)

FD_PLACEHOLDER = "{fd}"  # in argv: replaced by the passed descriptor's number in procmond
MAX_REQUEST = 64 * 1024
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class LauncherError(PrivilegeError):
    """The launcher is gone or refused a request."""


@dataclass(slots=True)
class Launcher:
    """The agent's handle on its launcher process."""

    pid: int
    channel: socket.socket

    def spawn(self, argv: list[str], fd: int) -> int:
        """Start procmond as `argv` (FD_PLACEHOLDER replaced by `fd`'s number there) with `fd`
        inherited; its pid. LauncherError when the launcher is gone or could not exec."""
        request = json.dumps({"argv": argv}).encode()
        try:
            self.channel.sendmsg(
                [request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            )
            answer = json.loads(self.channel.recv(MAX_REQUEST) or b'{"error": "launcher gone"}')
        except (OSError, ValueError) as exc:
            raise LauncherError(f"procmond's launcher (pid {self.pid}) is gone: {exc}") from None
        if "pid" not in answer:
            raise LauncherError(f"procmond's launcher could not start procmond: {answer}")
        pid: int = answer["pid"]
        return pid

    def close(self) -> None:
        """Stop the launcher (it exits when its channel closes) and reap it."""
        self.channel.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def start_launcher(account: Account, keep: frozenset[str] = PROCMOND_CAPABILITIES) -> Launcher:
    """Fork the launcher. Call as root, before the agent's own drop: the child drops at once
    to `account` with `keep` (ambient). A failed drop ends the child; the first spawn says so."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the launcher: never returns
        code = 1
        try:
            ours.close()
            _close_other_descriptors(keep=theirs.fileno())
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() == 1:
                os._exit(0)  # the agent died before the request took effect
            drop_launcher(account, keep)  # re-arms the parent-death signal it clears
            if os.getppid() == 1:
                os._exit(0)  # the agent died while the signal was not armed
            _serve(theirs)
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    return Launcher(pid, ours)


def _close_other_descriptors(keep: int) -> None:
    """Everything the agent had open (store, pairs, sockets) stays out of the launcher."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _reap(signum: int, frame: object) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            continue


def _serve(channel: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        message, ancillary, _, _ = channel.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(4))
        if not message:
            return  # the agent closed its end
        fds = [
            fd
            for level, kind, data in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
            for fd in array.array("i", data[: len(data) - len(data) % 4])
        ]
        try:
            argv = json.loads(message)["argv"]
            if len(fds) != 1 or not isinstance(argv, list) or not argv:
                raise ValueError("a request is argv and exactly one descriptor")
            pid = _spawn([str(arg) for arg in argv], fds[0])
            answer: dict[str, object] = {"pid": pid}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            answer = {"error": str(exc)}
        finally:
            for fd in fds:
                os.close(fd)
        channel.send(json.dumps(answer).encode())


def _spawn(argv: list[str], fd: int) -> int:
    pid = os.fork()
    if pid == 0:  # procmond-to-be
        try:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.set_inheritable(fd, True)
            args = [arg.replace(FD_PLACEHOLDER, str(fd)) for arg in argv]
            os.execv(args[0], args)
        finally:
            os._exit(127)
    return pid
