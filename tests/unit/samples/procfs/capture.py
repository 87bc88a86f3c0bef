"""Re-create the /proc samples in this directory from live processes (run as any user on Linux).

Each sample is the real stat, status and cmdline of a process that was set up to be hostile or
typical; manifest.json records what the capture set up (the expected comm bytes and argv), so the
tests compare the parsers against what the kernel was told, not against the parsers themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

_SET_COMM = """
import os, sys, time
with open("/proc/self/comm", "wb") as comm:
    comm.write(bytes.fromhex(sys.argv[1]))
print("ready", flush=True)
time.sleep(60)
"""

_READY_SLEEP = "import time; print('ready', flush=True); time.sleep(60)"

# comm values the kernel accepts (any bytes but NUL, cut at 15)
HOSTILE_COMMS = {
    "comm_paren_space": b"a) (b",
    "comm_newline": b"x\ny) Z 1 2",
    "comm_spaces": b"my proc name",
    "comm_close_paren": b")",
    "comm_parens": b"(()))",
    "comm_invalid_utf8": b"\xff\xfe(bad\x80",
    "comm_fake_fields": b"x) R 1 1 1 1",
}


def _save(name: str, pid: int, manifest: dict[str, object], **expected: object) -> None:
    for part in ("stat", "status", "cmdline"):
        with open(f"/proc/{pid}/{part}", "rb") as source:
            (HERE / f"{name}.{part}").write_bytes(source.read())
    manifest[name] = {"pid": pid, "uid": os.getuid(), "gid": os.getgid(), **expected}


def _wait_ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"


def main() -> None:
    manifest: dict[str, object] = {}
    children: list[subprocess.Popen[bytes]] = []
    try:
        _save("self_python", os.getpid(), manifest, argv=[sys.executable, *sys.argv])
        _save("init", 1, manifest)  # uid/gid recorded are the capturer's, not init's
        _save("kthreadd", 2, manifest, argv=[])
        for name, comm in HOSTILE_COMMS.items():
            proc = subprocess.Popen(
                [sys.executable, "-c", _SET_COMM, comm.hex()], stdout=subprocess.PIPE
            )
            children.append(proc)
            _wait_ready(proc)
            _save(name, proc.pid, manifest, comm_hex=comm[:15].hex())
        # 128 KiB of arguments (one argument may not exceed 128 KiB, so two of 64 KiB)
        big_argv = [sys.executable, "-c", _READY_SLEEP, "a" * 65535, "b" * 65535, "end"]
        proc = subprocess.Popen(big_argv, stdout=subprocess.PIPE)
        children.append(proc)
        _wait_ready(proc)
        _save(
            "cmdline_128k",
            proc.pid,
            manifest,
            argv_head=big_argv[:3],
            big_args=[["a", 65535], ["b", 65535]],
            argv_tail=["end"],
        )
        title = "worker: title with spaces [idle]"
        proc = subprocess.Popen(
            ["perl", "-e", f'$0 = "{title}"; print "ready\\n"; $| = 1; sleep 60'],
            stdout=subprocess.PIPE,
        )
        children.append(proc)
        _wait_ready(proc)
        _save("argv_rewritten", proc.pid, manifest, title=title)
        zombie = subprocess.Popen([sys.executable, "-c", "pass"])
        children.append(zombie)
        while b") Z " not in Path(f"/proc/{zombie.pid}/stat").read_bytes():
            time.sleep(0.01)
        _save("zombie", zombie.pid, manifest, argv=[])
    finally:
        for child in children:
            child.kill()
            child.wait()
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
