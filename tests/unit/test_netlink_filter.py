"""The connector's classic BPF socket filter, run by a small interpreter over real datagrams
captured from the kernel (tests/unit/samples/netlink) and over synthesized ones.

The interpreter follows the kernel's semantics for the opcodes it knows (BPF_ABS loads are
big-endian; a load past the end of the packet ends the program with 0, i.e. drop) and refuses
any other opcode, so the program cannot quietly grow an instruction this test does not model.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemoneye.collector.connector_filter import (
    BPF_ABS,
    BPF_H,
    BPF_JEQ,
    BPF_JGE,
    BPF_JMP,
    BPF_K,
    BPF_LD,
    BPF_LEN,
    BPF_MISC,
    BPF_RET,
    BPF_TAX,
    BPF_W,
    BPF_X,
    Instruction,
    pack_program,
    process_events_filter,
)
from daemoneye.collector.proc_events import (
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_OVERRUN,
    PROC_EVENT_COMM,
    PROC_EVENT_COREDUMP,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_GID,
    PROC_EVENT_NONE,
    PROC_EVENT_PTRACE,
    PROC_EVENT_SID,
    PROC_EVENT_UID,
    AckEvent,
    CommEvent,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    GidEvent,
    UidEvent,
    parse_messages,
)

SAMPLES = Path(__file__).parent / "samples" / "netlink"


def run_filter(program: tuple[Instruction, ...], packet: bytes) -> int:
    """What the kernel's classic BPF interpreter returns for `packet`: bytes kept, 0 = drop."""
    a = x = 0
    pc = 0
    while True:
        assert 0 <= pc < len(program), f"fell off the program at {pc}"
        ins = program[pc]
        pc += 1
        if ins.code == BPF_LD | BPF_W | BPF_LEN:
            a = len(packet)
        elif ins.code in (BPF_LD | BPF_W | BPF_ABS, BPF_LD | BPF_H | BPF_ABS):
            size = 4 if ins.code == BPF_LD | BPF_W | BPF_ABS else 2
            if ins.k + size > len(packet):
                return 0
            a = int.from_bytes(packet[ins.k : ins.k + size], "big")
        elif ins.code == BPF_MISC | BPF_TAX:
            x = a
        elif ins.code in (
            BPF_JMP | BPF_JEQ | BPF_K,
            BPF_JMP | BPF_JGE | BPF_K,
            BPF_JMP | BPF_JEQ | BPF_X,
        ):
            operand = x if ins.code & BPF_X else ins.k
            taken = a == operand if ins.code & 0xF0 == BPF_JEQ else a >= operand
            pc += ins.jt if taken else ins.jf
        elif ins.code == BPF_RET | BPF_K:
            return ins.k
        else:
            raise AssertionError(f"opcode {ins.code:#x} is not modelled by this test")


PROGRAM = process_events_filter()


def kept(packet: bytes) -> bool:
    return run_filter(PROGRAM, packet) != 0


def reference(packet: bytes) -> bool:
    """The filter's contract, stated on host-order fields without any BPF byte-order tricks."""
    if len(packet) < 40 or struct.unpack_from("=H", packet, 4)[0] != NLMSG_DONE:
        return True
    what = struct.unpack_from("=I", packet, 36)[0]
    if what in (PROC_EVENT_EXEC, PROC_EVENT_NONE):
        return True
    if what == PROC_EVENT_FORK:
        return len(packet) < 68 or packet[60:64] == packet[64:68]
    if what == PROC_EVENT_PTRACE:
        if len(packet) < 64:
            return True
        if packet[60:64] == b"\0\0\0\0":  # a detach
            return False
    if what in (
        PROC_EVENT_EXIT,
        PROC_EVENT_UID,
        PROC_EVENT_GID,
        PROC_EVENT_COMM,
        PROC_EVENT_PTRACE,
    ):
        return len(packet) < 60 or packet[52:56] == packet[56:60]
    return False


def datagram(what: int, body: bytes, *, nlmsg_type: int = NLMSG_DONE) -> bytes:
    proc_event = struct.pack("=IIQ", what, 0, 123) + body
    cn_msg = struct.pack("=IIIIHH", 1, 1, 7, 0, len(proc_event), 0) + proc_event
    return struct.pack("=IHHII", 16 + len(cn_msg), nlmsg_type, 0, 0, 0) + cn_msg


def fork(child_pid: int, child_tgid: int) -> bytes:
    return datagram(PROC_EVENT_FORK, struct.pack("=IIII", 10, 10, child_pid, child_tgid))


def exit_(pid: int, tgid: int) -> bytes:
    return datagram(PROC_EVENT_EXIT, struct.pack("=IIIiII", pid, tgid, 0, 17, 1, 1))


def test_the_program_is_what_the_kernel_accepts() -> None:
    assert 0 < len(PROGRAM) <= 4096  # BPF_MAXINSNS
    assert len(pack_program(PROGRAM)) == 8 * len(PROGRAM)  # struct sock_filter is 8 bytes
    assert PROGRAM[-1].code == BPF_RET | BPF_K  # every path ends in a return
    for index, ins in enumerate(PROGRAM):
        if ins.code & 0x07 == BPF_JMP:
            assert index + 1 + max(ins.jt, ins.jf) < len(PROGRAM)


def test_a_thread_fork_and_exit_are_dropped_a_process_fork_and_exit_kept() -> None:
    assert not kept(fork(43, 42)) and not kept(exit_(43, 42))
    assert kept(fork(42, 42)) and kept(exit_(42, 42))


def test_exec_and_the_listen_acknowledgement_are_kept() -> None:
    assert kept(datagram(PROC_EVENT_EXEC, struct.pack("=II", 42, 42)))
    assert kept(datagram(PROC_EVENT_NONE, struct.pack("=I", 0) + b"\0" * 20))


@pytest.mark.parametrize(
    "what",
    [PROC_EVENT_SID, PROC_EVENT_COREDUMP, 0x00000400],  # and a type a future kernel may add
)
def test_event_types_the_source_does_not_use_are_dropped(what: int) -> None:
    assert not kept(datagram(what, b"\0" * 24))


def task_event(what: int, pid: int, tgid: int, rest: bytes = b"\0" * 16) -> bytes:
    return datagram(what, struct.pack("=II", pid, tgid) + rest)


@pytest.mark.parametrize("what", [PROC_EVENT_UID, PROC_EVENT_GID, PROC_EVENT_COMM])
def test_a_process_id_change_or_rename_is_kept_a_threads_dropped(what: int) -> None:
    """glibc's setuid() changes every thread's ids (one event each) and programs name their
    threads: only the thread group leader's event is about the process."""
    assert kept(task_event(what, 42, 42))
    assert not kept(task_event(what, 43, 42))


def test_a_ptrace_attach_to_a_process_is_kept_a_detach_or_a_thread_attach_dropped() -> None:
    def ptrace(pid: int, tgid: int, tracer: int) -> bytes:
        return task_event(PROC_EVENT_PTRACE, pid, tgid, struct.pack("=II", tracer, tracer))

    assert kept(ptrace(42, 42, 7))
    assert not kept(ptrace(42, 42, 0))  # detach
    assert not kept(ptrace(43, 42, 7))  # gdb attaches to every thread: one event is enough


def test_netlink_errors_overruns_and_short_datagrams_are_kept() -> None:
    error = struct.pack("=IHHII", 36, NLMSG_ERROR, 0, 0, 0) + struct.pack("=i", -105) + b"\0" * 16
    assert kept(error) and parse_messages(error)
    assert kept(struct.pack("=IHHII", 16, NLMSG_OVERRUN, 0, 0, 0))
    assert kept(b"\0" * 12)  # the parser, not the filter, reports garbage
    assert kept(fork(43, 42)[:64])  # too short to compare the ids: the parser decides
    assert kept(exit_(43, 42)[:56])
    assert kept(task_event(PROC_EVENT_PTRACE, 43, 42)[:60])


def test_the_constants_are_compared_in_host_byte_order() -> None:
    """The same event with its fields byte-swapped (what a wrong-endian filter would match)
    must not pass as an exec."""
    swapped = bytearray(datagram(PROC_EVENT_UID, b"\0" * 16))
    swapped[36:40] = PROC_EVENT_EXEC.to_bytes(4, "big" if sys.byteorder == "little" else "little")
    assert not kept(bytes(swapped))


def captured() -> list[tuple[str, bytes]]:
    packets = []
    for path in sorted(SAMPLES.glob("*.hex")):
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                packets.append((path.stem, bytes.fromhex(line)))
    return packets


def test_real_captured_datagrams_follow_the_contract() -> None:
    packets = captured()
    assert len(packets) >= 20
    verdicts: dict[str, int] = {"thread": 0, "process": 0, "exec": 0, "ack": 0, "other": 0}
    for name, packet in packets:
        assert kept(packet) == reference(packet), name
        (message,) = parse_messages(packet)
        if isinstance(message, ForkEvent | ExitEvent) and message.is_thread:
            assert not kept(packet), name
            verdicts["thread"] += 1
        elif isinstance(message, ForkEvent | ExitEvent):
            assert kept(packet), name
            verdicts["process"] += 1
        elif isinstance(message, ExecEvent):
            assert kept(packet), name
            verdicts["exec"] += 1
        elif isinstance(message, AckEvent):
            assert kept(packet), name
            verdicts["ack"] += 1
        elif isinstance(message, UidEvent | GidEvent | CommEvent) and message.pid == message.tgid:
            assert kept(packet), name
            verdicts["process"] += 1
        else:  # sid, a thread's comm, uid or gid
            assert not kept(packet), name
            verdicts["other"] += 1
    assert all(verdicts.values()), verdicts  # every kind of verdict was exercised


@given(st.binary(max_size=96))
def test_any_bytes_follow_the_contract(packet: bytes) -> None:
    assert kept(packet) == reference(packet)


@given(
    st.sampled_from(
        [
            PROC_EVENT_FORK,
            PROC_EVENT_EXIT,
            PROC_EVENT_EXEC,
            PROC_EVENT_NONE,
            PROC_EVENT_UID,
            PROC_EVENT_GID,
            PROC_EVENT_COMM,
            PROC_EVENT_PTRACE,
            PROC_EVENT_SID,
        ]
    ),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
def test_any_event_follows_the_contract(what: int, a: int, b: int, c: int, d: int) -> None:
    packet = datagram(what, struct.pack("=IIIIII", a, b, c, d, 0, 0))
    assert kept(packet) == reference(packet)
