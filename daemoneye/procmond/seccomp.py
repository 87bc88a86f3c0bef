"""A seccomp filter that refuses bpf(2), installed by both processes once they no longer need
it: the agent at its drop, procmond once the exec capture is loaded. procmond keeps one
command: BPF_ITER_CREATE, which starts a pass of the task iterator it loaded
(collector/task_iter.py) and can load, attach or change nothing.

Neither process calls bpf(2) after that, and the systemd unit must allow the call to the whole
service for procmond's start. With the filter, a compromised agent or procmond cannot reach
the kernel's BPF verifier even where unprivileged BPF is enabled
(`kernel.unprivileged_bpf_disabled` = 0). The call fails with EPERM; every other call is
allowed. Filters are inherited across fork and exec and cannot be removed: the launcher is
forked before the agent installs its own, so the procmonds it starts can still load the
capture.

The program (classic BPF over `struct seccomp_data`, whose fields are read in host byte order):
refuse every call made through another ABI (i386 through `int 0x80` on x86-64: its numbers
mean other calls, neither process makes such calls, and a compromised one could reach bpf(2)
that way); refuse the native bpf(2) number but for the allowed commands, and on x86-64 its x32
number whatever the command; allow everything else.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys
from collections.abc import Iterable

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_EPERM = 1
_X32_SYSCALL_BIT = 0x40000000

# machine -> (AUDIT_ARCH_*, bpf(2) number)
_ARCHES = {
    "x86_64": (0xC000003E, 321),
    "aarch64": (0xC00000B7, 280),
    "riscv64": (0xC00000F3, 280),
    "ppc64le": (0xC0000015, 361),
    "s390x": (0x80000016, 351),
}

# classic BPF opcodes: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06
_NR_AT, _ARCH_AT = 0, 4  # offsets in struct seccomp_data
_ARG0_AT = 16 if sys.byteorder == "little" else 20  # the low word of args[0]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def deny_bpf_program(machine: str, allowed: Iterable[int] = ()) -> bytes | None:
    """The filter's instructions for `machine`, or None when its numbers are not known here.
    bpf(2) commands in `allowed` (its first argument) pass."""
    known = _ARCHES.get(machine)
    if known is None:
        return None
    arch, bpf_nr = known
    x32_nr = bpf_nr | _X32_SYSCALL_BIT if machine == "x86_64" else bpf_nr
    commands = sorted(set(allowed))
    check = 5  # where the command is loaded, when some are allowed
    refuse = check + (len(commands) + 1 if commands else 0)
    allow = refuse + 1
    judge = check if commands else refuse
    lines = [
        (_LD_W_ABS, 0, 0, _ARCH_AT),
        (_JEQ_K, 0, refuse - 2, arch),  # another ABI (i386 through int 0x80): refused
        (_LD_W_ABS, 0, 0, _NR_AT),
        (_JEQ_K, judge - 4, 0, bpf_nr),
        (_JEQ_K, refuse - 5, allow - 5, x32_nr),  # x32's bpf(2): refused whatever the command
    ]
    if commands:
        lines.append((_LD_W_ABS, 0, 0, _ARG0_AT))
        for index, command in enumerate(commands):
            at = check + 1 + index
            lines.append((_JEQ_K, allow - at - 1, 0, command))
    lines += [
        (_RET_K, 0, 0, _SECCOMP_RET_ERRNO | _EPERM),
        (_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    return b"".join(struct.pack("=HBBI", *line) for line in lines)


def deny_bpf(allowed: Iterable[int] = ()) -> str | None:
    """Install the filter on the calling thread (and the threads it starts later), letting the
    bpf(2) commands in `allowed` pass. Needs no_new_privs (both drops set it) or
    CAP_SYS_ADMIN. Returns None when installed, else why not (an unknown architecture, a
    kernel without seccomp): the caller logs it and goes on, since this only narrows what a
    compromised process could reach."""
    machine = platform.machine()
    program = deny_bpf_program(machine, allowed)
    if program is None:
        return f"no bpf(2) number known for {machine}"
    code = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(code))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        return f"the kernel refused the seccomp filter: {os.strerror(ctypes.get_errno())}"
    return None
