"""Capture raw process-connector recv() buffers as hex fixtures (run as root on Linux).

    .venv/bin/python tests/unit/samples/netlink/capture.py tests/unit/samples/netlink

Each scenario runs one child and keeps every buffer that names the child's pid, one hex line per
recv(); the first line of each file is a comment with the scenario, the kernel release and the
child's pid. Unit tests decode these files, so they pin the parser to real kernel output.
"""

from __future__ import annotations

import os
import platform
import select
import socket
import struct
import subprocess
import sys
from pathlib import Path

_COOKIE = 0x5EED
_LISTEN = struct.pack("=IIIIHHI", 1, 1, 0, _COOKIE, 4, 0, 1)
_REQUEST = struct.pack("=IHHII", 16 + len(_LISTEN), 3, 0, 0, 0) + _LISTEN

SCENARIOS: dict[str, list[str]] = {
    # fork + exec + exit(3)
    "exit3": ["/bin/sh", "-c", "exit 3", "marker-exit3"],
    # killed by SIGKILL: wait status 9
    "sigkill": ["/bin/sh", "-c", "kill -9 $$"],
    # a thread is created and exits (fork/exit with pid != tgid), then the process exits 0
    "thread": [
        sys.executable,
        "-c",
        "import threading; t = threading.Thread(target=lambda: None); t.start(); t.join()",
    ],
    # prctl(PR_SET_NAME) → comm event
    "comm": [sys.executable, "-c", "open('/proc/self/comm', 'w').write('renamed-xyz')"],
    # setsid, setgid, setuid → sid, gid, uid events
    "ids": [
        sys.executable,
        "-c",
        "import os; os.setsid(); os.setgid(65534); os.setuid(65534)",
    ],
}


def _pids_in(buf: bytes) -> set[int]:
    """Every u32 of the proc_event union, enough to tell whether a buffer is about our child."""
    if len(buf) < 52:
        return set()
    body = buf[52:76]
    return set(struct.unpack_from(f"={len(body) // 4}I", body))


def _is_our_ack(buf: bytes) -> bool:
    return len(buf) >= 44 and struct.unpack_from("=I", buf, 28)[0] == _COOKIE + 1


def capture(argv: list[str]) -> tuple[int, list[bytes]]:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 11)
    sock.bind((0, 1))
    sock.send(_REQUEST)
    child = subprocess.Popen(argv)
    child.wait()
    buffers: list[bytes] = []
    poller = select.poll()  # not select(): it refuses descriptors above 1023
    poller.register(sock.fileno(), select.POLLIN)
    while poller.poll(300):
        buffers.append(sock.recv(65536))
    sock.close()
    ours = [buf for buf in buffers if child.pid in _pids_in(buf) or _is_our_ack(buf)]
    return child.pid, ours


def main() -> None:
    out_dir = Path(sys.argv[1])
    for name, argv in SCENARIOS.items():
        pid, buffers = capture(argv)
        lines = [f"# {name}: {' '.join(argv)} | kernel {platform.release()} | child pid {pid}"]
        lines += [buf.hex() for buf in buffers]
        (out_dir / f"{name}.hex").write_text("\n".join(lines) + "\n")
        print(f"{name}: {len(buffers)} buffers", file=sys.stderr)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root")
    main()
