"""The launcher's one request, parsed without a launcher: who may send it, its shape, its size,
its one descriptor. Everything else is refused with the reason."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from daemoneye.procmond.launcher import Refused, Request, Sender, parse_request

AGENT = Sender(pid=4242, uid=999)
GOOD = b'{"settings": {"interval": 1.0}, "log_level": "info"}'


@pytest.fixture
def sock() -> Iterator[int]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield theirs.fileno()


def test_the_one_request_gives_the_per_start_arguments(sock: int) -> None:
    for sender in (AGENT, Sender(AGENT.pid, 0)):  # before the agent's drop, and after
        request = parse_request(GOOD, False, [sock], sender, AGENT)
        assert request == Request('{"interval":1.0}', "info")
        assert request.arguments(7) == [
            "--fd",
            "7",
            '--settings={"interval":1.0}',
            "--log-level",
            "info",
        ]


@pytest.mark.parametrize(
    ("sender", "why"),
    [
        (None, "not from the agent"),
        (Sender(4243, 999), "not from the agent"),  # another process, same user
        (Sender(4242, 65534), "not from the agent"),  # another user
    ],
)
def test_only_the_agent_may_ask(sock: int, sender: Sender | None, why: str) -> None:
    with pytest.raises(Refused, match=why):
        parse_request(GOOD, False, [sock], sender, AGENT)


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"null", "a request is"),
        (b'{"argv": ["/bin/sh"]}', "a request is"),
        (b'{"settings": {}, "log_level": "info", "argv": []}', "a request is"),
        (b'{"settings": [], "log_level": "info"}', "settings is not"),
        (b'{"settings": {}, "log_level": {"a": 1}}', "log_level"),
        (b'{"settings": {}, "log_level": "-x"}', "log_level"),
    ],
)
def test_anything_else_is_refused(sock: int, message: bytes, why: str) -> None:
    with pytest.raises(Refused, match=why):
        parse_request(message, False, [sock], AGENT, AGENT)


def test_a_cut_message_or_other_descriptors_are_refused(sock: int) -> None:
    with pytest.raises(Refused, match="at most"):
        parse_request(GOOD, True, [sock], AGENT, AGENT)
    for descriptors in ([], [sock, sock]):
        with pytest.raises(Refused, match="exactly one descriptor"):
            parse_request(GOOD, False, descriptors, AGENT, AGENT)
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(Refused, match="not a socket"):
            parse_request(GOOD, False, [read_end], AGENT, AGENT)
    finally:
        os.close(read_end)
        os.close(write_end)
