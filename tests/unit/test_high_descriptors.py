"""A busy daemon holds thousands of descriptors (a stat file per process): every wait on a socket
must work for descriptors above 1023, where select.select() raises ValueError."""

from __future__ import annotations

import os
import re
import resource
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import daemoneye
from daemoneye.collector.netlink import EventsUnavailable, ProcConnector
from daemoneye.config.sink_values import SyslogAddress
from daemoneye.engine.sinks.syslog import SyslogSink, _peer_closed

from .test_netlink_connector import FakeNetlink

HIGH = 1100  # /dev/null descriptors held open: what is opened next lands above 1023


@pytest.fixture
def many_descriptors() -> Iterator[list[int]]:
    """1,100 extra descriptors, the soft RLIMIT_NOFILE raised for them and put back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    fds = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(HIGH)]
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _tcp_receiver() -> tuple[socket.socket, list[bytes], threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                received.append(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, received, thread


def test_syslog_tcp_sink_works_above_descriptor_1023(many_descriptors: list[int]) -> None:
    listener, received, thread = _tcp_receiver()
    port = listener.getsockname()[1]
    sink = SyslogSink(SyslogAddress("tcp", host="127.0.0.1", port=port), hostname="h")
    try:
        sink.deliver({"severity": "high", "rule_id": "r", "pid": 1, "title": "first"})
        assert sink._sock is not None and sink._sock.fileno() > 1023
        # The second delivery checks whether the open connection is still alive first.
        sink.deliver({"severity": "high", "rule_id": "r", "pid": 1, "title": "second"})
    finally:
        sink.close()
        thread.join(timeout=10)
        listener.close()
    data = b"".join(received)
    assert b"first" in data and b"second" in data


def test_syslog_tcp_sink_notices_a_closed_peer_above_descriptor_1023(
    many_descriptors: list[int],
) -> None:
    """The receiver restarts: the sink sees the dead connection (a poll on a descriptor above
    1023) and sends the next alert on a new one instead of into the void."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sink = SyslogSink(SyslogAddress("tcp", host="127.0.0.1", port=port), hostname="h")
    try:
        sink.deliver({"severity": "high", "rule_id": "r", "pid": 1, "title": "first"})
        old = sink._sock
        assert old is not None and old.fileno() > 1023
        first, _ = listener.accept()
        assert b"first" in first.recv(65536)
        first.close()
        assert _peer_closed(old)
        sink.deliver({"severity": "high", "rule_id": "r", "pid": 1, "title": "second"})
        assert sink._sock is not old
        second, _ = listener.accept()
        with second:
            assert b"second" in second.recv(65536)
    finally:
        sink.close()
        listener.close()


def test_connector_ack_wait_works_above_descriptor_1023(
    many_descriptors: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNetlink()
    monkeypatch.setattr("daemoneye.collector.netlink.socket.socket", fake.socket)
    fake.answer = struct.pack("=I", 0)
    try:
        assert fake.ours.fileno() > 1023
        connector = ProcConnector(rcvbuf_bytes=1 << 20)
        connector.open(ack_timeout=5)
        assert len(connector.recv()) == 0  # the ack was read and consumed
        connector.close()
    finally:
        fake.kernel.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="subscribing to the process connector needs root")
def test_real_connector_subscribes_above_descriptor_1023(many_descriptors: list[int]) -> None:
    connector = ProcConnector()
    try:
        connector.open(ack_timeout=5)
    except EventsUnavailable as exc:
        pytest.skip(f"no process connector here: {exc}")
    try:
        assert connector.fileno() > 1023
    finally:
        connector.close()


def test_no_module_calls_select_select() -> None:
    """select.select() is banned from the package and its tests: use poll or selectors."""
    root = Path(daemoneye.__file__).parent
    offenders = [
        str(path)
        for base in (root, root.parent / "tests")
        for path in base.rglob("*.py")
        if re.search(
            r"\bselect\.select\(", path.read_text(encoding="utf-8").replace("select.select()", "")
        )
    ]
    assert offenders == []
