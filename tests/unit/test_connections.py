"""Sockets per process: the /proc/net parsers, the inode → instance mapping and its cost."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemoneye.collector.connections import ConnectionTracker
from daemoneye.collector.net_tables import (
    RawSocket,
    decode_endpoint,
    parse_inet,
    parse_unix,
    scope_of,
)
from daemoneye.models import ProcessKey

TCP_HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
)
UNIX_HEADER = "Num       RefCount Protocol Flags    Type St Inode Path\n"


def _unix_line(inode: int, path: str = "", flags: str = "00000000", st_: str = "03") -> str:
    tail = f" {path}" if path else ""
    return f"0000000019735727: 00000003 00000000 {flags} 0001 {st_} {inode:5d}{tail}\n"


# -- parsing -------------------------------------------------------------------------------------


def test_tcp_lines_give_state_uid_inode_and_skip_time_wait() -> None:
    text = TCP_HEADER + (
        "   0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 "
        "0 4242 1 0 100 0 0 10 0\n"
        "   1: 0100007F:9C40 0100007F:0050 06 00000000:00000000 03:00000000 00000000     0 "
        "0 0 3 0\n"
        "garbage line\n"
    )
    sockets = list(parse_inet("tcp", text))
    assert sockets == [RawSocket("tcp", "0100007F:0050", "00000000:0000", "LISTEN", 1000, 4242)]


def test_udp_states_are_named_for_udp() -> None:
    text = TCP_HEADER + (
        "   0: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000  0 0 77 2\n"
        "   1: 0100007F:0035 0100007F:1234 01 00000000:00000000 00:00000000 00000000  0 0 78 2\n"
    )
    assert [s.state for s in parse_inet("udp", text)] == ["UNCONNECTED", "CONNECTED"]


@pytest.mark.parametrize(
    ("hex_endpoint", "expected"),
    [
        ("0100007F:0050", ("127.0.0.1", 80)),
        ("00000000:0000", (None, None)),
        # ::1 as the kernel prints it on a little-endian machine
        ("00000000000000000000000001000000:01BB", ("::1", 443)),
        # ::ffff:10.1.2.3 (IPv4-mapped) becomes the IPv4 address
        ("0000000000000000FFFF00000302010A:1F90", ("10.1.2.3", 8080)),
        ("00000000000000000000000000000000:0000", (None, None)),
        ("B80D0120000000000000000001000000:0016", ("2001:db8::1", 22)),
        ("ZZZZ:0050", (None, None)),
        ("0100007F", (None, None)),
    ],
)
def test_endpoints_decode_ipv4_ipv6_and_mapped(
    hex_endpoint: str, expected: tuple[str | None, int | None]
) -> None:
    if sys.byteorder != "little" and "0100007F" in hex_endpoint:
        pytest.skip("the samples are a little-endian kernel's text")
    assert tuple(decode_endpoint(hex_endpoint)) == expected


@pytest.mark.parametrize(
    ("address", "scope"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.8", "private"),
        ("fe80::1", "link-local"),
        ("8.8.8.8", "public"),
        ("2606:4700::1111", "public"),
        ("224.0.0.1", "multicast"),
        (None, None),
        ("not an address", None),
    ],
)
def test_remote_scope(address: str | None, scope: str | None) -> None:
    assert scope_of(address) == scope


def test_unix_listen_flag_and_padded_inode() -> None:
    text = UNIX_HEADER + _unix_line(1232) + _unix_line(2196500, "/run/x.sock", "00010000", "01")
    sockets = list(parse_unix(text))
    assert [(s.inode, s.local, s.state) for s in sockets] == [
        (1232, None, "CONNECTED"),
        (2196500, "/run/x.sock", "LISTEN"),
    ]


def test_hostile_unix_path_with_newline_continues_the_path() -> None:
    text = UNIX_HEADER + _unix_line(10, "/tmp/a\nb c") + _unix_line(11, "@abstract")
    sockets = {s.inode: s.local for s in parse_unix(text)}
    assert sockets == {10: "/tmp/a\nb c", 11: "@abstract"}


def test_a_forged_line_inside_a_path_cannot_claim_another_socket() -> None:
    # A process binds a path that contains a whole line claiming inode 20 with a path of its
    # choosing; inode 20 is really another process's unnamed socket.
    forged = _unix_line(20, "/run/forged.sock").rstrip("\n")
    text = UNIX_HEADER + _unix_line(10, "/tmp/x\n" + forged) + _unix_line(20)
    sockets = {s.inode: s.local for s in parse_unix(text)}
    assert 20 not in sockets  # listed twice: neither line is trusted
    assert sockets == {10: "/tmp/x"}


@given(st.text())
def test_unix_parser_survives_any_text(text: str) -> None:
    for entry in parse_unix(UNIX_HEADER + text):
        assert entry.protocol == "unix"
        assert entry.local is None or len(entry.local) <= 4096


@given(st.text())
def test_inet_parser_survives_any_text(text: str) -> None:
    for entry in parse_inet("tcp6", TCP_HEADER + text):
        decode_endpoint(entry.local or "")


# -- the tracker over a fake /proc ---------------------------------------------------------------


def _fake_process(root: Path, pid: int, fds: dict[int, str], netns: str = "net-a") -> None:
    fd_dir = root / str(pid) / "fd"
    fd_dir.mkdir(parents=True, exist_ok=True)
    for child in fd_dir.iterdir():
        child.unlink()
    for fd, target in fds.items():
        (fd_dir / str(fd)).symlink_to(target)
    ns_dir = root / str(pid) / "ns"
    ns_dir.mkdir(exist_ok=True)
    shared = root / netns
    shared.touch()
    if not (ns_dir / "net").exists():
        os.link(shared, ns_dir / "net")


def _fake_tables(root: Path, pid: int, tcp: str = "", unix: str = "") -> None:
    net = root / str(pid) / "net"
    net.mkdir(parents=True, exist_ok=True)
    (net / "tcp").write_text(TCP_HEADER + tcp)
    (net / "udp").write_text(TCP_HEADER)
    (net / "unix").write_text(UNIX_HEADER + unix)


def _tcp(inode: int, local: str, remote: str, state: str = "01") -> str:
    return f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000  0 0 {inode} 1\n"


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    return tmp_path


def _tracker(root: Path, clock: list[float]) -> ConnectionTracker:
    # A directory's st_size is not an fd count: count by listing; no rotation.
    return ConnectionTracker(
        str(root), clock=lambda: clock[0], rotation=1 << 30, count_by_stat=False
    )


def test_new_changed_and_closed_sockets(fake_proc: Path) -> None:
    key = ProcessKey(100, 1.0)
    _fake_process(fake_proc, 100, {0: "/dev/null", 3: "socket:[501]", 4: "socket:[502]"})
    listen = _tcp(501, "0100007F:0050", "00000000:0000", "0A")
    outbound = _tcp(502, "0100007F:9C40", "08080808:01BB", "02")
    _fake_tables(fake_proc, 100, listen + outbound)
    clock = [1000.0]
    tracker = _tracker(fake_proc, clock)

    first = tracker.refresh([key])
    by_inode = {c.inode: c for c in first.opened}
    assert set(by_inode) == {501, 502}
    assert by_inode[501].direction == "listen" and by_inode[501].local_port == 80
    assert by_inode[502].state == "SYN_SENT"
    assert by_inode[502].direction == "outbound"
    assert (by_inode[502].remote_address, by_inode[502].remote_port) == ("8.8.8.8", 443)
    assert by_inode[502].remote_scope == "public"
    assert first.stats.processes_walked == 1

    clock[0] = 1005.0
    _fake_tables(fake_proc, 100, listen + _tcp(502, "0100007F:9C40", "08080808:01BB", "01"))
    second = tracker.refresh([key])
    assert second.opened == () and second.closed == ()
    assert [(c.inode, c.state, c.first_seen, c.last_seen) for c in second.changed] == [
        (502, "ESTABLISHED", 1000.0, 1005.0)
    ]
    # the fd count did not change: the fds were not read again
    assert second.stats.processes_walked == 0 and second.stats.links_read == 0

    clock[0] = 1010.0
    _fake_process(fake_proc, 100, {0: "/dev/null", 3: "socket:[501]"})
    _fake_tables(fake_proc, 100, listen)
    third = tracker.refresh([key])
    assert [(c.inode, c.ended_at) for c in third.closed] == [(502, 1010.0)]
    assert third.stats.processes_walked == 1

    clock[0] = 1015.0
    fourth = tracker.refresh([])  # the process ended
    assert [(c.inode, c.ended_at) for c in fourth.closed] == [(501, 1015.0)]
    assert tracker.snapshot() == {}


def test_processes_without_sockets_share_one_empty_set(fake_proc: Path) -> None:
    """Most processes hold no socket: at 10,000 of them an empty set each was 2 MB."""
    keys = [ProcessKey(pid, 1.0) for pid in (100, 101)]
    for key in keys:
        _fake_process(fake_proc, key.pid, {0: "/dev/null", 1: "pipe:[7]"})
    _fake_tables(fake_proc, 100)
    tracker = _tracker(fake_proc, [1000.0])
    tracker.refresh(keys)
    first, second = (tracker._holders[key].inodes for key in keys)
    assert first == second == frozenset() and first is second


def test_accepted_socket_on_a_listening_port_is_inbound(fake_proc: Path) -> None:
    _fake_process(fake_proc, 7, {3: "socket:[1]", 4: "socket:[2]"})
    _fake_tables(
        fake_proc,
        7,
        _tcp(1, "00000000:0016", "00000000:0000", "0A")
        + _tcp(2, "0A00000A:0016", "0200000A:D431", "01"),
    )
    opened = {c.inode: c for c in _tracker(fake_proc, [0.0]).refresh([ProcessKey(7, 1.0)]).opened}
    assert opened[2].direction == "inbound"
    assert opened[2].remote_scope == "private"


def test_sockets_and_fds_that_vanish_between_two_reads(fake_proc: Path) -> None:
    # pid 8's fd directory is listed but its process is gone before the tables are read;
    # pid 9 never existed; pid 10 holds a socket the table no longer lists.
    _fake_process(fake_proc, 8, {3: "socket:[80]"})
    _fake_process(fake_proc, 10, {3: "socket:[99]", 4: "pipe:[5]", 5: "socket:[bad]"})
    _fake_tables(fake_proc, 10, "")
    tracker = _tracker(fake_proc, [0.0])
    shutil.rmtree(fake_proc / "8" / "fd")
    delta = tracker.refresh([ProcessKey(8, 1.0), ProcessKey(9, 1.0), ProcessKey(10, 1.0)])
    assert delta.opened == ()
    assert delta.stats.vanished >= 2
    assert delta.stats.processes_walked == 1


def test_processes_in_two_network_namespaces(fake_proc: Path) -> None:
    _fake_process(fake_proc, 20, {3: "socket:[200]"}, netns="net-a")
    _fake_process(fake_proc, 21, {3: "socket:[210]"}, netns="net-b")
    _fake_tables(fake_proc, 20, _tcp(200, "0100007F:0050", "00000000:0000", "0A"))
    _fake_tables(fake_proc, 21, _tcp(210, "0100007F:0050", "00000000:0000", "0A"))
    delta = _tracker(fake_proc, [0.0]).refresh([ProcessKey(20, 1.0), ProcessKey(21, 1.0)])
    assert delta.stats.namespaces == 2
    by_pid = {c.pid: c for c in delta.opened}
    assert set(by_pid) == {20, 21}
    assert by_pid[20].netns != by_pid[21].netns


def test_a_refresh_stops_walking_at_its_link_budget(fake_proc: Path) -> None:
    for pid in (30, 31):
        _fake_process(fake_proc, pid, {fd: "/dev/null" for fd in range(50)})
    _fake_tables(fake_proc, 30)
    tracker = ConnectionTracker(str(fake_proc), link_budget=10, count_by_stat=False)
    first = tracker.refresh([ProcessKey(30, 1.0), ProcessKey(31, 1.0)])
    assert first.stats.processes_walked == 1  # the second waits for the next refresh
    second = tracker.refresh([ProcessKey(30, 1.0), ProcessKey(31, 1.0)])
    assert second.stats.processes_walked == 1


def test_the_collectors_own_fds_are_never_walked(fake_proc: Path) -> None:
    # procmond holds a stat descriptor per live process: its fd count moves with every start
    # and exit, so walking it re-read thousands of links each refresh
    _fake_process(fake_proc, 50, {fd: "/dev/null" for fd in range(200)} | {3: "socket:[77]"})
    _fake_process(fake_proc, 51, {3: "socket:[78]"})
    listen = _tcp(77, "0100007F:0050", "00000000:0000", "0A")
    _fake_tables(fake_proc, 51, listen + _tcp(78, "0100007F:0051", "00000000:0000", "0A"))
    tracker = ConnectionTracker(str(fake_proc), count_by_stat=False, own_pid=50)
    keys = [ProcessKey(50, 1.0), ProcessKey(51, 1.0)]
    delta = tracker.refresh(keys)
    assert delta.stats.processes_walked == 1
    assert delta.stats.links_read == 1
    assert [(c.pid, c.inode) for c in delta.opened] == [(51, 78)]
    _fake_process(fake_proc, 50, {fd: "/dev/null" for fd in range(300)})  # its count moved
    assert tracker.refresh(keys).stats.links_read == 0


def test_a_new_holder_takes_the_network_namespace_its_record_already_has(
    fake_proc: Path,
) -> None:
    _fake_process(fake_proc, 52, {3: "socket:[79]"})
    _fake_tables(fake_proc, 52, _tcp(79, "0100007F:0050", "00000000:0000", "0A"))
    (fake_proc / "52" / "ns" / "net").unlink()  # a stat of the link would fail: not read
    asked: list[ProcessKey] = []

    def netns_of(key: ProcessKey) -> int | None:
        asked.append(key)
        return 4026531840

    tracker = ConnectionTracker(str(fake_proc), count_by_stat=False)
    delta = tracker.refresh([ProcessKey(52, 1.0)], netns_of)
    assert [(c.pid, c.netns) for c in delta.opened] == [(52, 4026531840)]
    assert delta.stats.vanished == 0
    tracker.refresh([ProcessKey(52, 1.0)], netns_of)
    assert asked == [ProcessKey(52, 1.0)]  # once per holder, at its first refresh


def test_a_new_tcp_socket_at_the_same_fd_count_is_searched_for_once(fake_proc: Path) -> None:
    # pid 41 closes socket 41 and opens socket 45: same fd count, so no walk is due; the new
    # socket in the table that nobody holds sends the tracker looking among its uid's processes
    for pid in range(40, 44):
        _fake_process(fake_proc, pid, {3: f"socket:[{pid}]"})
    listen = "".join(_tcp(i, "0100007F:0050", "00000000:0000", "0A") for i in range(40, 44))
    _fake_tables(fake_proc, 40, listen)
    tracker = ConnectionTracker(str(fake_proc), rotation=1 << 30, count_by_stat=False)
    keys = [ProcessKey(pid, 1.0) for pid in range(40, 44)]
    tracker.refresh(keys)
    assert tracker.refresh(keys).stats.processes_walked == 0
    _fake_process(fake_proc, 41, {3: "socket:[45]"})
    _fake_tables(fake_proc, 40, listen + _tcp(45, "0100007F:0051", "00000000:0000", "0A"))
    found = tracker.refresh(keys)
    assert [(c.pid, c.inode) for c in found.opened] == [(41, 45)]
    assert [(c.pid, c.inode) for c in found.closed] == [(41, 41)]
    # a socket that nobody readable holds is looked for once, not at every refresh
    _fake_tables(
        fake_proc,
        40,
        listen
        + _tcp(45, "0100007F:0051", "00000000:0000", "0A")
        + _tcp(99, "0100007F:0052", "00000000:0000", "0A"),
    )
    assert tracker.refresh(keys).stats.processes_walked == 4
    assert tracker.refresh(keys).stats.processes_walked == 0


def test_rotation_finds_a_unix_socket_swapped_at_the_same_fd_count(fake_proc: Path) -> None:
    for pid in range(40, 44):
        _fake_process(fake_proc, pid, {3: f"socket:[{pid}]"})
    unix = "".join(_unix_line(i) for i in (*range(40, 44), 45))
    _fake_tables(fake_proc, 40, unix=unix)
    tracker = ConnectionTracker(str(fake_proc), rotation=4, count_by_stat=False)
    keys = [ProcessKey(pid, 1.0) for pid in range(40, 44)]
    tracker.refresh(keys)
    _fake_process(fake_proc, 41, {3: "socket:[45]"})
    walked = [tracker.refresh(keys).stats.processes_walked for _ in range(4)]
    assert walked == [1, 1, 1, 1]  # a quarter each refresh, not everything
    assert {c.inode for c in tracker.snapshot()[ProcessKey(41, 1.0)]} == {45}


# -- real processes --------------------------------------------------------------------------------


def _started(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        yield child
    finally:
        child.kill()
        child.wait()


_HOLDER = """
import socket, sys
listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
listener.bind(("::", 0)); listener.listen()
port = listener.getsockname()[1]
client = socket.create_connection(("127.0.0.1", port))
server, _ = listener.accept()
print(port, flush=True)
print("ready", flush=True)
sys.stdin.read() if False else __import__("time").sleep(600)
"""


def test_real_sockets_of_a_real_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        assert child.stdout.readline().strip() == "ready"
        key = ProcessKey(child.pid, 1.0)
        tracker = ConnectionTracker(rotation=1 << 30)
        conns = tracker.refresh([key]).opened
        listening = [c for c in conns if c.state == "LISTEN"]
        assert [(c.protocol, c.local_port, c.direction) for c in listening] == [
            ("tcp6", port, "listen")
        ]
        accepted = [c for c in conns if c.direction == "inbound"]
        # the IPv4 client arrived on an IPv6 socket: the mapped address is shown as IPv4
        assert [(c.protocol, c.local_address, c.remote_address) for c in accepted] == [
            ("tcp6", "127.0.0.1", "127.0.0.1")
        ]
        outbound = [c for c in conns if c.direction == "outbound"]
        assert [(c.protocol, c.remote_port, c.remote_scope) for c in outbound] == [
            ("tcp", port, "loopback")
        ]
        again = tracker.refresh([key])
        assert (again.opened, again.closed, again.stats.links_read) == ((), (), 0)
    finally:
        child.kill()
        child.wait()
    gone = tracker.refresh([])
    assert len(gone.closed) == 3


_MANY_FDS = """
import os, resource, socket, time
resource.setrlimit(resource.RLIMIT_NOFILE, (110_000, 110_000))
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0)); sock.listen()
print(sock.getsockname()[1], flush=True)
null = os.open("/dev/null", os.O_RDONLY)
for _ in range(100_000):
    os.dup(null)
print("ready", flush=True)
time.sleep(600)
"""


def test_a_fake_process_with_100000_fds_is_walked_once(fake_proc: Path) -> None:
    fds = {fd: "/dev/null" for fd in range(100_000)}
    fds[77_777] = "socket:[123]"
    _fake_process(fake_proc, 50, fds)
    _fake_tables(fake_proc, 50, _tcp(123, "0100007F:0050", "00000000:0000", "0A"))
    tracker = _tracker(fake_proc, [0.0])
    first = tracker.refresh([ProcessKey(50, 1.0)])
    assert [c.inode for c in first.opened] == [123]
    assert first.stats.links_read == 100_000
    second = tracker.refresh([ProcessKey(50, 1.0)])
    assert (second.stats.links_read, second.closed) == (0, ())


def _can_raise_nofile(limit: int) -> bool:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard >= limit:
        return True
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, limit))
    except (ValueError, OSError):
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return True


@pytest.mark.skipif(
    not _can_raise_nofile(110_000),
    reason="RLIMIT_NOFILE cannot be raised to 110,000 here (needs CAP_SYS_RESOURCE)",
)
def test_a_process_with_100000_fds_is_walked_once() -> None:
    child = subprocess.Popen([sys.executable, "-c", _MANY_FDS], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        assert child.stdout.readline().strip() == "ready"
        key = ProcessKey(child.pid, 1.0)
        tracker = ConnectionTracker(rotation=1 << 30)
        first = tracker.refresh([key])
        assert [c.local_port for c in first.opened] == [port]
        assert first.stats.links_read >= 100_000
        second = tracker.refresh([key])
        assert second.stats.links_read == 0 and second.closed == ()
    finally:
        child.kill()
        child.wait()


_IN_NETNS = """
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 4321)); s.listen()
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a new network namespace needs root")
def test_a_process_in_another_network_namespace() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    child = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c", _IN_NETNS], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        key = ProcessKey(child.pid, 1.0)
        ours = os.stat("/proc/self/ns/net").st_ino
        delta = ConnectionTracker().refresh([key, ProcessKey(os.getpid(), 1.0)])
        theirs = [c for c in delta.opened if c.pid == child.pid]
        assert [(c.local_port, c.state) for c in theirs] == [(4321, "LISTEN")]
        assert theirs[0].netns not in (None, ours)
    finally:
        child.kill()
        child.wait()


def test_fd_count_from_stat_matches_this_kernel() -> None:
    from daemoneye.collector.connections import fd_count_from_stat

    size = os.stat("/proc/self/fd").st_size
    assert fd_count_from_stat("/proc") is (size > 0)
    _ = socket, time


def test_the_search_for_a_new_socket_looks_at_the_youngest_processes_first(
    fake_proc: Path,
) -> None:
    # 40 processes of one uid, none of whose fd counts change; the youngest (pid 139) swaps an
    # fd for a socket. More candidates than one search walks: the youngest must be among them.
    for pid in range(100, 140):
        _fake_process(fake_proc, pid, {3: "/dev/null"})
    _fake_tables(fake_proc, 100, "")
    tracker = ConnectionTracker(str(fake_proc), rotation=1 << 30, count_by_stat=False)
    keys = [ProcessKey(pid, float(pid)) for pid in range(100, 140)]  # pid 139 started last
    tracker.refresh(keys)
    _fake_process(fake_proc, 139, {3: "socket:[777]"})
    _fake_tables(fake_proc, 100, _tcp(777, "0A000005:A000", "5DB8D822:01BB", "01"))
    found = tracker.refresh(keys)
    assert [(c.pid, c.inode) for c in found.opened] == [(139, 777)]
    assert found.stats.processes_walked <= 32
