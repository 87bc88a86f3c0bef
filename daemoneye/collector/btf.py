"""The running kernel's own description of its structures (BTF, /sys/kernel/btf/vmlinux), read
for the few member offsets the exec capture needs.

A structure's layout differs between kernel builds (config options, struct randomisation), so
an offset is never assumed: it is looked up in the BTF the running kernel ships. Members inside
anonymous structs and unions (``mm_struct``'s ``arg_start`` sits in one since 6.2) are found
by descending into them. Only the type section is indexed; names are compared as bytes.

Format: ``include/uapi/linux/btf.h`` — a header, then the type records (12 bytes each plus a
kind-specific tail), then the string section the records point into.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Callable
from dataclasses import dataclass

VMLINUX = "/sys/kernel/btf/vmlinux"

_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")  # name_off, info, size-or-type
_MEMBER = struct.Struct("<III")  # name_off, type, offset

_KIND_STRUCT = 4
_KIND_FUNC = 12
_KIND_UNION = 5
_KIND_TYPEDEF = 8
_KIND_VOLATILE = 9
_KIND_CONST = 10
_KIND_RESTRICT = 11
_KIND_TYPE_TAG = 18
_QUALIFIERS = frozenset(
    {_KIND_TYPEDEF, _KIND_VOLATILE, _KIND_CONST, _KIND_RESTRICT, _KIND_TYPE_TAG}
)
# bytes after the 12-byte record: fixed, and per vlen entry (kinds not listed have neither)
_FIXED_TAIL = {1: 4, 3: 12, 14: 4, 17: 4}  # INT, ARRAY, VAR, DECL_TAG
_ENTRY_TAIL = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # STRUCT, UNION, ENUM, FUNC_PROTO, …


class BtfError(Exception):
    """The kernel's BTF is missing, malformed, or lacks a structure or member we need."""


@dataclass(frozen=True, slots=True)
class _Type:
    kind: int
    name: bytes
    size_or_type: int
    members: tuple[tuple[bytes, int, int], ...]  # (name, type id, bit offset)


class KernelTypes:
    """Index of a BTF blob: type id → where its record starts."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < _HEADER.size:
            raise BtfError("BTF blob shorter than its header")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = (
            _HEADER.unpack_from(blob)
        )
        if magic != _MAGIC:
            raise BtfError(f"not BTF (magic {magic:#x})")
        types_start = hdr_len + type_off
        strings_start = hdr_len + str_off
        if types_start + type_len > len(blob) or strings_start + str_len > len(blob):
            raise BtfError("BTF sections run past the end of the blob")
        # No copies of the 5 MB blob: the types are a view into it, the names are found at
        # offsets from the string section's start, and the index is an array of u32.
        self._blob = blob
        self._types = memoryview(blob)[types_start : types_start + type_len]
        self._strings_at = strings_start
        self._offsets = self._index()

    @classmethod
    def load(cls, path: str = VMLINUX) -> KernelTypes:
        try:
            with open(path, "rb") as file:
                return cls(file.read())
        except OSError as error:
            raise BtfError(f"cannot read {path}: {error.strerror}") from error

    def _index(self) -> array.array[int]:
        offsets = array.array("I", [0])  # type id 0 is void
        view, unpack, position, end = self._types, _TYPE.unpack_from, 0, len(self._types)
        fixed, entry = _FIXED_TAIL, _ENTRY_TAIL
        while position < end:
            offsets.append(position)
            _name, info, _size = unpack(view, position)
            kind = (info >> 24) & 0x1F
            position += 12 + fixed.get(kind, 0) + entry.get(kind, 0) * (info & 0xFFFF)
        if position != end:
            raise BtfError("BTF type section ends inside a record")
        return offsets

    def _name(self, offset: int) -> bytes:
        start = self._strings_at + offset
        end = self._blob.find(b"\0", start)
        return self._blob[start:end] if end >= 0 else b""

    def _type(self, type_id: int) -> _Type:
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"BTF type id {type_id} out of range")
        position = self._offsets[type_id]
        name_off, info, size_or_type = _TYPE.unpack_from(self._types, position)
        kind = (info >> 24) & 0x1F
        members: tuple[tuple[bytes, int, int], ...] = ()
        if kind in (_KIND_STRUCT, _KIND_UNION):
            bitfields = bool(info >> 31)
            members = tuple(
                (self._name(m_name), m_type, m_offset & 0xFFFFFF if bitfields else m_offset)
                for m_name, m_type, m_offset in _MEMBER.iter_unpack(
                    self._types[position + 12 : position + 12 + 12 * (info & 0xFFFF)]
                )
            )
        return _Type(kind, self._name(name_off), size_or_type, members)

    def _struct_id(self, name: str) -> int:
        found = self._find_id(
            name, lambda info: (info >> 24) & 0x1F == _KIND_STRUCT and info & 0xFFFF
        )
        if found is None:
            raise BtfError(f"the kernel's BTF has no struct {name}")
        return found

    def function_id(self, name: str) -> int:
        """The BTF type id of the kernel function `name` (what a tracing program attaches to)."""
        found = self._find_id(name, lambda info: (info >> 24) & 0x1F == _KIND_FUNC)
        if found is None:
            raise BtfError(f"the kernel's BTF has no function {name}")
        return found

    def _find_id(self, name: str, kind: Callable[[int], object]) -> int | None:
        wanted = name.encode() + b"\0"
        unpack, view = _TYPE.unpack_from, self._types
        for type_id in range(1, len(self._offsets)):
            name_off, info, _size = unpack(view, self._offsets[type_id])
            if kind(info) and self._blob.startswith(wanted, self._strings_at + name_off):
                return type_id
        return None

    def _resolve(self, type_id: int) -> _Type:
        found = self._type(type_id)
        while found.kind in _QUALIFIERS:
            found = self._type(found.size_or_type)
        return found

    def _find(self, record: _Type, member: bytes) -> int | None:
        """Bit offset of `member` in `record`, looking inside anonymous members."""
        for name, type_id, bit_offset in record.members:
            if name == member:
                return bit_offset
            if not name:
                inner = self._resolve(type_id)
                if inner.kind in (_KIND_STRUCT, _KIND_UNION):
                    found = self._find(inner, member)
                    if found is not None:
                        return bit_offset + found
        return None

    def size(self, struct_name: str) -> int:
        """sizeof(struct `struct_name`) in this kernel."""
        return self._type(self._struct_id(struct_name)).size_or_type

    def offsets(self, wanted: dict[str, tuple[str, ...]]) -> dict[str, int]:
        """Several offsets at once: {"task_struct": ("mm", …)} → {"task_struct.mm": 1234, …}."""
        found: dict[str, int] = {}
        for struct_name, members in wanted.items():
            record = self._type(self._struct_id(struct_name))
            for member in members:
                bit_offset = self._find(record, member.encode())
                if bit_offset is None:
                    raise BtfError(f"struct {struct_name} has no member {member}")
                if bit_offset % 8:
                    raise BtfError(f"struct {struct_name}.{member} is a bitfield")
                found[f"{struct_name}.{member}"] = bit_offset // 8
        return found
