"""procmond's launcher for real, as root: forked before the agent's drop, it starts procmond
again and again with exactly procmond's capabilities as the daemon's user, serves its one
request and nothing else (garbage, oversized, two descriptors, another sender, a second
procmond while one runs), and dies with the agent."""

from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Iterator

import pytest

from daemoneye.procmond.launcher import Launched, Launcher, LauncherError, start_launcher
from daemoneye.procmond.privileges import (
    PROCMOND_CAPABILITIES,
    PROCMOND_START_CAPABILITIES,
    capability_mask,
    lookup_account,
)
from tests.forked import in_child

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the launcher needs root")

DEADLINE_S = 30.0
# What the test stands in for procmond with: drop as procmond does, report its status and
# arguments, then wait for the test to close the pair.
FAKE_PROCMOND = """
import json, os, socket, sys
from daemoneye.procmond.privileges import drop_procmond, lookup_account, shed_start_capabilities
pair = socket.socket(fileno=int(sys.argv[sys.argv.index("--fd") + 1]))
drop_procmond(lookup_account("nobody"))
shed_start_capabilities()
status = open("/proc/self/status").read()
pair.sendall(json.dumps({"status": status, "argv": sys.argv[1:]}).encode() + b"\\n")
pair.recv(1)
"""
SETTINGS = {"interval": 0.5}


def _fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


@pytest.fixture
def launcher() -> Iterator[Launcher]:
    handle = start_launcher(lookup_account("nobody"), [sys.executable, "-c", FAKE_PROCMOND])
    yield handle
    handle.close()


class Started:
    """A fake procmond the launcher started, with what it reported."""

    def __init__(self, launcher: Launcher) -> None:
        self.ours, theirs = socket.socketpair()
        with theirs:
            self.launched: Launched = launcher.spawn(theirs.fileno(), SETTINGS, "debug")
        self.ours.settimeout(DEADLINE_S)
        line = self.ours.makefile("rb").readline()
        report = json.loads(line)
        self.status = _fields(report["status"])
        self.argv: list[str] = report["argv"]

    def end(self) -> None:
        self.ours.close()
        assert self.launched.ended(DEADLINE_S), "the fake procmond did not exit"
        self.launched.close()


def _answer(launcher: Launcher) -> dict[str, object] | None:
    """The launcher's answer to a raw message, or None when it gave none."""
    poller = select.poll()
    poller.register(launcher.channel, select.POLLIN)
    if not poller.poll(2000):
        return None
    answer: dict[str, object] = json.loads(launcher.channel.recv(65536))
    return answer


def test_each_procmond_it_starts_holds_exactly_procmonds_capabilities(launcher: Launcher) -> None:
    kept = capability_mask(PROCMOND_CAPABILITIES)
    pids = []
    for _ in range(2):  # the first procmond, and one after it "died"
        started = Started(launcher)
        status = started.status
        pids.append(started.launched.pid)
        assert int(status["PPid"]) == launcher.pid
        assert status["Uid"].split() == ["65534"] * 4
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == kept
        assert int(status["CapBnd"], 16) == kept
        assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0
        assert status["NoNewPrivs"] == "1"
        # The command is the launcher's; only the per-start part comes from the request.
        assert started.argv[-5] == "--fd"
        assert started.argv[-3:] == ['--settings={"interval":0.5}', "--log-level", "debug"]
        started.end()
    assert pids[0] != pids[1]
    with open(f"/proc/{launcher.pid}/status") as file:
        launcher_status = _fields(file.read())
    assert launcher_status["Uid"].split() == ["65534"] * 4
    # procmond's capabilities at start (the exec capture's two included), nothing more, ever
    assert int(launcher_status["CapPrm"], 16) == capability_mask(PROCMOND_START_CAPABILITIES)
    assert int(launcher_status["CapEff"], 16) == 0  # it uses none of them itself
    assert int(launcher_status["CapBnd"], 16) == kept


def test_a_second_procmond_is_refused_while_the_first_runs(launcher: Launcher) -> None:
    first = Started(launcher)
    ours, theirs = socket.socketpair()
    with ours, theirs, pytest.raises(LauncherError, match="still running"):
        launcher.spawn(theirs.fileno(), SETTINGS, "info")
    first.end()
    Started(launcher).end()  # once it has ended, the next one starts


@pytest.mark.parametrize(
    ("message", "descriptors", "why"),
    [
        (b"\xff\xfe garbage", 1, "not JSON"),
        (b"[" * 60_000, 1, "not JSON"),  # nesting deeper than the parser's recursion
        (b'{"argv": ["/bin/sh", "-c", "id"]}', 1, "a request is"),
        (b'{"settings": {}, "log_level": ["info"]}', 1, "log_level"),
        (b'{"settings": "x", "log_level": "info"}', 1, "settings is not"),
        (b'{"settings": {}, "log_level": "info", "x": 1}', 1, "a request is"),
        (b"{" + b" " * 70_000 + b"}", 1, "at most"),  # oversized: cut by the kernel, refused
        (b'{"settings": {}, "log_level": "info"}', 0, "exactly one descriptor"),
        (b'{"settings": {}, "log_level": "info"}', 2, "exactly one descriptor"),
        (b'{"settings": {}, "log_level": "info"}', 40, "at most"),
    ],
)
def test_anything_but_its_one_request_is_refused_and_it_still_serves(
    launcher: Launcher, message: bytes, descriptors: int, why: str
) -> None:
    pairs = [socket.socketpair() for _ in range(descriptors)]
    fds = [theirs.fileno() for _, theirs in pairs]
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    launcher.channel.sendmsg([message], rights)
    answer = _answer(launcher)
    assert answer is not None and why in str(answer["error"])
    for ours, theirs in pairs:  # the launcher kept none of them
        theirs.close()
        ours.settimeout(DEADLINE_S)
        assert ours.recv(1) == b""
        ours.close()
    Started(launcher).end()


def test_a_descriptor_that_is_not_a_socket_is_refused(launcher: Launcher) -> None:
    with open("/etc/hostname", "rb") as file, pytest.raises(LauncherError, match="not a socket"):
        launcher.spawn(file.fileno(), SETTINGS, "info")
    Started(launcher).end()


def test_a_request_from_another_process_is_dropped_unanswered(launcher: Launcher) -> None:
    """The channel leaked to another process (another uid, or the same): the launcher serves
    its agent only, and says nothing to anyone else."""

    def other(uid: int) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                if uid:
                    os.setresgid(uid, uid, uid)
                    os.setresuid(uid, uid, uid)
                ours, theirs = socket.socketpair()
                launcher.channel.sendmsg(
                    [b'{"settings": {}, "log_level": "info"}'],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno()]))],
                )
                theirs.close()
                ours.settimeout(5.0)
                os._exit(0 if ours.recv(1) == b"" else 1)  # no procmond wrote to it
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    other(65533)
    other(0)  # root, but not the agent's pid
    assert _answer(launcher) is None
    Started(launcher).end()


def test_the_launcher_dies_with_the_agent() -> None:
    """The agent is killed: its launcher and its procmond must not outlive it."""
    read_end, write_end = os.pipe()
    agent = os.fork()
    if agent == 0:  # never returns into pytest
        try:
            handle = start_launcher(lookup_account("nobody"), [sys.executable, "-c", FAKE_PROCMOND])
            _ours, theirs = socket.socketpair()
            launched = handle.spawn(theirs.fileno(), SETTINGS, "info")
            # Something else keeps the agent's end of the channel and of the pair open (a
            # leaked descriptor), so only the kernel's parent-death signal can end them.
            holder = os.fork()
            if holder == 0:
                signal.pause()
            else:
                os.write(write_end, f"{handle.pid} {launched.pid} {holder}".encode())
        finally:
            os._exit(0)  # the agent ends without closing anything
    os.close(write_end)
    launcher_pid, procmond_pid, holder = map(int, os.read(read_end, 64).split())
    os.close(read_end)
    os.waitpid(agent, 0)
    try:
        for pid in (launcher_pid, procmond_pid):
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue  # already gone
            try:
                assert Launched(pid, pidfd).ended(DEADLINE_S), f"{pid} outlived its agent"
            finally:
                os.close(pidfd)
    finally:
        os.kill(holder, signal.SIGKILL)


def test_a_launcher_that_could_not_drop_says_so_at_the_first_spawn() -> None:
    def child() -> str:
        from daemoneye.procmond.privileges import Account

        handle = start_launcher(
            Account("ghost", 65534, 65534, (65534,)), ["/bin/true"], frozenset({"CAP_NOPE"})
        )
        _ours, theirs = socket.socketpair()
        try:
            handle.spawn(theirs.fileno(), SETTINGS, "info")
        except LauncherError as exc:
            return str(exc)
        finally:
            handle.close()
        return "spawned"

    assert "did not start" in in_child(child) or "is gone" in in_child(child)
