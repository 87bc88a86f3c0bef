"""The seccomp filter both processes install once started: bpf(2) refused, nothing else."""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from daemoneye.procmond.seccomp import deny_bpf, deny_bpf_program
from tests.forked import in_child


def test_the_program_refuses_the_native_and_x32_numbers_and_allows_the_rest() -> None:
    program = deny_bpf_program("x86_64")
    assert program is not None
    lines = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    assert lines[1][3] == 0xC000003E  # AUDIT_ARCH_X86_64
    assert lines[1][2] + 2 == len(lines) - 2  # another ABI (i386's int 0x80): refused
    assert {line[3] for line in lines[3:5]} == {321, 321 | 0x40000000}
    assert lines[-2] == (0x06, 0, 0, 0x00050001)  # SECCOMP_RET_ERRNO | EPERM
    assert lines[-1] == (0x06, 0, 0, 0x7FFF0000)  # SECCOMP_RET_ALLOW
    assert deny_bpf_program("vax") is None


def test_allowed_commands_pass_by_the_first_argument_and_only_they() -> None:
    program = deny_bpf_program("x86_64", allowed=(33,))
    assert program is not None
    lines = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    allow, refuse = len(lines) - 1, len(lines) - 2

    def goes_to(at: int, taken: bool) -> int:
        _op, jt, jf, _k = lines[at]
        return int(at + 1 + (jt if taken else jf))

    assert goes_to(1, taken=False) == refuse  # another ABI
    assert goes_to(3, taken=True) == 5  # bpf(2): look at the command
    assert goes_to(4, taken=True) == refuse  # x32's bpf(2), whatever the command
    assert goes_to(4, taken=False) == allow  # any other call
    assert lines[5] == (0x20, 0, 0, 16 if sys.byteorder == "little" else 20)  # args[0]
    assert lines[6][3] == 33 and goes_to(6, taken=True) == allow
    assert goes_to(6, taken=False) == refuse


@pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the bpf(2) number used here is x86-64's"
)
def test_after_it_bpf_fails_with_eperm_even_for_root_and_other_calls_still_work() -> None:
    def child() -> dict[str, object]:
        libc = ctypes.CDLL(None, use_errno=True)
        attr = ctypes.create_string_buffer(128)
        before = libc.syscall(321, 0, attr, 128)  # BPF_MAP_CREATE with type 0: EINVAL
        before_errno = ctypes.get_errno()
        libc.prctl(38, 1, 0, 0, 0)  # no_new_privs, as the drops set it
        reason = deny_bpf()
        after = libc.syscall(321, 0, attr, 128)
        with open("/proc/self/status") as file:
            seccomp = [line for line in file if line.startswith("Seccomp:")]
        return {
            "reason": reason,
            "before": (before, before_errno),
            "after": (after, ctypes.get_errno()),
            "seccomp": seccomp[0].split()[1],
            "pid": os.getpid() > 0,
        }

    found = in_child(child)
    assert found["reason"] is None
    assert found["before"] == [-1, 22]  # EINVAL: a map of no type, not a refusal
    assert found["after"] == [-1, 1]  # EPERM
    assert found["seccomp"] == "2"  # filter mode
    assert found["pid"]


@pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the bpf(2) number used here is x86-64's"
)
def test_an_allowed_command_reaches_the_kernel_and_another_is_refused() -> None:
    def child() -> dict[str, object]:
        libc = ctypes.CDLL(None, use_errno=True)
        attr = ctypes.create_string_buffer(128)
        libc.prctl(38, 1, 0, 0, 0)
        reason = deny_bpf(allowed=(33,))
        iterate = libc.syscall(321, 33, attr, 128)  # BPF_ITER_CREATE on fd 0: not a link
        iterate_errno = ctypes.get_errno()
        create = libc.syscall(321, 0, attr, 128)
        return {
            "reason": reason,
            "iterate": iterate_errno,
            "create": ctypes.get_errno(),
            "results": (iterate, create),
        }

    found = in_child(child)
    assert found["reason"] is None
    assert found["iterate"] != 1  # the kernel's own answer (EINVAL/EBADF), not seccomp's EPERM
    assert found["create"] == 1


_I386_BPF = r"""
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
/* bpf(2) through the i386 entry: int 0x80, number 357, its attr below 4 GiB */
long bpf_i386(long cmd, const void *attr, unsigned size) {
    void *low = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
                     -1, 0);
    if (low == MAP_FAILED) return -9999;
    memcpy(low, attr, size);
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(357L), "b"(cmd),
                     "c"((long)(uintptr_t)low), "d"((long)size) : "memory");
    munmap(low, 4096);
    return ret;
}
"""


@pytest.mark.skipif(
    platform.machine() != "x86_64" or shutil.which("gcc") is None,
    reason="the i386 entry is x86-64's, and the test builds its caller with gcc",
)
def test_bpf_through_the_i386_entry_is_refused_too(tmp_path: Path) -> None:
    """A compromised process could reach bpf(2) through `int 0x80`, where the native number
    means nothing: every call through another ABI is refused."""
    source, library = tmp_path / "i386bpf.c", tmp_path / "i386bpf.so"
    source.write_text(_I386_BPF)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", library, source], check=True)

    def child() -> dict[str, object]:
        lib = ctypes.CDLL(str(library))
        lib.bpf_i386.restype = ctypes.c_long
        attr = ctypes.create_string_buffer(128)
        before = lib.bpf_i386(0, attr, 128)  # a map of no type: EINVAL, if i386 is emulated
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(38, 1, 0, 0, 0)
        reason = deny_bpf(allowed=(33,))
        return {"reason": reason, "before": before, "after": lib.bpf_i386(0, attr, 128)}

    found = in_child(child)
    if found["before"] == -38:
        pytest.skip("this kernel has no i386 emulation (ENOSYS)")
    assert found["reason"] is None
    assert found["before"] == -22  # reached the kernel's bpf(2)
    assert found["after"] == -1  # EPERM, from the filter
