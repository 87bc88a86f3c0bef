"""A real daemon whose socket path is short (/tmp/de-XXXX/daemoneye.sock: pytest's tmp_path
can pass the 107-byte limit of Unix socket paths), plus clients that speak raw bytes.

Test modules import the fixture: `from tests.integration.ipc_support import ipc_fixture`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from daemoneye.ipc import protocol
from daemoneye.ipc.client import DaemonClient
from daemoneye.store.readonly import open_readonly
from tests.daemon_env import isolated_env
from tests.integration.conftest import DaemonHarness

T = TypeVar("T")


class IpcHarness(DaemonHarness):
    @property
    def socket(self) -> Path:
        return self.root / "daemoneye.sock"

    def client(self, **options: Any) -> DaemonClient:
        return DaemonClient(self.socket, client_name="ipc-test", **options)

    def run(self, scenario: Callable[[DaemonClient], Coroutine[Any, Any, T]]) -> T:
        """Run `scenario(client)` with a connected client, in a fresh event loop."""

        async def main() -> T:
            async with self.client() as client:
                return await scenario(client)

        return asyncio.run(main())


@pytest.fixture(name="ipc")
def ipc_fixture() -> Iterator[IpcHarness]:
    root = Path(tempfile.mkdtemp(prefix="de-", dir="/tmp"))
    env = isolated_env(root)
    harness = IpcHarness(
        root=root, env=env, db=root / "store" / "d.db", log_path=root / "daemon.log"
    )
    yield harness
    if harness.process is not None and harness.process.poll() is None:
        harness.process.kill()
        harness.process.wait()
    shutil.rmtree(root, ignore_errors=True)


class RawClient:
    """A blocking socket client that sends exactly the bytes it is given."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))  # blocking: waits while the listen backlog is full
        self.sock.settimeout(timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> dict[str, Any] | None:
        """The next message, or None when the daemon closed the connection."""
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                # The daemon closed while our request sat unread in its buffer: Linux reports
                # that as a reset after the data it did send (which was read first).
                return None
            if not chunk:
                return None
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, request_id: int, method: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Send a request and return its answer, skipping notifications."""
        self.send(protocol.request(request_id, method, params or {}))
        while True:
            message = self.line()
            if message is None or message.get("id") == request_id:
                return message

    def close(self) -> None:
        self.sock.close()


def admin_entries(db: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, actor, detail) of the admin.* entries of the store's audit chain."""
    from daemoneye.engine.audit import entries

    with open_readonly(db) as store:
        return [
            (e.kind, e.actor, e.detail_dict())
            for e in entries(store, limit=100_000)
            if e.kind.startswith("admin.")
        ]


def run_as(uid: int, gid: int, code: str, env: dict[str, str]) -> Any:
    """Run Python `code` as another user (no supplementary groups) and return the JSON it
    prints: a client process whose SO_PEERCRED says `uid`. Uses setpriv(1) when there is one,
    else setuid in the child; skips when neither lets that user start this interpreter."""
    argv = [sys.executable, "-c", code]
    options: dict[str, Any] = {}
    setpriv = shutil.which("setpriv")
    if setpriv:
        argv = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
    else:

        def drop() -> None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        options["preexec_fn"] = drop
    try:
        result = subprocess.run(
            argv,
            env={**env, "HOME": "/"},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(Path(__file__).resolve().parents[2]),
            **options,
        )
    except PermissionError as exc:
        pytest.skip(f"uid {uid} cannot run {sys.executable}: {exc}")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
