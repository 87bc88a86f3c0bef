"""What an unprivileged user can try against the context the exec capture reads in the kernel
(found by an attack-minded review, each run here as it was found): a device bound over another
name in a user namespace must not rename that device on other users' stdio; a process that
leaves its network namespace after its exec must not lend its socket table to the namespace
it left; a process that writes over its argv or points its stdio elsewhere after the exec must
not have that stored as what it exec'd with.

Root only (the capture loads as root; the attacker runs as nobody through setpriv)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from daemoneye.collector.context import ContextReader
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.exec_capture import ARGV_BYTES, ExecCapture
from daemoneye.collector.proc_events import ExecEvent
from daemoneye.collector.procfs import read_boot_time
from daemoneye.models import ProcessDetails
from tests.bpf_available import why_not

if not sys.platform.startswith("linux"):
    pytest.skip("eBPF is Linux-only", allow_module_level=True)


def _why_not() -> str | None:
    if shutil.which("setpriv") is None or shutil.which("unshare") is None:
        return "setpriv and unshare (util-linux) are needed"
    reason = why_not(lambda: ExecCapture.open().close())
    return None if reason is None else f"eBPF exec capture unavailable: {reason}"


_UNAVAILABLE = _why_not()
if _UNAVAILABLE is not None:
    pytest.skip(_UNAVAILABLE, allow_module_level=True)

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


class Reader:
    """procmond's event reader for one exec at a time, with one context reader throughout (as
    the daemon's reader thread keeps it, caches included)."""

    def __init__(self) -> None:
        self.capture = ExecCapture.open()
        self.source = ProcEventSource(
            read_boot_time(), capture=self.capture, context=ContextReader()
        )

    def details(self, pid: int) -> ProcessDetails:
        self.capture.collect()
        observed = self.source.handle(ExecEvent(0, 1, time.monotonic_ns(), pid, pid))
        assert observed is not None and observed.details is not None
        return observed.details


@pytest.fixture
def reader() -> Iterator[Reader]:
    opened = Reader()
    yield opened
    opened.capture.close()


def _user_namespaces() -> bool:
    probe = subprocess.run([*NOBODY, "unshare", "-Urm", "true"], capture_output=True)
    return probe.returncode == 0


def test_a_device_bound_over_another_name_does_not_rename_it_for_others(reader: Reader) -> None:
    if not _user_namespaces():
        pytest.skip("unprivileged user namespaces are off here")
    decoy = "/tmp/de-decoy/root-ssh-session-pts-0"
    attacker = subprocess.Popen(
        [
            *NOBODY,
            "unshare",
            "-Urm",
            "sh",
            "-c",
            "mkdir -p /tmp/de-decoy 2>/dev/null; mount -t tmpfs none /tmp/de-decoy"
            f" && touch {decoy} && mount --bind /dev/null {decoy} && exec sleep 2 < {decoy}",
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the attacker's sleep has exec'd
            target = _fd0(attacker.pid)
            if target == decoy:
                break
            time.sleep(0.02)
        seen = reader.details(_sleep_pid(attacker.pid))
    finally:
        attacker.kill()
        attacker.wait()
    assert seen.stdin == f"file:{decoy}"  # its own process: the path in its own namespace
    victim = subprocess.Popen(["sleep", "2"], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.1)
        assert reader.details(victim.pid).stdin == "file:/dev/null"
    finally:
        victim.kill()
        victim.wait()


def _fd0(pid: int) -> str | None:
    for candidate in (pid, _sleep_pid(pid)):
        try:
            return os.readlink(f"/proc/{candidate}/fd/0")
        except OSError:
            continue
    return None


def _sleep_pid(pid: int) -> int:
    """The attacker's shell execs sleep in place (same pid) unless unshare forked."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            children = file.read().split()
    except OSError:
        return pid
    return int(children[0]) if children else pid


_LEAVE_AND_FORGE = r"""
import ctypes, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x10000000 | 0x40000000) == 0  # CLONE_NEWUSER | CLONE_NEWNET
forged = socket.socket(socket.AF_UNIX)
forged.bind(b"\0x" + sys.argv[1].encode())
forged.listen()
print("ready", flush=True)
time.sleep(5)
"""


def test_a_table_read_after_the_process_left_its_namespace_is_not_used(reader: Reader) -> None:
    """The attacker execs in the host's network namespace, then moves to its own and binds a
    socket whose name forges a /proc/net/unix line for the victim's socket inode."""
    if not _user_namespaces():
        pytest.skip("unprivileged user namespaces are off here")
    ours, theirs = socket.socketpair()
    victim = subprocess.Popen(["sleep", "5"], stdin=theirs.fileno())
    inode = os.fstat(theirs.fileno()).st_ino
    theirs.close()
    forged = f"\n0000000000000000: 00000002 00000000 00010000 0001 01 {inode} /run/forged.sock"
    bait, its_end = socket.socketpair()  # a socket on its stdin: the reader reads its tables
    attacker = subprocess.Popen(
        [*NOBODY, sys.executable, "-c", _LEAVE_AND_FORGE, forged],
        stdin=its_end.fileno(),
        stdout=subprocess.PIPE,
    )
    its_end.close()
    try:
        assert attacker.stdout is not None and attacker.stdout.readline() == b"ready\n"
        reader.details(attacker.pid)  # the attacker's socket table, read after it left
        stored = reader.details(victim.pid)
    finally:
        for child in (attacker, victim):
            child.kill()
            child.wait()
        ours.close()
        bait.close()
    assert stored.stdin is not None and "forged" not in stored.stdin


def test_an_argv_written_over_after_a_cut_capture_is_not_stored(reader: Reader) -> None:
    """An argv longer than the record keeps, then rewritten by the process ($0 in perl): the
    stored argv is the exec's, cut, not the disguise."""
    if shutil.which("perl") is None:
        pytest.skip("perl is not installed")
    padding = "x" * (ARGV_BYTES + 100)
    script = '$0 = "[kworker/0:1]"; $| = 1; print "ready\\n"; sleep 5'
    proc = subprocess.Popen([*NOBODY, "perl", "-e", script, padding], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        with open(f"/proc/{proc.pid}/cmdline", "rb") as file:
            assert file.read().startswith(b"[kworker/0:1]")  # the disguise is in place
        stored = reader.details(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert stored.cmdline[:3] == ("perl", "-e", script)  # the exec's argv, cut in the padding
    assert set(stored.cmdline[3]) == {"x"} and len(stored.cmdline[3]) < len(padding)


def test_stdio_pointed_elsewhere_after_the_exec_is_not_taken_for_it(
    reader: Reader, tmp_path: os.PathLike[str]
) -> None:
    """Exec'd with stdout on a file, then pointed at another one: the stored stdout is not the
    file the process opened after its exec."""
    first, later = os.path.join(tmp_path, "at-exec.log"), os.path.join(tmp_path, "after.log")
    script = f"exec 1>{later}; echo ready >&2; sleep 5"
    with open(first, "w") as out:
        proc = subprocess.Popen(["sh", "-c", script], stdout=out, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None and proc.stderr.readline() == b"ready\n"
        stored = reader.details(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert stored.stdout is not None and "after.log" not in stored.stdout
    assert stored.stdout.startswith("other:inode ") and "replaced since the exec" in stored.stdout
