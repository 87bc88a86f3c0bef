"""The agent's end of the collector pair: start procmond, read its frames, ask it to signal.

procmond is started over `socket.socketpair()` with its end inherited (`--fd`); the agent's
end is never inherited by anyone. A reader thread blocks on the pair, validates each frame
whole (procmond/frames.py) and queues it (bounded: a full queue stops the reader, which makes
procmond's writes wait, which leaves events in the kernel's and procmond's bounded queues);
`wakeup` then tells the event loop. When the pair ends — EOF because procmond died, or a frame
that does not validate — the reader queues a `Lost` with the reason and stops; the daemon
restarts procmond (`restart`), whose first scan is a full one that the agent reconciles.

Started as root, the agent hands procmond's starts to its launcher (procmond/launcher.py,
`launcher`), forked before the agent dropped: every procmond, the first and each one after a
crash, then runs with the same capabilities, and is watched through a pidfd (`Launched`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemoneye.config.schema import CollectorConfig
from daemoneye.ipc.codec import to_wire
from daemoneye.procmond import frames
from daemoneye.procmond.launcher import Launched, Launcher, Request

log = logging.getLogger(__name__)

QUEUE_FRAMES = 1024
SELF_EXE = "/proc/self/exe"
STOP_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Lost:
    """The pair ended: `reason` says how (EOF, or the malformed frame's kind and field)."""

    reason: str
    at: float  # monotonic


def procmond_base_command(boot_time: float, proc_root: str, user: str | None = None) -> list[str]:
    """procmond's command line without the per-start part (`Request.arguments`): what the
    launcher is given once."""
    return [
        sys.executable,
        "-m",
        "daemoneye.procmond",
        "--boot-time",
        repr(boot_time),
        "--proc-root",
        proc_root,
        *(["--user", user] if user is not None else []),
    ]


def log_level_name() -> str:
    return logging.getLevelName(logging.getLogger("daemoneye").getEffectiveLevel()).lower()


def procmond_command(
    fd: int, settings: CollectorConfig, boot_time: float, proc_root: str, user: str | None = None
) -> list[str]:
    request = Request(json.dumps(to_wire(settings)), log_level_name())
    return [*procmond_base_command(boot_time, proc_root, user), *request.arguments(fd)]


def last_pid(proc_root: str = "/proc") -> int | None:
    """The pid the kernel handed out last (/proc/loadavg): how many tasks were created between
    two readings is an upper bound of the execs nobody saw in between."""
    try:
        with open(f"{proc_root}/loadavg", "rb") as loadavg:
            return int(loadavg.read().split()[4])
    except (OSError, ValueError, IndexError):
        return None


class ProcmondLink:
    """One running procmond and its pair; `start()` again after a `Lost` starts a new one."""

    def __init__(
        self,
        settings: CollectorConfig,
        *,
        boot_time: float,
        proc_root: str,
        wakeup: Callable[[], None],
        user: str | None = None,
    ) -> None:
        self.settings = settings
        self.user = user  # started as root: procmond drops to this user (procmond/privileges.py)
        self.boot_time = boot_time
        self.proc_root = proc_root
        self._wakeup = wakeup
        self.frames: queue.Queue[Any] = queue.Queue(QUEUE_FRAMES)
        # Whether the loop was told of what is queued: one wake-up per batch, not per frame
        # (under an exec storm procmond sends a frame every few ms; each wake-up costs the
        # loop a pass). `take` clears it before it drains, so a frame queued after the drain
        # always wakes the loop.
        self._told = False
        self.process: subprocess.Popen[bytes] | Launched | None = None
        self.launcher: Launcher | None = None  # attached by the root agent before it drops
        self.hello: frames.Hello | None = None
        self._pair: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._request_ids = itertools.count(1)
        self._pending: dict[
            int, tuple[asyncio.AbstractEventLoop, asyncio.Future[frames.SignalResult]]
        ] = {}
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, *, read: bool = True) -> None:
        """Start procmond with one end of a new pair and a reader on the other (`read=False`:
        the reader later, by `start_reader`, so that the agent can drop its privileges while
        it still has one thread)."""
        launcher = self.launcher
        if launcher is not None and not launcher.alive():
            log.error(
                "procmond's launcher (pid %d) is gone: procmond is started by the agent from now "
                "on, without its capabilities (no kernel events, other users' details hidden), "
                "until the daemon is restarted",
                launcher.pid,
            )
            launcher.close()
            self.launcher = launcher = None
        # Each pair has a queue of its own: a reader of the last pair still blocked on a full
        # queue when it was stopped (its frame was taken by `_apply_last_frames`' drain or not)
        # ends into the old queue, so its `Lost` can never be taken for this procmond's end.
        self.frames = queue.Queue(QUEUE_FRAMES)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024**2)
        try:
            if launcher is not None:
                self.process = launcher.spawn(
                    theirs.fileno(), to_wire(self.settings), log_level_name()
                )
            else:
                self.process = self._popen(theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._pair = ours
        self.hello = None
        self.starts += 1
        if read:
            self.start_reader()

    def _popen(self, theirs: socket.socket) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            procmond_command(
                theirs.fileno(), self.settings, self.boot_time, self.proc_root, self.user
            ),
            # This very interpreter, through the magic link: no path walk that an
            # unprivileged agent may not make (e.g. a Python under /root), and no swap of
            # the file at sys.executable between the agent's start and procmond's.
            executable=SELF_EXE if os.path.exists(SELF_EXE) else None,
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )

    def start_reader(self) -> None:
        """The thread that reads the current pair."""
        assert self._pair is not None, "start() first"
        self._reader = threading.Thread(
            target=self._read,
            args=(self._pair, self.frames),
            name="daemoneye-procmond-reader",
            daemon=True,
        )
        self._reader.start()

    def _read(self, pair: socket.socket, into: queue.Queue[Any]) -> None:
        """The reader thread: frames off the pair into its queue, a `Lost` at the end."""
        try:
            while True:
                payload = frames.read_frame(pair, frames.FROM_PROCMOND)
                if isinstance(payload, frames.SignalResult):
                    self._answer(payload)
                    continue
                if isinstance(payload, frames.Hello):
                    self.hello = payload
                into.put(payload)
                if not self._told:
                    self._told = True
                    self._wakeup()
        except frames.PairClosed:
            reason = "procmond closed the pair (it exited or was killed)"
        except frames.FrameError as exc:
            reason = f"procmond sent a malformed frame: {exc}"
        except OSError as exc:
            reason = f"reading from procmond failed: {exc}"
        into.put(Lost(reason, time.monotonic()))
        if into is self.frames:  # not a reader of a pair stopped and replaced already
            self._fail_pending(reason)
        self._wakeup()

    def take(self) -> list[Any]:
        """Every frame queued so far (a `Lost` last, if the pair ended)."""
        self._told = False
        taken = []
        while True:
            try:
                taken.append(self.frames.get_nowait())
            except queue.Empty:
                return taken

    # -- commands --------------------------------------------------------------------------
    def _send(self, payload: object) -> None:
        pair = self._pair
        if pair is None:
            raise ConnectionError("procmond is not running")
        with self._send_lock:
            frames.write_frame(pair, payload)

    def rescan(self) -> None:
        self._send(frames.Rescan())

    async def signal(
        self, pid: int, start_time: float, sig: signal.Signals, timeout: float = 5.0
    ) -> frames.SignalResult:
        """Ask procmond to signal the instance; its answer (or 'refused' when it is gone)."""
        loop = asyncio.get_running_loop()
        request_id = next(self._request_ids)
        answer: asyncio.Future[frames.SignalResult] = loop.create_future()
        self._pending[request_id] = (loop, answer)
        try:
            await asyncio.to_thread(
                self._send, frames.SignalRequest(request_id, pid, start_time, int(sig))
            )
            return await asyncio.wait_for(answer, timeout)
        except (OSError, TimeoutError) as exc:
            return frames.SignalResult(request_id, "refused", f"procmond did not answer: {exc}")
        finally:
            self._pending.pop(request_id, None)

    def _answer(self, result: frames.SignalResult) -> None:
        pending = self._pending.get(result.request_id)
        if pending is None:
            log.warning(
                "procmond answered signal request %d, which nobody asked", result.request_id
            )
            return
        loop, answer = pending
        loop.call_soon_threadsafe(_resolve, answer, result)

    def _fail_pending(self, reason: str) -> None:
        for request_id, (loop, answer) in list(self._pending.items()):
            loop.call_soon_threadsafe(
                _resolve, answer, frames.SignalResult(request_id, "refused", reason)
            )

    # -- ending ----------------------------------------------------------------------------
    def stop(self) -> int | None:
        """Close the pair (procmond exits on EOF), reap it; SIGKILL if it does not go."""
        pair, self._pair = self._pair, None
        if pair is not None:
            try:
                pair.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("the pair was already shut down")
            pair.close()
        process = self.process
        if process is None:
            return None
        if isinstance(process, Launched):
            code = None  # the launcher reaps it; its status is the launcher's to see
            if not process.ended(STOP_TIMEOUT_S):
                log.warning("procmond (pid %d) did not exit: killing it", process.pid)
                process.kill()
                process.ended(STOP_TIMEOUT_S)
            process.close()
        else:
            code = self._wait(process)
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(STOP_TIMEOUT_S)
        return code

    @staticmethod
    def _wait(process: subprocess.Popen[bytes]) -> int:
        try:
            code = process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("procmond (pid %d) did not exit: killing it", process.pid)
            process.kill()
            code = process.wait()
        return code

    def close_launcher(self) -> None:
        """At the daemon's end, after `stop`: the launcher exits and is reaped."""
        launcher, self.launcher = self.launcher, None
        if launcher is not None:
            launcher.close()

    def alive(self) -> bool:
        process = self.process
        if isinstance(process, Launched):
            return not process.ended()
        return process is not None and process.poll() is None


def _resolve(answer: asyncio.Future[frames.SignalResult], result: frames.SignalResult) -> None:
    if not answer.done():
        answer.set_result(result)
