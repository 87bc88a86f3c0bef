"""procmond's launcher for real, as root: forked before the agent's drop, it starts procmond
again and again with exactly procmond's capabilities as the daemon's user, refuses malformed
requests, and dies with the agent."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
from collections.abc import Iterator

import pytest

from daemoneye.procmond.launcher import FD_PLACEHOLDER, Launcher, LauncherError, start_launcher
from daemoneye.procmond.privileges import PROCMOND_CAPABILITIES, capability_mask, lookup_account
from tests.forked import in_child

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the launcher needs root")

DEADLINE_S = 30.0
# What the test stands in for procmond with: drop as procmond does, then report the status.
FAKE_PROCMOND = """
import os, socket, sys
from daemoneye.procmond.privileges import drop_procmond, lookup_account
pair = socket.socket(fileno=int(sys.argv[1]))
drop_procmond(lookup_account("nobody"))
pair.sendall(open("/proc/self/status", "rb").read())
pair.close()
"""


def _fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


@pytest.fixture
def launcher() -> Iterator[Launcher]:
    handle = start_launcher(lookup_account("nobody"))
    yield handle
    handle.close()


def _start_fake_procmond(launcher: Launcher) -> tuple[int, dict[str, str]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        pid = launcher.spawn([sys.executable, "-c", FAKE_PROCMOND, FD_PLACEHOLDER], theirs.fileno())
        theirs.close()
        ours.settimeout(DEADLINE_S)
        chunks = []
        while chunk := ours.recv(65536):
            chunks.append(chunk)
    return pid, _fields(b"".join(chunks).decode())


def test_each_procmond_it_starts_holds_exactly_procmonds_capabilities(launcher: Launcher) -> None:
    kept = capability_mask(PROCMOND_CAPABILITIES)
    pids = []
    for _ in range(2):  # the first procmond, and one after it "died"
        pid, status = _start_fake_procmond(launcher)
        pids.append(pid)
        assert int(status["PPid"]) == launcher.pid
        assert status["Uid"].split() == ["65534"] * 4
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == kept
        assert int(status["CapBnd"], 16) == kept
        assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0
        assert status["NoNewPrivs"] == "1"
    assert pids[0] != pids[1]
    with open(f"/proc/{launcher.pid}/status") as file:
        launcher_status = _fields(file.read())
    assert launcher_status["Uid"].split() == ["65534"] * 4
    assert int(launcher_status["CapPrm"], 16) == kept  # and nothing more, ever


def test_a_request_without_a_descriptor_is_refused(launcher: Launcher) -> None:
    launcher.channel.send(json.dumps({"argv": ["/bin/true"]}).encode())
    answer = json.loads(launcher.channel.recv(65536))
    assert "exactly one descriptor" in answer["error"]
    _, status = _start_fake_procmond(launcher)  # and it still serves
    assert status["NoNewPrivs"] == "1"


def test_the_launcher_dies_with_the_agent() -> None:
    """The agent is killed: its launcher must not outlive it (no orphaned privileged process)."""
    read_end, write_end = os.pipe()
    agent = os.fork()
    if agent == 0:  # never returns into pytest
        try:
            handle = start_launcher(lookup_account("nobody"))
            # Something else keeps the agent's end of the channel open (a leaked descriptor),
            # so only the kernel's parent-death signal can end the launcher.
            holder = os.fork()
            if holder == 0:
                signal.pause()
            else:
                os.write(write_end, f"{handle.pid} {holder}".encode())
        finally:
            os._exit(0)  # the agent ends without closing anything
    os.close(write_end)
    launcher_pid, holder = map(int, os.read(read_end, 64).split())
    os.close(read_end)
    os.waitpid(agent, 0)
    try:
        pidfd = os.pidfd_open(launcher_pid)
    except ProcessLookupError:
        os.kill(holder, signal.SIGKILL)
        return  # already gone
    poller = select.poll()  # a pidfd is readable once its process has ended
    poller.register(pidfd, select.POLLIN)
    try:
        ready = poller.poll(DEADLINE_S * 1000)
    finally:
        os.close(pidfd)
        os.kill(holder, signal.SIGKILL)
    assert ready, f"launcher {launcher_pid} outlived its agent"


def test_a_launcher_that_could_not_drop_says_so_at_the_first_spawn() -> None:
    def child() -> str:
        from daemoneye.procmond.privileges import Account

        handle = start_launcher(Account("ghost", 65534, 65534, (65534,)), frozenset({"CAP_NOPE"}))
        try:
            handle.spawn(["/bin/true"], 0)
        except LauncherError as exc:
            return str(exc)
        finally:
            handle.close()
        return "spawned"

    assert "is gone" in in_child(child)
