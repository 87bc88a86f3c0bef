"""procmond's launcher: so that an agent that has already dropped to the daemon's user can
start procmond again, with its capabilities, after procmond died.

The agent forks the launcher before it drops, handing it procmond's command line (everything
but the per-start part). The launcher keeps procmond's capabilities, as ambient capabilities
under the daemon's user (`drop_launcher`), and nothing else. It serves one request and
refuses everything else (`parse_request`):

- a JSON object `{"settings": {...}, "log_level": "info"}` of at most MAX_REQUEST bytes, with
- exactly one descriptor (SCM_RIGHTS), a socket: procmond's end of a new collector pair,
- sent by the agent itself (SCM_CREDENTIALS: the launcher's parent pid, uid 0 or the user's),
- while no procmond it started is still running.

It appends `--fd N --settings S --log-level L` to the command it was given, fork+execs it,
and answers `{"pid": N}` with a pidfd of that procmond (opened while it is still the
launcher's unreaped child: never another process that reused the pid). The agent cannot
choose what runs: a compromised agent gets a fresh procmond at most. Refusals from the agent
are answered `{"error": ...}`; anything from anyone else is dropped unanswered.

- The agent watches procmond through that pidfd (`Launched`): it is the launcher's child.
- Both run as the same user, so the agent may still signal procmond.
- The launcher dies with the agent (PR_SET_PDEATHSIG, and EOF on its channel), and procmond
  dies with the launcher (its own PDEATHSIG), so killing the agent leaves no collector behind.

Stdlib only.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemoneye.procmond.privileges import (
    PROCMOND_START_CAPABILITIES,
    Account,
    PrivilegeError,
    allow_realtime_priority,
    drop_launcher,
)

MAX_REQUEST = 64 * 1024  # a request is ~1 KiB of settings; a longer one is refused whole
MAX_DESCRIPTORS = 16  # room to receive (and close) descriptors beyond the one allowed
LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
ANSWER_TIMEOUT_S = 30.0
SELF_EXE = "/proc/self/exe"
_IGNORED = (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class LauncherError(PrivilegeError):
    """The launcher is gone or refused a request."""


class Refused(ValueError):
    """A request the launcher does not serve; the text says why."""


@dataclass(frozen=True, slots=True)
class Request:
    """The per-start part of procmond's command line."""

    settings: str  # a JSON object, as re-serialized by the launcher
    log_level: str

    def arguments(self, fd: int) -> list[str]:
        return ["--fd", str(fd), f"--settings={self.settings}", "--log-level", self.log_level]


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a message, as the kernel says (SCM_CREDENTIALS)."""

    pid: int
    uid: int


def parse_request(
    message: bytes,
    truncated: bool,
    descriptors: Sequence[int],
    sender: Sender | None,
    agent: Sender,
) -> Request:
    """The request in one received message, or Refused. `agent` is who may ask: its pid, and
    the user it drops to (uid 0, before its drop, is accepted too). Closes nothing."""
    if sender is None or sender.pid != agent.pid or sender.uid not in (0, agent.uid):
        raise Refused(f"not from the agent (sender {sender})")
    if truncated:
        raise Refused(f"a request is at most {MAX_REQUEST} bytes and one descriptor")
    if len(descriptors) != 1:
        raise Refused(f"a request carries exactly one descriptor, not {len(descriptors)}")
    if not stat.S_ISSOCK(os.fstat(descriptors[0]).st_mode):
        raise Refused("the descriptor is not a socket")
    try:
        body = json.loads(message)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Refused(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(body, dict) or set(body) != {"settings", "log_level"}:
        raise Refused('a request is {"settings": {...}, "log_level": "..."}')
    settings, level = body["settings"], body["log_level"]
    if not isinstance(settings, dict):
        raise Refused("settings is not a JSON object")
    if not isinstance(level, str) or level not in LOG_LEVELS:
        raise Refused(f"log_level is not one of {sorted(LOG_LEVELS)}")
    return Request(json.dumps(settings, separators=(",", ":")), level)


@dataclass(slots=True)
class Launched:
    """The agent's handle on a procmond its launcher started: the pid and a pidfd of it."""

    pid: int
    pidfd: int

    def ended(self, timeout: float = 0.0) -> bool:
        """Whether procmond has exited, waiting up to `timeout` seconds for it."""
        if self.pidfd < 0:
            return True
        poller = select.poll()  # a pidfd is readable once its process has exited
        poller.register(self.pidfd, select.POLLIN)
        return bool(poller.poll(int(timeout * 1000)))

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def close(self) -> None:
        pidfd, self.pidfd = self.pidfd, -1
        if pidfd >= 0:
            os.close(pidfd)


@dataclass(slots=True)
class Launcher:
    """The agent's handle on its launcher process."""

    pid: int
    channel: socket.socket

    def spawn(self, fd: int, settings: dict[str, Any], log_level: str) -> Launched:
        """Start procmond with `fd` as its end of the pair, these settings and log level.
        LauncherError when the launcher is gone or refused."""
        self._drain()
        request = json.dumps({"settings": settings, "log_level": log_level}).encode()
        try:
            self.channel.sendmsg(
                [request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            )
            self.channel.settimeout(ANSWER_TIMEOUT_S)
            message, ancillary, _, _ = self.channel.recvmsg(
                MAX_REQUEST, socket.CMSG_SPACE(MAX_DESCRIPTORS * 4), socket.MSG_CMSG_CLOEXEC
            )
        except OSError as exc:
            raise LauncherError(f"procmond's launcher (pid {self.pid}) is gone: {exc}") from None
        pidfds = _descriptors(ancillary)
        try:
            answer = json.loads(message) if message else {"error": "the launcher is gone"}
        except ValueError:
            answer = {"error": f"an answer that is not JSON: {message[:80]!r}"}
        if not isinstance(answer, dict) or not isinstance(answer.get("pid"), int) or not pidfds:
            for extra in pidfds:
                os.close(extra)
            raise LauncherError(f"procmond's launcher did not start procmond: {answer}")
        for extra in pidfds[1:]:
            os.close(extra)
        return Launched(answer["pid"], pidfds[0])

    def _drain(self) -> None:
        """Drop answers nobody waits for (none are expected: the launcher answers only its
        agent, once per request), so that a spawn reads its own."""
        self.channel.setblocking(False)
        try:
            while True:
                message, ancillary, _, _ = self.channel.recvmsg(
                    MAX_REQUEST, socket.CMSG_SPACE(MAX_DESCRIPTORS * 4), socket.MSG_CMSG_CLOEXEC
                )
                for fd in _descriptors(ancillary):
                    os.close(fd)
                if not message and not ancillary:
                    return  # the launcher is gone: the spawn says it
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # the spawn says it
        finally:
            self.channel.setblocking(True)

    def alive(self) -> bool:
        """Whether the launcher still runs (it is the agent's child; a dead one is reaped)."""
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def close(self) -> None:
        """Stop the launcher (it exits when its channel closes) and reap it."""
        self.channel.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    return [
        fd
        for level, kind, data in ancillary
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
        for fd in array.array("i", data[: len(data) - len(data) % 4])
    ]


def _sender(ancillary: list[tuple[int, int, bytes]]) -> Sender | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, uid, _ = _CREDENTIALS.unpack(data[: _CREDENTIALS.size])
            return Sender(pid, uid)
    return None


def start_launcher(
    account: Account,
    command: Sequence[str],
    keep: frozenset[str] = PROCMOND_START_CAPABILITIES,
    *,
    realtime_priority: int = 1,
) -> Launcher:
    """Fork the launcher, which will run `command` (procmond's, without the per-start
    arguments) on each request. Call as root, before the agent's own drop, from the thread
    that stays (the parent-death signal follows the forking thread): the child drops at once to
    `account` with `keep` (ambient) and RLIMIT_RTPRIO raised to `realtime_priority` for
    procmond's event reader. A failed drop ends the child; the first spawn says so."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # Before any request can be queued: the kernel stamps a message with its sender only
    # while the receiving end asks for it.
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    agent = Sender(os.getpid(), account.uid)
    argv = list(command)
    pid = os.fork()
    if pid == 0:  # the launcher: never returns
        code = 1
        try:
            ours.close()
            _close_other_descriptors(keep=theirs.fileno())
            _reset_signals()
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != agent.pid:
                os._exit(0)  # the agent died before the request took effect
            if realtime_priority:
                allow_realtime_priority(realtime_priority)
            drop_launcher(account, keep)  # re-arms the parent-death signal it clears
            if os.getppid() != agent.pid:
                os._exit(0)  # the agent died while the signal was not armed
            _serve(theirs, argv, agent)
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    return Launcher(pid, ours)


def _reset_signals() -> None:
    """The agent's handlers (asyncio's wake-up descriptor among them) mean nothing here. A
    terminal's Ctrl-C or a SIGHUP for the agent's reload must not end the launcher: it ends
    with the agent."""
    signal.set_wakeup_fd(-1)
    for signum in _IGNORED:
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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


def _running(pid: int | None) -> bool:
    """Whether the launcher's child `pid` has not been reaped (exited ones are reaped now)."""
    if pid is None:
        return False
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return reaped == 0


def _serve(channel: socket.socket, command: list[str], agent: Sender) -> None:
    signal.signal(signal.SIGCHLD, _reap)
    current: int | None = None  # the procmond started last
    while True:
        message, ancillary, flags, _ = channel.recvmsg(
            MAX_REQUEST, socket.CMSG_SPACE(MAX_DESCRIPTORS * 4) + socket.CMSG_SPACE(12)
        )
        sender = _sender(ancillary)
        fds = _descriptors(ancillary)
        if not message and not fds and sender is None:
            return  # the agent closed its end (an empty message still names its sender)
        answer: dict[str, object] | None
        pidfd: int | None = None
        try:
            truncated = bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))
            request = parse_request(message, truncated, fds, sender, agent)
            if _running(current):
                raise Refused(f"procmond (pid {current}) is still running")
            current, pidfd = _spawn(command + request.arguments(fds[0]), fds[0])
            answer = {"pid": current}
        except Refused as exc:
            from_agent = sender is not None and sender.pid == agent.pid
            answer = {"error": str(exc)} if from_agent else None
            if answer is None:
                _note(f"procmond's launcher: dropped a message: {exc}")
        except OSError as exc:
            answer = {"error": f"could not start procmond: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        if answer is None:
            continue
        rights = [] if pidfd is None else [_rights(pidfd)]
        try:
            channel.sendmsg([json.dumps(answer).encode()], rights)
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _rights(fd: int) -> tuple[int, int, array.array[int]]:
    return (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))


def _note(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, text.encode(errors="replace")[:512] + b"\n")


def _spawn(argv: list[str], fd: int) -> tuple[int, int]:
    """fork+exec procmond; its pid and a pidfd opened before it can be reaped."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        pid = os.fork()
        if pid == 0:  # procmond-to-be
            try:
                _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                for signum in (signal.SIGCHLD, *_IGNORED, signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(signum, signal.SIG_DFL)  # as procmond would get from Popen
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                os.set_inheritable(fd, True)
                os.execv(SELF_EXE if os.path.exists(SELF_EXE) else argv[0], argv)
            finally:
                os._exit(127)
        try:
            return pid, os.pidfd_open(pid)
        except OSError:
            os.kill(pid, signal.SIGKILL)
            raise
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
