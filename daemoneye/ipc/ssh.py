"""Reaching a remote daemon through the user's own `ssh`: no new port, no stored credentials.

`daemoneye --host ssh://[user@]server[:port]` runs `ssh -T -o BatchMode=yes … server
daemoneye-cli bridge`; the remote `bridge` connects to that host's local socket and relays bytes
both ways, so the daemon there sees the SSH user as its peer (SO_PEERCRED: admin rights are that
user's). Locally ssh's stdin and stdout are one end of a socket pair and the client speaks the
usual protocol over the other end — one data path, local or remote.

ssh runs with BatchMode (a password prompt has no terminal to ask on: it fails at once with a
clear error instead of hanging) and the user's own config, agent and known_hosts. What ssh says
on stderr is turned into an error that names the host and the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from daemoneye.config.remote_values import SshTarget, parse_ssh_target
from daemoneye.config.schema import RemoteConfig
from daemoneye.ipc.protocol import MAX_MESSAGE_BYTES

# ssh's own exit code for "ssh failed"; a remote shell's for "command not found".
_SSH_FAILED = 255
_NOT_FOUND = 127
# The bridge's exit code when no daemon answers on the remote host (commands/bridge.py).
BRIDGE_NO_DAEMON = 3
_STDERR_BYTES = 4096


@dataclass(frozen=True, slots=True)
class SshRoute:
    """How a client reaches a remote daemon: the target and the ssh command line to run."""

    target: SshTarget
    argv: tuple[str, ...]
    remote_program: str  # for messages: what must be installed on the far side


def ssh_route(
    target: SshTarget,
    *,
    ssh: Sequence[str] = ("ssh",),
    remote_command: Sequence[str] = ("daemoneye-cli",),
    remote_socket: str | None = None,
) -> SshRoute:
    """The route to `target`: `ssh … REMOTE-COMMAND bridge [--socket PATH]`."""
    remote = [*remote_command, "bridge"]
    if remote_socket:
        remote += ["--socket", remote_socket]
    argv = ssh_argv(target, ssh=ssh, remote_command=remote)
    return SshRoute(target, tuple(argv), remote_command[0] if remote_command else "")


def route_for(remote: RemoteConfig, host: str, *, remote_socket: str | None = None) -> SshRoute:
    """The route `--host HOST` names: an ssh:// URL, or a name from `[remote] hosts`.
    ValueError says what is wrong (and which names there are)."""
    named = dict(remote.hosts)
    if host in named:
        url = named[host]
    elif host.startswith("ssh://"):
        url = host
    else:
        known = ", ".join(sorted(named)) or "none are configured in [remote] hosts"
        raise ValueError(
            f"--host {host!r} is neither ssh://[user@]host[:port] nor a known name ({known})"
        )
    return ssh_route(
        parse_ssh_target(url),
        ssh=shlex.split(remote.ssh),
        remote_command=shlex.split(remote.command),
        remote_socket=remote_socket,
    )


def ssh_argv(target: SshTarget, *, ssh: Sequence[str], remote_command: Sequence[str]) -> list[str]:
    """The ssh command line: BatchMode, no terminal, the remote command quoted for its shell."""
    argv = [*ssh, "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if target.port:
        argv += ["-p", str(target.port)]
    host = target.host.strip("[]")
    destination = f"{target.user}@{host}" if target.user else host
    return [*argv, "--", destination, shlex.join(remote_command)]


def explain_failure(target: SshTarget, returncode: int | None, stderr: str, program: str) -> str:
    """What went wrong reaching `target`, from ssh's exit code and what it said."""
    said = " ".join(stderr.split())[-400:] or "(nothing on stderr)"
    if returncode == BRIDGE_NO_DAEMON:
        return f"no DaemonEye daemon answers on {target.host}: {said}"
    if returncode == _NOT_FOUND or "command not found" in stderr or "No such file" in stderr:
        return (
            f"{program!r} is not installed on {target.host} (or not on the PATH of a "
            f"non-interactive ssh session); install DaemonEye there or set remote.command "
            f"to its full path. ssh said: {said}"
        )
    if "Permission denied" in stderr:
        return (
            f"ssh could not log in to {target.destination}: {said}. DaemonEye runs ssh with "
            "BatchMode=yes, so there is no password prompt: use a key (ssh-agent) or an "
            "entry in ~/.ssh/config"
        )
    if "Host key verification failed" in stderr:
        return (
            f"ssh does not trust {target.host}'s host key: {said}. Connect once with plain "
            "ssh to check and record it in known_hosts"
        )
    if returncode == _SSH_FAILED:
        return f"ssh to {target} failed: {said}"
    return f"the connection to {target} ended (exit {returncode}): {said}"


@dataclass
class SshStream:
    """A running ssh and the local end of its socket pair."""

    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    stderr_task: asyncio.Task[bytes]

    async def failure(self, target: SshTarget, program: str, wait: float = 5.0) -> str | None:
        """Why this ssh ended (waiting for it up to `wait` seconds); None while it runs."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), wait)
        if self.process.returncode is None:
            return None
        with contextlib.suppress(TimeoutError):  # its last words, once the pipe is closed
            await asyncio.wait_for(asyncio.shield(self.stderr_task), 1.0)
        stderr = b""
        if self.stderr_task.done() and not self.stderr_task.cancelled():
            stderr = self.stderr_task.result()
        return explain_failure(
            target, self.process.returncode, stderr.decode("utf-8", "replace"), program
        )

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 2)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        self.stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.stderr_task


async def _read_stderr(stream: asyncio.StreamReader | None) -> bytes:
    """ssh's stderr, the last few KiB of it: the error is at the end."""
    kept = b""
    if stream is None:
        return kept
    while chunk := await stream.read(65536):
        kept = (kept + chunk)[-_STDERR_BYTES:]
    return kept


async def open_ssh_stream(argv: Sequence[str]) -> SshStream:
    """Start `argv` (an ssh command line) with a socket pair as its stdin and stdout."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # ctrl-c in the dashboard is the dashboard's, not ssh's
        )
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=ours, limit=MAX_MESSAGE_BYTES + 1)
    stderr_task = asyncio.get_running_loop().create_task(_read_stderr(process.stderr))
    return SshStream(process, reader, writer, stderr_task)
