"""The attacks of issue 19, each driven by an unprivileged local user (uid 65534).

`Attacker` (harness side) starts ``python -m benchmarks.attacks NAME SOCKET …`` as uid/gid
65534 with no supplementary groups, in a session of its own, and ends it (SIGTERM, then SIGKILL
of its whole process group). The child prints one JSON line of counters when it stops and never
outlives its own `--seconds`, whatever happens to the harness.

The drivers (child side) use only the standard library and raw JSON lines, as a real attacker
would; every one of them is bounded in connections, processes and bytes:

- `regex-stall`: processes whose 64 KiB command line makes a built-in rule's backtracking
  pattern (`tunneling-tool`: ``\\s(client|server)\\s.*\\sR:…``) take seconds, one a second;
- `nested-json`: 16 connections sending ``[``x100,000, ``{"a":``x50,000, 1e400, integers beyond
  64 bits and a 5,000-digit integer as fast as they are answered;
- `audit-flood`: 8 connections sending refused admin calls (`alerts.ack` with a 900 KiB param);
- `subscriber-memory`: 100 connections that subscribe to processes and never read, while the
  same user starts 10 processes a second with an 8 KiB command line (the deltas they queue);
- `slot-lockout`: connections opened and greeted until the daemon refuses, then held (and
  re-opened when the daemon closes one).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOBODY = 65534
_STOP_GRACE_S = 5.0
_IO_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Attack:
    """One attack as the report names it."""

    name: str
    title: str


ATTACKS: tuple[Attack, ...] = (
    Attack("regex-stall", "64 KiB command lines against backtracking rule patterns, 1/s"),
    Attack("nested-json", "16 connections: [ x100000, 1e400, >64-bit and 5000-digit integers"),
    Attack("audit-flood", "8 connections: refused alerts.ack with a 900 KiB param, flat out"),
    Attack("subscriber-memory", "100 processes subscribers that never read (+10 exec/s, 8 KiB)"),
    Attack("slot-lockout", "connections opened and greeted until refused, then held"),
)
ATTACK_NAMES = tuple(attack.name for attack in ATTACKS)


# -- harness side ------------------------------------------------------------------------------


@functools.cache
def attacker_python() -> str:
    """An interpreter uid 65534 can run (a venv's may live under root's 0700 home); the
    drivers need only the standard library."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            subprocess.run(
                [candidate, "-c", "pass"],
                user=NOBODY,
                group=NOBODY,
                extra_groups=[],
                capture_output=True,
                timeout=30,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        return candidate
    raise RuntimeError("no Python interpreter that uid 65534 may run")


class Attacker:
    """One attack running as uid 65534; `stop()` ends it and returns its counters."""

    def __init__(
        self,
        name: str,
        socket_path: Path,
        *,
        seconds: float,
        protocol_version: int,
        env: dict[str, str],
        cwd: Path,
    ) -> None:
        if name not in ATTACK_NAMES:
            raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACK_NAMES)}")
        self.name = name
        argv = [
            attacker_python(),
            "-m",
            "benchmarks.attacks",
            name,
            str(socket_path),
            "--seconds",
            f"{seconds:g}",
            "--protocol-version",
            str(protocol_version),
        ]
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
        )

    def kill(self) -> None:
        """The last-resort undo (cleanup registry): end it, forget the counters."""
        self.stop()

    def stop(self) -> dict[str, Any]:
        """SIGTERM the attacker (it prints its counters), SIGKILL its group after a grace
        period; idempotent. Returns the counters, or what went wrong."""
        process = self.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # its own children (regex-stall's shells)
        if process.poll() is None:
            process.kill()
            out2, err2 = process.communicate()
            out, err = out + out2, err + err2
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            counters: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            counters = {}
        if not counters:
            counters = {
                "error": f"no counters (exit {process.returncode}): "
                f"{err.decode(errors='replace').strip()[-300:]}"
            }
        return counters


# -- attacker side: stdlib only ----------------------------------------------------------------


class Tally:
    """Counters shared by an attack's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[key] += amount

    def peak(self, key: str, value: int) -> None:
        """Keep the highest `value` seen under `key`."""
        with self._lock:
            self.counts[key] = max(self.counts[key], value)


class _Line:
    """A connection speaking JSON lines."""

    def __init__(self, path: str, timeout_s: float = _IO_TIMEOUT_S) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.reader = self.sock.makefile("rb")

    def send(self, payload: bytes) -> None:
        self.sock.sendall(payload if payload.endswith(b"\n") else payload + b"\n")

    def answer(self) -> str:
        """What the daemon answered: "result", "error <code>", "dropped" or "timeout"."""
        try:
            line = self.reader.readline(2 * 1024 * 1024)
        except TimeoutError:
            return "timeout"
        except OSError:
            return "dropped"
        if not line:
            return "dropped"
        try:
            message = json.loads(line)
        except ValueError:
            return "unparsable answer"
        if isinstance(message, dict) and isinstance(message.get("error"), dict):
            return f"error {message['error'].get('code')}"
        return "result" if isinstance(message, dict) and "result" in message else "other"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()


def _request(request_id: int, method: str, params: Any) -> bytes:
    return (
        json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        ).encode()
        + b"\n"
    )


def _greeted(
    path: str, version: int, tally: Tally, timeout_s: float = _IO_TIMEOUT_S
) -> _Line | None:
    """A connection that said hello and got a result; None (counted) when refused."""
    try:
        line = _Line(path, timeout_s)
    except OSError as exc:
        tally.add(f"connect failed: {exc.strerror or exc}")
        return None
    try:
        line.send(_request(0, "hello", {"protocol_version": version, "client": "attackbench"}))
    except OSError:
        line.close()
        tally.add("hello: dropped")
        return None
    outcome = line.answer()
    if outcome != "result":
        tally.add(f"hello: {outcome}")
        line.close()
        return None
    tally.add("connections greeted")
    return line


_DEVNULL_OUTPUT = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]


def _spawner(argv: list[str], per_s: float, tally: Tally, stop: threading.Event) -> None:
    """Start `argv` (with /bin/sh) `per_s` times a second until `stop`; reap as we go."""
    period = 1.0 / per_s
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            os.posix_spawn("/bin/sh", argv, dict(os.environ), file_actions=_DEVNULL_OUTPUT)
            tally.add("processes started")
        except OSError as exc:
            tally.add(f"spawn failed: {exc.strerror or exc}")
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        next_at += period
        stop.wait(max(0.0, next_at - time.monotonic()))


def regex_stall(path: str, version: int, tally: Tally, stop: threading.Event) -> None:
    # `sh -c 'sleep 3; :'` stays a shell (two commands: no exec), so the crafted command line
    # stays visible for 3 s; " client" x 9362 + " R:x" is 64 KiB.
    argv = ["sh", "-c", "sleep 3; :", "attackbench", *(["client"] * 9362), "R:x"]
    _spawner(argv, 1.0, tally, stop)


_NESTED_PAYLOADS: tuple[bytes, ...] = (
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b'{"jsonrpc":"2.0","id":1,"method":"processes.get","params":{"pid":1e400}}',
    _request(2, "processes.get", {"pid": 2**80}).strip(),
    _request(3, "alerts.get", {"id": 2**130}).strip(),
    b'{"jsonrpc":"2.0","id":4,"method":"processes.get","params":{"pid":' + b"9" * 5000 + b"}}",
)


def nested_json(path: str, version: int, tally: Tally, stop: threading.Event) -> None:
    def worker() -> None:
        line: _Line | None = None
        index = 0
        while not stop.is_set():
            if line is None:
                line = _greeted(path, version, tally)
                if line is None:
                    stop.wait(0.2)
                    continue
            payload = _NESTED_PAYLOADS[index % len(_NESTED_PAYLOADS)]
            index += 1
            try:
                line.send(payload)
            except OSError:
                tally.add("send: dropped")
                line.close()
                line = None
                continue
            tally.add("requests sent")
            outcome = line.answer()
            tally.add(outcome)
            if outcome in ("dropped", "timeout"):
                line.close()
                line = None
        if line is not None:
            line.close()

    _threads(worker, 16, stop)


def audit_flood(path: str, version: int, tally: Tally, stop: threading.Event) -> None:
    request = _request(9, "alerts.ack", {"id": 1, "note": "x" * (900 * 1024)})

    def worker() -> None:
        while not stop.is_set():
            line = _greeted(path, version, tally)
            if line is None:
                stop.wait(0.2)
                continue
            reader = threading.Thread(target=_read_answers, args=(line, tally, stop), daemon=True)
            reader.start()
            try:
                while not stop.is_set() and reader.is_alive():
                    line.send(request)
                    tally.add("requests sent")
                    tally.add("bytes sent", len(request))
            except OSError:
                tally.add("send: dropped")
            line.close()
            reader.join(1.0)

    _threads(worker, 8, stop)


def _read_answers(line: _Line, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        outcome = line.answer()
        if outcome == "timeout":
            continue
        tally.add(outcome)
        if outcome == "dropped":
            return


def subscriber_memory(path: str, version: int, tally: Tally, stop: threading.Event) -> None:
    held: list[_Line] = []
    for index in range(100):
        if stop.is_set():
            break
        line = _greeted(path, version, tally)
        if line is None:
            continue
        with contextlib.suppress(OSError):
            line.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            line.send(_request(index + 1, "processes.subscribe", {}))
            tally.add("subscribed (never read)")
            held.append(line)
        except OSError:
            tally.add("subscribe: dropped")
            line.close()
    churn = ["sh", "-c", "sleep 1; :", "attackbench", "y" * (8 * 1024)]
    _spawner(churn, 10.0, tally, stop)
    for line in held:
        line.close()


def slot_lockout(path: str, version: int, tally: Tally, stop: threading.Event) -> None:
    held: list[_Line] = []
    refused_in_a_row = 0
    while not stop.is_set() and len(held) < 4000:
        line = _greeted(path, version, tally, timeout_s=5.0)
        if line is None:
            refused_in_a_row += 1
            if refused_in_a_row >= 3:
                # full: check every half second for slots the daemon gave back, take them again
                stop.wait(0.5)
                held = [kept for kept in held if _still_open(kept, tally)]
                refused_in_a_row = 0
            continue
        refused_in_a_row = 0
        held.append(line)
        tally.peak("held at most", len(held))
    for line in held:
        line.close()


def _still_open(line: _Line, tally: Tally) -> bool:
    try:
        data = line.sock.recv(4096, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        data = b""
    if data:
        return True  # a notification or error line: still connected until EOF
    tally.add("held connection closed by the daemon")
    line.close()
    return False


def _threads(worker: Callable[[], None], count: int, stop: threading.Event) -> None:
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(_IO_TIMEOUT_S + 1.0)


DRIVERS: dict[str, Callable[[str, int, Tally, threading.Event], None]] = {
    "regex-stall": regex_stall,
    "nested-json": nested_json,
    "audit-flood": audit_flood,
    "subscriber-memory": subscriber_memory,
    "slot-lockout": slot_lockout,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.attacks", description="one attack driver (run by attack_bench)"
    )
    parser.add_argument("attack", choices=ATTACK_NAMES)
    parser.add_argument("socket")
    parser.add_argument("--seconds", type=float, required=True, help="stop after this long")
    parser.add_argument("--protocol-version", type=int, default=1)
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    tally = Tally()
    timer = threading.Timer(args.seconds, stop.set)
    timer.daemon = True
    timer.start()
    started = time.monotonic()
    driver = threading.Thread(
        target=DRIVERS[args.attack],
        args=(args.socket, args.protocol_version, tally, stop),
        daemon=True,
    )
    driver.start()
    while driver.is_alive() and not stop.is_set():
        stop.wait(0.2)
    stop.set()
    driver.join(1.0)  # the counters are printed now; a thread blocked in I/O dies with us
    counters: dict[str, float] = dict(tally.counts)
    counters["seconds"] = round(time.monotonic() - started, 1)
    counters["uid"] = os.getuid()
    print(json.dumps(counters, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
