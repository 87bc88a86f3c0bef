"""`daemoneye connections FILTER`, the process filter's `port:`/`remote:` terms, and paging."""

from __future__ import annotations

import dataclasses

import pytest

from daemoneye.connection_filter import ConnectionFilterError, parse_connection_filter
from daemoneye.daemon.connection_answers import by_instance, connections_page
from daemoneye.filters import FilterError, parse_filter
from daemoneye.ipc import protocol
from daemoneye.models import Connection, ProcessRecord

OUT = Connection(
    pid=10,
    start_time=5.0,
    protocol="tcp",
    local_address="10.0.0.1",
    local_port=40000,
    remote_address="93.184.216.34",
    remote_port=443,
    state="ESTABLISHED",
    inode=1,
    netns=1,
    direction="outbound",
    remote_scope="public",
    first_seen=1.0,
    last_seen=1.0,
)
LISTEN = dataclasses.replace(
    OUT,
    pid=20,
    protocol="tcp6",
    local_address="::",
    local_port=22,
    remote_address=None,
    remote_port=None,
    state="LISTEN",
    inode=2,
    direction="listen",
    remote_scope=None,
)
UNIX = dataclasses.replace(
    LISTEN, protocol="unix", local_address="/run/x.sock", local_port=None, inode=3
)


def _matching(text: str) -> list[int]:
    f = parse_connection_filter(text)
    return [c.inode for c in (OUT, LISTEN, UNIX) if f.matches(c)]


@pytest.mark.parametrize(
    ("text", "inodes"),
    [
        ("", [1, 2, 3]),
        ("port:443", [1]),
        ("port:22", [2]),
        ("remote:93.184.216.34", [1]),
        ("remote:93.184.0.0/16", [1]),
        ("remote:::ffff:93.184.216.34", [1]),  # IPv4-mapped asks for the IPv4 address
        ("remote:public", [1]),
        ("remote:private", []),
        ("proto:tcp", [1, 2]),
        ("proto:tcp6", [2]),
        ("proto:unix", [3]),
        ("state:listen", [2, 3]),
        ("pid:20", [2, 3]),
        ("dir:outbound", [1]),
        ("not:proto:unix state:LISTEN", [2]),
        ("-port:443", [2, 3]),
    ],
)
def test_terms(text: str, inodes: list[int]) -> None:
    assert _matching(text) == inodes


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("port:http", "whole number"),
        ("port:70000", "0 to 65535"),
        ("remote:example.com", "expected an address"),
        ("proto:tcpp", "did you mean 'tcp'"),
        ("prot:tcp", "did you mean 'proto'"),
        ("dir:out", "directions are"),
        ("'unclosed", "No closing quotation"),
    ],
)
def test_mistakes_name_the_term(text: str, says: str) -> None:
    with pytest.raises(ConnectionFilterError, match=says):
        parse_connection_filter(text)


def _record(pid: int) -> ProcessRecord:
    return ProcessRecord(
        pid, 1, 5.0, "p", None, (), None, 0, "root", 0, "S", 1, 0, 0.0, None, False, 1.0, 1.0
    )


def test_process_filter_port_and_remote_terms_use_the_connections() -> None:
    held = by_instance([OUT, LISTEN])
    records = [_record(10), _record(20), _record(30)]

    def pids(text: str) -> list[int]:
        f = parse_filter(text)
        return [r.pid for r in records if f.matches(r, connections=held)]

    assert pids("port:443") == [10]
    assert pids("remote:public") == [10]
    assert pids("port:22") == [20]
    assert pids("not:port:22") == [10, 30]
    assert pids("port:443 pid:20") == []
    assert not parse_filter("port:22").empty
    # without the connections no process holds one
    assert [r.pid for r in records if parse_filter("port:22").matches(r)] == []
    with pytest.raises(FilterError, match="whole number"):
        parse_filter("port:ssh")


def test_pages_fit_one_message_and_resume_after_the_last() -> None:
    hostile = "/" + "\x1b" * 4000
    many = [
        dataclasses.replace(UNIX, pid=pid, inode=pid, local_address=hostile)
        for pid in range(1, 2001)
    ]
    f = parse_connection_filter("")
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        page = connections_page(many, f, after, 10**6, 1.0, lambda key: "name")
        size = len(protocol.dumps([dataclasses.asdict(c) for c in page.connections]))
        assert size <= protocol.CHUNK_BYTES + 1024
        assert page.total == 2000 and page.names == ("name",) * len(page.connections)
        seen.extend(c.pid for c in page.connections)
        pages += 1
        if page.next is None:
            break
        after = page.next
    assert seen == list(range(1, 2001)) and pages > 1
