"""A throw-away OpenSSH server on 127.0.0.1 for tests and benchmarks of `--host ssh://…`:
its own host key, a client key in its authorized_keys, and an `ssh` wrapper that uses them
with a known_hosts that trusts exactly that server. Needs root (sshd logs users in only then)
and openssh-server."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


class SshdFailed(RuntimeError):
    """sshd did not start; the message holds its log."""


@dataclass
class Sshd:
    port: int
    ssh: Path  # an ssh wrapper with the test's keys and known_hosts
    process: subprocess.Popen[bytes]

    def url(self, user: str = "root") -> str:
        return f"ssh://{user}@127.0.0.1:{self.port}"


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def start_sshd(root: Path, *, authorize: bool = True) -> Sshd:
    root.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    keygen(root / "host")
    keygen(root / "client")
    keys = root / "authorized_keys"
    keys.write_text((root / "client.pub").read_text() if authorize else "")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host'}\n"
        f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {keys}\nStrictModes no\n"
        "UsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
    )
    host_key = (root / "host.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (root / "ssh_config").write_text(
        f"Host *\n  IdentityFile {root / 'client'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {root / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        "  LogLevel ERROR\n"
    )
    wrapper = root / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec ssh -F {root / "ssh_config"} "$@"\n')
    wrapper.chmod(0o755)
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=(root / "sshd.log").open("wb"),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Sshd(port, wrapper, process)
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise SshdFailed(f"sshd did not start: {(root / 'sshd.log').read_text(errors='replace')}")


def stop_sshd(server: Sshd) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
