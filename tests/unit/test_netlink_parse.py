"""The process-connector parsers, on buffers captured from a real kernel (see
samples/netlink/capture.py) and on hostile ones."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemoneye.collector.proc_events import (
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NLMSG_OVERRUN,
    PROC_CN_MCAST_LISTEN,
    PROC_EVENT_COMM,
    PROC_EVENT_COREDUMP,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_PTRACE,
    AckEvent,
    CommEvent,
    CoredumpEvent,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    GidEvent,
    MalformedMessage,
    NetlinkError,
    NetlinkOverrun,
    ProcConnectorEvent,
    PtraceEvent,
    SidEvent,
    UidEvent,
    UnknownEvent,
    _walk,
    listen_request,
    parse_messages,
)

SAMPLES = Path(__file__).parent / "samples" / "netlink"
CAPTURE_COOKIE = 0x5EED


def load(name: str) -> tuple[int, list[bytes]]:
    """(child pid, recv buffers) of one captured scenario."""
    lines = (SAMPLES / f"{name}.hex").read_text().splitlines()
    pid = int(lines[0].rsplit("child pid ", 1)[1])
    return pid, [bytes.fromhex(line) for line in lines[1:] if line]


def decode(buffers: list[bytes]) -> list[ProcConnectorEvent]:
    return [event for buf in buffers for event in parse_messages(buf)]


def message(what: int, body: bytes, *, seq: int = 7, cpu: int = 1) -> bytes:
    """One connector message as the kernel frames it."""
    proc_event = struct.pack("=IIQ", what, cpu, 123_456) + body
    cn_msg = struct.pack("=IIIIHH", 1, 1, seq, 0, len(proc_event), 0) + proc_event
    return struct.pack("=IHHII", 16 + len(cn_msg), NLMSG_DONE, 0, seq, 0) + cn_msg


# -- captured from a real kernel -------------------------------------------------------------


def test_fork_exec_exit_of_a_child_that_exits_3() -> None:
    pid, buffers = load("exit3")
    events = [e for e in decode(buffers) if not isinstance(e, AckEvent)]
    fork, exec_, exit_ = events
    assert isinstance(fork, ForkEvent) and not fork.is_thread
    assert (fork.child_pid, fork.child_tgid) == (pid, pid)
    assert isinstance(exec_, ExecEvent) and exec_.tgid == pid
    assert isinstance(exit_, ExitEvent)
    assert exit_.tgid == pid and exit_.exited and exit_.exit_status == 3
    assert exit_.term_signal is None and exit_.exit_signal == 17  # SIGCHLD to the parent
    assert exit_.parent_tgid == fork.parent_tgid
    assert fork.timestamp_ns < exec_.timestamp_ns < exit_.timestamp_ns


def test_death_by_sigkill_decodes_the_signal() -> None:
    pid, buffers = load("sigkill")
    (exit_,) = [e for e in decode(buffers) if isinstance(e, ExitEvent)]
    assert exit_.tgid == pid
    assert not exit_.exited and exit_.exit_status is None
    assert exit_.term_signal == 9 and not exit_.core_dumped


def test_thread_creation_and_exit_are_recognisable() -> None:
    pid, buffers = load("thread")
    events = decode(buffers)
    forks = [e for e in events if isinstance(e, ForkEvent)]
    exits = [e for e in events if isinstance(e, ExitEvent)]
    assert [f.is_thread for f in forks] == [False, True]
    assert forks[1].child_tgid == pid and forks[1].child_pid != pid
    assert [x.is_thread for x in exits] == [True, False]
    assert exits[0].exit_signal == -1  # threads signal nobody


def test_comm_change_carries_the_new_name() -> None:
    pid, buffers = load("comm")
    (comm,) = [e for e in decode(buffers) if isinstance(e, CommEvent)]
    assert (comm.tgid, comm.comm) == (pid, "renamed-xyz")


def test_sid_gid_uid_changes() -> None:
    pid, buffers = load("ids")
    events = decode(buffers)
    (sid,) = [e for e in events if isinstance(e, SidEvent)]
    (gid,) = [e for e in events if isinstance(e, GidEvent)]
    (uid,) = [e for e in events if isinstance(e, UidEvent)]
    assert sid.tgid == gid.tgid == uid.tgid == pid
    assert (gid.rgid, gid.egid, uid.ruid, uid.euid) == (65534, 65534, 65534, 65534)


def test_the_listen_ack_echoes_our_cookie_plus_one() -> None:
    _, buffers = load("exit3")
    (ack,) = [e for e in decode(buffers) if isinstance(e, AckEvent)]
    assert ack.err == 0 and ack.cookie == CAPTURE_COOKIE + 1


def test_several_messages_in_one_buffer_decode_in_order() -> None:
    _, buffers = load("ids")
    assert parse_messages(b"".join(buffers)) == decode(buffers)


def test_seq_is_the_per_cpu_counter() -> None:
    _, buffers = load("ids")
    events = [e for e in decode(buffers) if isinstance(e, ForkEvent | ExecEvent | ExitEvent)]
    by_cpu: dict[int, list[int]] = {}
    for event in events:
        by_cpu.setdefault(event.cpu, []).append(event.seq)
    for seqs in by_cpu.values():
        assert seqs == sorted(seqs)


# -- every kind, including kinds rarely seen ---------------------------------------------------


def test_ptrace_coredump_and_unknown_kinds() -> None:
    buf = (
        message(PROC_EVENT_PTRACE, struct.pack("=IIII", 10, 10, 20, 20))
        + message(PROC_EVENT_COREDUMP, struct.pack("=IIII", 10, 10, 1, 1))
        + message(0x00001000, b"\0" * 24)
    )
    ptrace, coredump, unknown = parse_messages(buf)
    assert isinstance(ptrace, PtraceEvent) and ptrace.tracer_tgid == 20
    assert isinstance(coredump, CoredumpEvent) and coredump.parent_tgid == 1
    assert isinstance(unknown, UnknownEvent) and unknown.what == 0x1000


def test_exit_from_a_kernel_without_parent_fields() -> None:
    (exit_,) = parse_messages(message(PROC_EVENT_EXIT, struct.pack("=IIIi", 5, 5, 0x8B, 17)))
    assert isinstance(exit_, ExitEvent)
    assert (exit_.parent_pid, exit_.parent_tgid) == (0, 0)
    assert exit_.term_signal == 11 and exit_.core_dumped


def test_comm_with_undecodable_bytes_stays_visible() -> None:
    body = struct.pack("=II16s", 5, 5, b"ev\xffl\0garbage")
    (comm,) = parse_messages(message(PROC_EVENT_COMM, body))
    assert isinstance(comm, CommEvent) and comm.comm == "ev\\xffl"


@pytest.mark.parametrize("code", [0, 1, 3, 127, 255])
def test_exit_status_matches_the_c_library(code: int) -> None:
    status = code << 8
    event = ExitEvent(0, 0, 0, 1, 1, status, 17, 0, 0)
    assert event.exited == os.WIFEXITED(status)
    assert event.exit_status == os.WEXITSTATUS(status)


@pytest.mark.parametrize("signal_number", [1, 2, 6, 9, 11, 15, 31, 64])
@pytest.mark.parametrize("core", [0, 0x80])
def test_term_signal_matches_the_c_library(signal_number: int, core: int) -> None:
    status = signal_number | core
    event = ExitEvent(0, 0, 0, 1, 1, status, 17, 0, 0)
    assert os.WIFSIGNALED(status) and not event.exited
    assert event.term_signal == os.WTERMSIG(status)
    assert event.core_dumped == os.WCOREDUMP(status)


# -- netlink framing ------------------------------------------------------------------------


def nlmsg(nlmsg_type: int, payload: bytes, length: int | None = None) -> bytes:
    size = 16 + len(payload) if length is None else length
    return struct.pack("=IHHII", size, nlmsg_type, 0, 0, 0) + payload


def test_noop_is_skipped_error_and_overrun_are_reported() -> None:
    buf = (
        nlmsg(NLMSG_NOOP, b"")
        + nlmsg(NLMSG_ERROR, struct.pack("=i", -1) + b"\0" * 16)
        + nlmsg(NLMSG_OVERRUN, b"")
        + message(PROC_EVENT_FORK, struct.pack("=IIII", 1, 1, 2, 2))
    )
    events = parse_messages(buf)
    assert events[:2] == [NetlinkError(1), NetlinkOverrun()]
    assert isinstance(events[2], ForkEvent)


def test_unaligned_length_is_padded_to_the_next_message() -> None:
    odd = nlmsg(NLMSG_NOOP, b"\0", length=17) + b"\0\0\0"  # 17 bytes, padded to 20
    events = parse_messages(odd + message(PROC_EVENT_FORK, struct.pack("=IIII", 1, 1, 2, 2)))
    assert len(events) == 1 and isinstance(events[0], ForkEvent)


@pytest.mark.parametrize("length", [0, 1, 15])
def test_a_length_below_the_header_stops_instead_of_looping(length: int) -> None:
    buf = nlmsg(NLMSG_DONE, b"\0" * 64, length=length) * 3
    assert parse_messages(buf) == [MalformedMessage(0, f"nlmsg_len {length} below header size")]


def test_a_length_past_the_end_is_reported_once() -> None:
    good = message(PROC_EVENT_FORK, struct.pack("=IIII", 1, 1, 2, 2))
    events = parse_messages(good + nlmsg(NLMSG_DONE, b"\0" * 8, length=4096))
    assert isinstance(events[0], ForkEvent)
    assert events[1] == MalformedMessage(len(good), "nlmsg_len 4096 past end of buffer")


def test_every_truncation_of_a_real_buffer_is_skipped_not_raised() -> None:
    _, buffers = load("exit3")
    whole = b"".join(buffers)
    complete = parse_messages(whole)
    for cut in range(len(whole)):
        events = parse_messages(whole[:cut])
        good = [e for e in events if not isinstance(e, MalformedMessage)]
        assert good == complete[: len(good)]
        assert len(events) - len(good) <= 1


def test_cn_msg_length_beyond_its_message_is_malformed() -> None:
    buf = bytearray(message(PROC_EVENT_FORK, struct.pack("=IIII", 1, 1, 2, 2)))
    struct.pack_into("=H", buf, 16 + 16, 500)  # cn_msg.len
    (event,) = parse_messages(bytes(buf))
    assert isinstance(event, MalformedMessage) and "cn_msg len 500" in event.reason


def test_short_bodies_and_foreign_connectors_are_malformed() -> None:
    short_fork = message(PROC_EVENT_FORK, b"\0" * 8)
    foreign = bytearray(message(PROC_EVENT_FORK, b"\0" * 16))
    struct.pack_into("=I", foreign, 16, 99)  # cn_msg.idx
    events = parse_messages(short_fork + bytes(foreign) + nlmsg(NLMSG_DONE, b"\0" * 4))
    assert [type(e) for e in events] == [MalformedMessage] * 3


def test_listen_request_layout() -> None:
    request = listen_request(PROC_CN_MCAST_LISTEN, cookie=41, seq=9)
    assert len(request) == 16 + 20 + 4
    assert struct.unpack_from("=IHHII", request) == (40, NLMSG_DONE, 0, 9, 0)
    assert struct.unpack_from("=IIIIHHI", request, 16) == (1, 1, 9, 41, 4, 0, 1)


# -- fuzzing -----------------------------------------------------------------------------------


@settings(max_examples=2000)
@given(st.binary(max_size=512))
def test_random_bytes_never_raise_and_always_progress(buf: bytes) -> None:
    events = parse_messages(buf)
    assert len(events) <= len(buf) // 16 + 1


_real_messages = [buf for name in ("exit3", "thread", "ids", "comm") for buf in load(name)[1]]


@settings(max_examples=1000)
@given(
    st.lists(st.sampled_from(_real_messages), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 255)), max_size=8),
)
def test_real_buffers_with_flipped_bytes_never_raise(
    parts: list[bytes], flips: list[tuple[int, int]]
) -> None:
    buf = bytearray(b"".join(parts))
    for position, value in flips:
        buf[position % len(buf)] = value
    events = parse_messages(bytes(buf))
    assert len(events) <= len(buf) // 16 + 1


# -- the one-message fast path gives what the general walk gives -----------------------------

_KINDS = (
    PROC_EVENT_FORK,
    PROC_EVENT_EXIT,
    PROC_EVENT_COMM,
    PROC_EVENT_COREDUMP,
    PROC_EVENT_PTRACE,
    0,
    2,
    4,
    0x40,
    0x80,
    0x1234,
)


@st.composite
def _one_message(draw: st.DrawFn) -> bytes:
    """One connector message whose every length field may lie a little."""
    body = draw(st.binary(min_size=0, max_size=48))
    what = draw(st.sampled_from(_KINDS))
    proc_event = struct.pack("=IIQ", what, draw(st.integers(0, 7)), 123) + body
    data_len = len(proc_event) + draw(st.integers(-20, 8))
    idx, val = draw(st.sampled_from([(1, 1), (1, 2), (2, 1)]))
    cn_msg = struct.pack("=IIIIHH", idx, val, 9, 3, max(0, data_len), 0) + proc_event
    nlmsg_len = 16 + len(cn_msg) + draw(st.integers(-24, 6))
    nlmsg_type = draw(st.sampled_from([NLMSG_DONE, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP]))
    header = struct.pack("=IHHII", max(0, nlmsg_len), nlmsg_type, 0, 9, 0)
    padding = b"\0" * draw(st.integers(0, 4))
    return header + cn_msg + padding


@settings(max_examples=3000)
@given(_one_message())
def test_the_single_message_fast_path_agrees_with_the_general_walk(buf: bytes) -> None:
    view = memoryview(buf)
    assert parse_messages(buf) == _walk(view, len(view))


def test_the_fast_path_decodes_real_single_messages() -> None:
    _, buffers = load("exit3")
    for buf in buffers:
        view = memoryview(buf)
        assert parse_messages(buf) == _walk(view, len(view))
