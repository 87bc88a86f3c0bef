"""Just enough of an eBPF assembler for the exec capture's one program.

Each instruction is 8 bytes (``include/uapi/linux/bpf.h``): opcode, destination and source
registers in one byte (destination in the low nibble), a signed 16-bit offset and a signed
32-bit immediate. A 64-bit immediate load takes two slots. Jumps here name labels; `assemble`
turns them into the relative offsets the kernel wants.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_INSN = struct.Struct("<BBhi")

# registers: r0 return value, r1-r5 arguments (clobbered by calls), r6-r9 kept, r10 frame
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)

_LD, _LDX, _STX, _ALU64, _JMP = 0x00, 0x01, 0x03, 0x07, 0x05
_SIZE = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}
_MEM, _IMM = 0x60, 0x00
_K, _X = 0x00, 0x08
_ALU_OPS = {
    "add": 0x00,
    "sub": 0x10,
    "mul": 0x20,
    "or": 0x40,
    "and": 0x50,
    "rsh": 0x70,
    "mov": 0xB0,
}
_JUMP_OPS = {"ja": 0x00, "jeq": 0x10, "jgt": 0x20, "jne": 0x50, "jle": 0xB0, "jsle": 0xD0}
_CALL, _EXIT = 0x80, 0x90
_PSEUDO_MAP_FD = 1

# helper function numbers (enum bpf_func_id)
MAP_LOOKUP_ELEM = 1
KTIME_GET_NS = 5
GET_CURRENT_PID_TGID = 14
GET_CURRENT_UID_GID = 15
GET_CURRENT_COMM = 16
GET_CURRENT_CGROUP_ID = 80
PROBE_READ_USER = 112
PROBE_READ_KERNEL = 113
PROBE_READ_KERNEL_STR = 115
RINGBUF_OUTPUT = 130


@dataclass(frozen=True, slots=True)
class _Jump:
    op: int
    dst: int
    src: int | None  # None: compare with `imm`
    imm: int
    label: str


@dataclass(frozen=True, slots=True)
class _Label:
    name: str


Item = bytes | _Jump | _Label


def _insn(opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return _INSN.pack(opcode, (src << 4) | dst, off, imm)


def alu(op: str, dst: int, value: int, *, reg: bool = False) -> bytes:
    """64-bit ``dst op= value`` (a register when `reg`)."""
    if reg:
        return _insn(_ALU64 | _ALU_OPS[op] | _X, dst, value)
    return _insn(_ALU64 | _ALU_OPS[op] | _K, dst, imm=value)


def mov(dst: int, src: int) -> bytes:
    return alu("mov", dst, src, reg=True)


def load(size: int, dst: int, src: int, off: int) -> bytes:
    """``dst = *(uN *)(src + off)``."""
    return _insn(_LDX | _SIZE[size] | _MEM, dst, src, off)


def store(size: int, dst: int, off: int, src: int) -> bytes:
    """``*(uN *)(dst + off) = src``."""
    return _insn(_STX | _SIZE[size] | _MEM, dst, src, off)


def read_kernel(dst_reg: int, dst_off: int, size: int, base: int, off: int) -> list[Item]:
    """``*(dst_reg + dst_off) = *(base + off)``, `size` bytes, through bpf_probe_read_kernel
    (which zeroes the destination when the read fails; r0 is 0 on success). r1-r5 are
    clobbered; `base` must be neither r1, r2 nor r3."""
    if base in (R1, R2, R3):
        raise ValueError("read_kernel's base register is clobbered before the call")
    return [
        mov(R1, dst_reg),
        alu("add", R1, dst_off),
        alu("mov", R2, size),
        mov(R3, base),
        alu("add", R3, off),
        call(PROBE_READ_KERNEL),
    ]


def follow(reg: int, off: int, slot: int) -> list[Item]:
    """``reg = *(u64 *)(reg + off)`` through a probe read into the stack at `slot` (`reg` is
    r6-r9, which calls keep)."""
    return [*read_kernel(R10, slot, 8, reg, off), load(8, reg, R10, slot)]


def list_entry(
    cursor: int, head_slot: int, entry: int, node_off: int, whole: str, cut: str
) -> list[Item]:
    """One step of a walk along a kernel list: to `whole` when `cursor` (r6-r9) is back at the
    list's head (whose address is at `head_slot` on the stack), to `cut` when it is NULL; else
    `entry` = the element holding `cursor`, whose list node is `node_off` into it
    (container_of). r1 is clobbered."""
    return [
        load(8, R1, R10, head_slot),
        jump("jeq", cursor, R1, whole, reg=True),
        jump("jeq", cursor, 0, cut),
        mov(entry, cursor),
        alu("sub", entry, node_off),
    ]


def scratch_lookup(map_fd: int, into: int, missing: str) -> list[Item]:
    """``into = &scratch[0]`` of a one-entry array map (key 0 at r10-4); jump to `missing` when
    the lookup fails. r0-r5 are clobbered."""
    return [
        alu("mov", R1, 0),
        store(4, R10, -4, R1),
        mov(R2, R10),
        alu("add", R2, -4),
        load_map_fd(R1, map_fd),
        call(MAP_LOOKUP_ELEM),
        jump("jeq", R0, 0, missing),
        mov(into, R0),
    ]


def load_map_fd(dst: int, map_fd: int) -> bytes:
    """``dst = map`` (a 64-bit immediate the kernel rewrites to the map's address)."""
    return _insn(_LD | _SIZE[8] | _IMM, dst, _PSEUDO_MAP_FD, imm=map_fd) + _insn(0)


def call(helper: int) -> bytes:
    return _insn(_JMP | _CALL, imm=helper)


def exit_() -> bytes:
    return _insn(_JMP | _EXIT)


def jump(op: str, dst: int, value: int, label: str, *, reg: bool = False) -> _Jump:
    """``if dst op value goto label`` (`value` a register when `reg`); "ja" jumps always."""
    return _Jump(_JUMP_OPS[op], dst, value if reg else None, 0 if reg else value, label)


def label(name: str) -> _Label:
    return _Label(name)


def assemble(items: list[Item]) -> bytes:
    """Resolve labels and return the program's bytes."""
    slots: dict[str, int] = {}
    slot = 0
    for item in items:
        if isinstance(item, _Label):
            if item.name in slots:
                raise ValueError(f"label {item.name} defined twice")
            slots[item.name] = slot
        else:
            slot += 1 if isinstance(item, _Jump) else len(item) // 8
    code = bytearray()
    for item in items:
        if isinstance(item, _Label):
            continue
        if isinstance(item, bytes):
            code += item
            continue
        if item.label not in slots:
            raise ValueError(f"jump to undefined label {item.label}")
        offset = slots[item.label] - (len(code) // 8 + 1)
        source = _X if item.src is not None else _K
        code += _insn(_JMP | item.op | source, item.dst, item.src or 0, offset, item.imm)
    return bytes(code)
