"""The classic BPF socket filter that keeps the process connector's reader asleep for events it
would only discard.

A NETLINK_CONNECTOR socket subscribed to process events receives one datagram per fork, exec,
exit, id change, rename ... of every task on the host, threads included. The event source uses
exec, exit and fork of *processes* only; a busy multi-threaded service makes most datagrams
thread forks and thread exits. The kernel runs a filter attached with SO_ATTACH_FILTER on each
multicast before the datagram is queued, so what it drops never wakes the reader and never fills
the receive buffer, on any kernel (the connector's own event mask needs Linux 6.6 and cannot
tell a thread from a process).

The program looks at the first netlink message of a datagram (the kernel sends each event in a
datagram of its own) and keeps:

- every message that is not a connector event (NLMSG_ERROR, NLMSG_OVERRUN, ...): the socket
  code relies on them;
- every message too short to hold what the filter would read: the parser counts it malformed;
- PROC_EVENT_NONE (the acknowledgement of a listen request) and PROC_EVENT_EXEC;
- PROC_EVENT_FORK when the child is a process (child_pid == child_tgid): the event source
  learns the start time of a child that exits without exec'ing from it;
- PROC_EVENT_EXIT, PROC_EVENT_UID, PROC_EVENT_GID and PROC_EVENT_COMM when the task is a
  process (pid == tgid: the thread group's leader): a process's exit, id change or rename.
  glibc's setuid() changes every thread's ids, one event each, and programs name their
  threads: only the leader's event says something about the process;
- PROC_EVENT_PTRACE when a tracer attaches (tracer_pid != 0) to a process's leader.

It drops thread forks, thread exits, thread renames and id changes, ptrace detaches and every
other event type (sid, coredump, and types newer kernels add): the event source does not use
them.

The payload is in host byte order, while BPF_ABS loads read big-endian; constants are therefore
compared in their "wire" form (`_wire32`), and pid/tgid are compared with each other, so the
program is right on either endianness.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

from daemoneye.collector.proc_events import (
    NLMSG_DONE,
    PROC_EVENT_COMM,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_GID,
    PROC_EVENT_NONE,
    PROC_EVENT_PTRACE,
    PROC_EVENT_UID,
)

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
BPF_LD = 0x00
BPF_JMP = 0x05
BPF_RET = 0x06
BPF_MISC = 0x07
BPF_W = 0x00
BPF_H = 0x08
BPF_ABS = 0x20
BPF_LEN = 0x80
BPF_JEQ = 0x10
BPF_JGE = 0x30
BPF_K = 0x00
BPF_X = 0x08
BPF_TAX = 0x00

KEEP = 0xFFFF_FFFF  # a socket filter returns how many bytes of the datagram to keep: all
DROP = 0

# Offsets in the datagram: nlmsghdr (16) + cn_msg (20) + proc_event (what, cpu, timestamp).
NLMSG_TYPE_AT = 4
WHAT_AT = 36
EVENT_DATA_AT = 52
FORK_CHILD_PID_AT = EVENT_DATA_AT + 8  # parent_pid, parent_tgid, child_pid, child_tgid
FORK_CHILD_TGID_AT = EVENT_DATA_AT + 12
# exit, uid, gid, comm and ptrace all start with the task's process_pid, process_tgid
TASK_PID_AT = EVENT_DATA_AT
TASK_TGID_AT = EVENT_DATA_AT + 4
PTRACE_TRACER_PID_AT = EVENT_DATA_AT + 8  # process_pid, process_tgid, tracer_pid, tracer_tgid


@dataclass(frozen=True, slots=True)
class Instruction:
    """One `struct sock_filter`: opcode, jump offsets if true / false, constant."""

    code: int
    jt: int
    jf: int
    k: int

    def pack(self) -> bytes:
        return _SOCK_FILTER.pack(self.code, self.jt, self.jf, self.k)


_SOCK_FILTER = struct.Struct("=HBBI")


def _wire32(value: int) -> int:
    """What a big-endian BPF_W load reads from `value` stored as a host-order u32."""
    return int.from_bytes(value.to_bytes(4, sys.byteorder), "big")


def _wire16(value: int) -> int:
    """What a big-endian BPF_H load reads from `value` stored as a host-order u16."""
    return int.from_bytes(value.to_bytes(2, sys.byteorder), "big")


def process_events_filter() -> tuple[Instruction, ...]:
    """The filter program described in the module docstring, assembled from labels."""
    return _assemble(
        [
            _ld_len(),
            _jge(WHAT_AT + 4, then="check_type", otherwise="keep"),  # room for `what`?
            "check_type",
            _ld(BPF_H, NLMSG_TYPE_AT),
            _jeq(_wire16(NLMSG_DONE), then="check_what", otherwise="keep"),  # errors, overruns
            "check_what",
            _ld(BPF_W, WHAT_AT),
            _jeq(_wire32(PROC_EVENT_EXEC), then="keep", otherwise="not_exec"),
            "not_exec",
            _jeq(_wire32(PROC_EVENT_NONE), then="keep", otherwise="not_ack"),  # listen acks
            "not_ack",
            _jeq(_wire32(PROC_EVENT_FORK), then="fork", otherwise="not_fork"),
            "not_fork",
            _jeq(_wire32(PROC_EVENT_EXIT), then="leader", otherwise="not_exit"),
            "not_exit",
            _jeq(_wire32(PROC_EVENT_UID), then="leader", otherwise="not_uid"),
            "not_uid",
            _jeq(_wire32(PROC_EVENT_GID), then="leader", otherwise="not_gid"),
            "not_gid",
            _jeq(_wire32(PROC_EVENT_COMM), then="leader", otherwise="not_comm"),
            "not_comm",
            _jeq(_wire32(PROC_EVENT_PTRACE), then="ptrace", otherwise="drop"),  # sid, coredump
            "fork",
            _ld_len(),
            _jge(FORK_CHILD_TGID_AT + 4, then="fork_ids", otherwise="keep"),
            "fork_ids",
            _ld(BPF_W, FORK_CHILD_PID_AT),
            _tax(),
            _ld(BPF_W, FORK_CHILD_TGID_AT),
            _jeq_x(then="keep", otherwise="drop"),  # child_tgid == child_pid: a process
            "ptrace",
            _ld_len(),
            _jge(PTRACE_TRACER_PID_AT + 4, then="tracer", otherwise="keep"),
            "tracer",
            _ld(BPF_W, PTRACE_TRACER_PID_AT),
            _jeq(0, then="drop", otherwise="leader"),  # a detach: no tracer
            "leader",
            _ld_len(),
            _jge(TASK_TGID_AT + 4, then="task_ids", otherwise="keep"),
            "task_ids",
            _ld(BPF_W, TASK_PID_AT),
            _tax(),
            _ld(BPF_W, TASK_TGID_AT),
            _jeq_x(then="keep", otherwise="drop"),  # process_tgid == process_pid: a process
            "drop",
            _ret(DROP),
            "keep",
            _ret(KEEP),
        ]
    )


def pack_program(program: tuple[Instruction, ...]) -> bytes:
    """The program as the array of `struct sock_filter` that SO_ATTACH_FILTER points to."""
    return b"".join(instruction.pack() for instruction in program)


# -- a label assembler: jumps name their targets, offsets are computed once -----------------


@dataclass(frozen=True, slots=True)
class _Jump:
    code: int
    k: int
    then: str
    otherwise: str


_Line = Instruction | _Jump | str  # a str is a label for the next instruction


def _ld_len() -> Instruction:
    return Instruction(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0)


def _ld(size: int, offset: int) -> Instruction:
    return Instruction(BPF_LD | size | BPF_ABS, 0, 0, offset)


def _tax() -> Instruction:
    return Instruction(BPF_MISC | BPF_TAX, 0, 0, 0)


def _ret(k: int) -> Instruction:
    return Instruction(BPF_RET | BPF_K, 0, 0, k)


def _jeq(k: int, *, then: str, otherwise: str) -> _Jump:
    return _Jump(BPF_JMP | BPF_JEQ | BPF_K, k, then, otherwise)


def _jge(k: int, *, then: str, otherwise: str) -> _Jump:
    return _Jump(BPF_JMP | BPF_JGE | BPF_K, k, then, otherwise)


def _jeq_x(*, then: str, otherwise: str) -> _Jump:
    return _Jump(BPF_JMP | BPF_JEQ | BPF_X, 0, then, otherwise)


def _assemble(lines: list[_Line]) -> tuple[Instruction, ...]:
    """Resolve labels to the forward offsets classic BPF jumps take (0-255, forward only)."""
    labels: dict[str, int] = {}
    code: list[Instruction | _Jump] = []
    for line in lines:
        if isinstance(line, str):
            labels[line] = len(code)
        else:
            code.append(line)
    program: list[Instruction] = []
    for index, item in enumerate(code):
        if isinstance(item, Instruction):
            program.append(item)
            continue
        offsets = [labels[item.then] - index - 1, labels[item.otherwise] - index - 1]
        if not all(0 <= offset <= 255 for offset in offsets):
            raise ValueError(f"instruction {index}: jump out of range {offsets}")
        program.append(Instruction(item.code, offsets[0], offsets[1], item.k))
    return tuple(program)
