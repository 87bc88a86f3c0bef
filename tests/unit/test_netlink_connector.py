"""ProcConnector's handshake, error reasons and overrun handling, with the netlink socket
replaced by one end of a socketpair so that no kernel support is needed."""

from __future__ import annotations

import ctypes
import errno
import logging
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from daemoneye.collector.connector_filter import pack_program, process_events_filter
from daemoneye.collector.netlink import (
    EVENT_MASK,
    ConnectorOverrun,
    EventsUnavailable,
    ProcConnector,
    probe,
    takes_event_mask,
)
from daemoneye.collector.proc_events import (
    PROC_CN_MCAST_IGNORE,
    PROC_CN_MCAST_LISTEN,
    PROC_EVENT_ALL,
    PROC_EVENT_COMM,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_GID,
    PROC_EVENT_PTRACE,
    PROC_EVENT_UID,
)
from daemoneye.errors import CollectorError

SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
MODERN = "6.18.44-generic"  # a kernel release whose connector reads event masks
OLD = "6.5.13-generic"


class FakeNetlink:
    """Plays the kernel's side: records requests, and can answer through `kernel`.

    Like Linux >= 6.6 (when `reads_masks`), it acknowledges a legacy request and a masked one
    whose mask is PROC_EVENT_ALL, and stays silent after any other mask."""

    def __init__(self) -> None:
        self.ours, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.requests: list[bytes] = []
        self.calls: list[str] = []  # bind, setsockopt:<option>, send, in order
        self.rcvbuf = 0
        self.filter_program: bytes | None = None
        self.bind_error: OSError | None = None
        self.filter_error: OSError | None = None
        self.recv_errors: list[OSError] = []
        self.answer: bytes | None = None  # sent back as the kernel's ack, cookie filled in
        self.reads_masks = True
        self.masked_send_error: OSError | None = None  # raised by send() of a masked request

    def socket(self, family: int, kind: int, proto: int = 0) -> Any:
        fake = self

        class Sock:
            def bind(self, address: tuple[int, int]) -> None:
                fake.calls.append("bind")
                if fake.bind_error is not None:
                    raise fake.bind_error

            def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
                fake.calls.append(f"setsockopt:{option}")
                if option == SO_ATTACH_FILTER:
                    if fake.filter_error is not None:
                        raise fake.filter_error
                    assert isinstance(value, bytes)
                    length, address = struct.unpack("@HP", value)
                    fake.filter_program = ctypes.string_at(address, length * 8)
                else:
                    assert isinstance(value, int)
                    fake.rcvbuf = value

            def getsockopt(self, level: int, option: int) -> int:
                return fake.rcvbuf * 2

            def send(self, data: bytes) -> int:
                fake.calls.append("send")
                if fake.masked_send_error is not None and len(data) == 44:
                    raise fake.masked_send_error
                fake.requests.append(data)
                cookie = struct.unpack_from("=I", data, 16 + 12)[0]
                legacy = len(data) == 16 + 20 + 4
                all_events = not legacy and struct.unpack_from("=I", data, 40)[0] == PROC_EVENT_ALL
                listen = struct.unpack_from("=I", data, 36)[0] == PROC_CN_MCAST_LISTEN
                heard = legacy or (fake.reads_masks and all_events)
                if fake.answer is not None and listen and heard:
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
    connector = ProcConnector(rcvbuf_bytes=1 << 20, kernel_release=OLD)
    connector.open(ack_timeout=5)
    (request,) = fake.requests
    assert len(request) == 40  # the legacy request: op only, all events
    assert struct.unpack_from("=I", request, 36)[0] == PROC_CN_MCAST_LISTEN
    assert fake.rcvbuf == 1 << 20 and connector.rcvbuf_bytes == 1 << 20
    assert len(connector.recv()) == 0  # the ack is consumed, nothing else is queued
    assert connector.event_mask is None and connector.socket_filter
    assert not connector.delivers_every_event  # the socket filter holds thread events back
    connector.close()


def masks_requested(fake: FakeNetlink) -> list[int | None]:
    return [struct.unpack_from("=I", r, 40)[0] if len(r) == 44 else None for r in fake.requests]


def test_a_kernel_that_reads_masks_is_narrowed_to_the_events_the_source_uses(
    fake: FakeNetlink,
) -> None:
    """Legacy request and its ack, then the ALL mask and its ack, then the real mask, which
    the kernel does not acknowledge."""
    fake.answer = struct.pack("=I", 0)
    connector = ProcConnector(kernel_release=MODERN)
    connector.open(ack_timeout=5)
    assert masks_requested(fake) == [None, PROC_EVENT_ALL, EVENT_MASK]
    assert EVENT_MASK == (
        PROC_EVENT_FORK
        | PROC_EVENT_EXEC
        | PROC_EVENT_EXIT
        | PROC_EVENT_UID
        | PROC_EVENT_GID
        | PROC_EVENT_PTRACE
        | PROC_EVENT_COMM
    )  # not sid, coredump or the exit-code-only bit
    assert all(struct.unpack_from("=I", r, 36)[0] == PROC_CN_MCAST_LISTEN for r in fake.requests)
    assert connector.event_mask == EVENT_MASK
    assert connector.filtering == (
        "kernel mask fork|exec|exit|uid|gid|ptrace|comm; socket filter drops threads"
    )
    assert len(connector.recv()) == 0  # both acks consumed
    connector.close()
    assert len(fake.requests[-1]) == 40  # the legacy IGNORE ends any subscription


def test_a_kernel_that_never_acknowledges_a_mask_keeps_all_events(fake: FakeNetlink) -> None:
    fake.answer = struct.pack("=I", 0)
    fake.reads_masks = False  # a backport-less kernel reporting 6.6+, or a lost ack
    connector = ProcConnector(kernel_release=MODERN)
    connector.open(ack_timeout=0.2)
    assert masks_requested(fake) == [None, PROC_EVENT_ALL]  # the real mask is never sent
    assert connector.event_mask is None
    assert connector.filtering == "kernel sends all events; socket filter drops threads"
    connector.close()


def test_a_masked_request_the_kernel_refuses_keeps_all_events(fake: FakeNetlink) -> None:
    fake.answer = struct.pack("=I", 0)
    fake.masked_send_error = OSError(errno.EINVAL, "Invalid argument")
    connector = ProcConnector(kernel_release=MODERN)
    connector.open(ack_timeout=5)  # subscribed by the legacy request: no reason to give up
    assert connector.event_mask is None and connector.socket_filter
    fake.kernel.send(b"event")
    assert bytes(connector.recv()) == b"event"
    connector.close()


def test_an_older_kernel_is_not_asked_for_a_mask(fake: FakeNetlink) -> None:
    fake.answer = struct.pack("=I", 0)
    connector = ProcConnector(kernel_release=OLD)
    connector.open(ack_timeout=5)
    assert masks_requested(fake) == [None]
    connector.close()


def test_without_mask_and_filter_every_event_is_delivered(fake: FakeNetlink) -> None:
    fake.answer = struct.pack("=I", 0)
    connector = ProcConnector(kernel_release=MODERN, event_mask=None, socket_filter=False)
    connector.open(ack_timeout=5)
    assert masks_requested(fake) == [None] and fake.filter_program is None
    assert connector.delivers_every_event
    connector.close()


def test_the_socket_filter_is_attached_before_the_socket_is_bound(fake: FakeNetlink) -> None:
    fake.answer = struct.pack("=I", 0)
    connector = ProcConnector(kernel_release=OLD)
    connector.open(ack_timeout=5)
    assert fake.calls.index(f"setsockopt:{SO_ATTACH_FILTER}") < fake.calls.index("bind")
    assert fake.filter_program == pack_program(process_events_filter())
    connector.close()


def test_a_refused_socket_filter_is_logged_and_events_still_flow(
    fake: FakeNetlink, caplog: pytest.LogCaptureFixture
) -> None:
    fake.answer = struct.pack("=I", 0)
    fake.filter_error = OSError(errno.EPERM, "Operation not permitted")
    connector = ProcConnector(kernel_release=OLD)
    with caplog.at_level(logging.WARNING, logger="daemoneye.collector.netlink"):
        connector.open(ack_timeout=5)
    assert not connector.socket_filter and connector.delivers_every_event
    assert "no socket filter (Operation not permitted)" in caplog.text
    fake.kernel.send(b"event")
    assert bytes(connector.recv()) == b"event"
    assert connector.datagrams_total == 2  # the ack and this one
    connector.close()


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ("6.6.0", True),
        ("6.18.44-fc-v1300", True),
        ("7.0.1", True),
        ("6.5.13", False),
        ("5.15.0-91-generic", False),
        ("4.19.0", False),
        ("", False),
        ("vanilla", False),
    ],
)
def test_event_masks_start_with_linux_6_6(release: str, expected: bool) -> None:
    assert takes_event_mask(release) is expected


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
    connector = ProcConnector(kernel_release=OLD)
    connector.open(ack_timeout=5)
    connector.close()
    connector.close()
    assert struct.unpack_from("=I", fake.requests[-1], 36)[0] == PROC_CN_MCAST_IGNORE
    assert len(fake.requests) == 2
