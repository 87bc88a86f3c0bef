"""ProcConnector's handshake, error reasons and overrun handling, with the netlink socket
replaced by one end of a socketpair so that no kernel support is needed."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from daemoneye.collector.netlink import (
    ConnectorOverrun,
    EventsUnavailable,
    ProcConnector,
    probe,
)
from daemoneye.collector.proc_events import (
    PROC_CN_MCAST_IGNORE,
    PROC_CN_MCAST_LISTEN,
)
from daemoneye.errors import CollectorError


class FakeNetlink:
    """Plays the kernel's side: records requests, and can answer through `kernel`."""

    def __init__(self) -> None:
        self.ours, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.requests: list[bytes] = []
        self.rcvbuf = 0
        self.bind_error: OSError | None = None
        self.recv_errors: list[OSError] = []
        self.answer: bytes | None = None  # sent back as the kernel's ack, cookie filled in

    def socket(self, family: int, kind: int, proto: int = 0) -> Any:
        fake = self

        class Sock:
            def bind(self, address: tuple[int, int]) -> None:
                if fake.bind_error is not None:
                    raise fake.bind_error

            def setsockopt(self, level: int, option: int, value: int) -> None:
                fake.rcvbuf = value

            def getsockopt(self, level: int, option: int) -> int:
                return fake.rcvbuf * 2

            def send(self, data: bytes) -> int:
                fake.requests.append(data)
                if fake.answer is not None and len(fake.requests) == 1:
                    cookie = struct.unpack_from("=I", data, 16 + 12)[0]
                    fake.kernel.send(ack(cookie + 1, fake.answer))
                return len(data)

            def recv(self, size: int) -> bytes:
                return fake.ours.recv(size)

            def recv_into(self, buffer: bytearray) -> int:
                if fake.recv_errors:
                    raise fake.recv_errors.pop(0)
                return fake.ours.recv_into(buffer)

            def fileno(self) -> int:
                return fake.ours.fileno()

            def setblocking(self, flag: bool) -> None:
                fake.ours.setblocking(flag)

            def close(self) -> None:
                fake.ours.close()

        return Sock()


def ack(cookie: int, err_bytes: bytes) -> bytes:
    proc_event = struct.pack("=IIQ", 0, 0, 1) + err_bytes + b"\0" * 20
    cn_msg = struct.pack("=IIIIHH", 1, 1, 0, cookie, len(proc_event), 0) + proc_event
    return struct.pack("=IHHII", 16 + len(cn_msg), 3, 0, 0, 0) + cn_msg


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNetlink]:
    kernel = FakeNetlink()
    monkeypatch.setattr("daemoneye.collector.netlink.socket.socket", kernel.socket)
    yield kernel
    kernel.kernel.close()


def test_open_sends_listen_and_returns_on_our_ack(fake: FakeNetlink) -> None:
    fake.answer = struct.pack("=I", 0)
    connector = ProcConnector(rcvbuf_bytes=1 << 20)
    connector.open(ack_timeout=5)
    (request,) = fake.requests
    assert struct.unpack_from("=I", request, 36)[0] == PROC_CN_MCAST_LISTEN
    assert fake.rcvbuf == 1 << 20 and connector.rcvbuf_bytes == 1 << 20
    assert len(connector.recv()) == 0  # the ack is consumed, nothing else is queued
    connector.close()


def test_events_arriving_before_the_ack_are_kept(fake: FakeNetlink) -> None:
    fake.answer = struct.pack("=I", 0)
    early = ack(12345, struct.pack("=I", 0))  # someone else's ack: not ours
    fake.kernel.send(early)
    connector = ProcConnector()
    connector.open(ack_timeout=5)
    assert bytes(connector.recv()) == early
    connector.close()


def test_an_ack_with_an_error_is_refused(fake: FakeNetlink) -> None:
    fake.answer = struct.pack("=I", errno.EPERM)
    with pytest.raises(EventsUnavailable, match="refused to listen: Operation not permitted"):
        ProcConnector().open(ack_timeout=5)


def test_silence_means_no_connector_or_a_foreign_namespace(fake: FakeNetlink) -> None:
    with pytest.raises(EventsUnavailable, match="no acknowledgement") as raised:
        ProcConnector().open(ack_timeout=0.05)
    assert isinstance(raised.value, CollectorError)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (errno.EPERM, "not root / no CAP_NET_ADMIN"),
        (errno.EACCES, "not root / no CAP_NET_ADMIN"),
        (errno.EPROTONOSUPPORT, "kernel has no process connector"),
    ],
)
def test_bind_errors_become_reasons(fake: FakeNetlink, error: int, reason: str) -> None:
    fake.bind_error = OSError(error, "nope")
    assert (probe(ack_timeout=0.05) or "").startswith(reason)


def test_a_kernel_without_netlink_connector(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_protocol(*args: object) -> socket.socket:
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr("daemoneye.collector.netlink.socket.socket", no_protocol)
    assert probe() == "kernel has no process connector (socket: Protocol not supported)"


def test_enobufs_counts_an_overrun_and_doubles_the_buffer_up_to_the_cap(
    fake: FakeNetlink,
) -> None:
    fake.answer = struct.pack("=I", 0)
    connector = ProcConnector(rcvbuf_bytes=1 << 16, rcvbuf_max_bytes=1 << 17)
    connector.open(ack_timeout=5)
    fake.recv_errors = [OSError(errno.ENOBUFS, "No buffer space")] * 3
    for _ in range(3):
        with pytest.raises(ConnectorOverrun):
            connector.recv()
    assert connector.overruns == 3
    assert fake.rcvbuf == 1 << 17  # doubled once, then held at the cap
    fake.kernel.send(b"after")
    assert bytes(connector.recv()) == b"after"  # the socket keeps working
    connector.close()


def test_close_unsubscribes_and_is_idempotent(fake: FakeNetlink) -> None:
    fake.answer = struct.pack("=I", 0)
    connector = ProcConnector()
    connector.open(ack_timeout=5)
    connector.close()
    connector.close()
    assert struct.unpack_from("=I", fake.requests[-1], 36)[0] == PROC_CN_MCAST_IGNORE
    assert len(fake.requests) == 2
