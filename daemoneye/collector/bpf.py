"""The bpf(2) calls the exec capture uses, made through ctypes: create a map, load a program,
attach it to a raw tracepoint, and read a BPF ring buffer through its shared mappings.

No compiler and no library: the program is eBPF bytecode assembled in Python
(`daemoneye.collector.bpf_asm`) against offsets the running kernel publishes in its BTF.
Loading needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); once loaded, the file descriptors
keep working without them.

Ring buffer layout (``kernel/bpf/ringbuf.c``): the consumer position is the first u64 of a
writable page at offset 0; the producer position the first u64 of a read-only page at one page,
followed by the data area mapped twice in a row, so a record that wraps reads as one slice.
Each record starts with a u32 length (bit 31 busy, bit 30 discarded) and a u32 page offset, and
the next record starts at the length plus 8, rounded up to 8.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import struct
from collections.abc import Iterator

_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_ITER_CREATE = 33

MAP_PERCPU_ARRAY = 6
MAP_RINGBUF = 27
PROG_RAW_TRACEPOINT = 17
PROG_TRACING = 26
TRACE_ITER = 28  # enum bpf_attach_type

_ATTR_SIZE = 128  # larger than every attr used here; the kernel wants the tail zeroed
_BUSY = 1 << 31
_DISCARD = 1 << 30
_RECORD_HEADER = struct.Struct("<II")
_U64 = struct.Struct("<Q")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf(2) call failed; `log` holds the verifier's words for a refused program."""

    def __init__(self, errno: int, what: str, log: str = "") -> None:
        super().__init__(errno, f"{what}: {os.strerror(errno)}")
        self.log = log


def _bpf(command: int, attr: ctypes.Array[ctypes.c_char], what: str, log: str = "") -> int:
    number = _SYSCALL_BPF.get(platform.machine())
    if number is None:
        raise BpfError(38, f"{what}: no bpf(2) number known for {platform.machine()}")  # ENOSYS
    result = _libc.syscall(number, command, attr, _ATTR_SIZE)
    if result < 0:
        errno = ctypes.get_errno()
        raise BpfError(errno, what, log)
    return int(result)


def _attr(layout: str, *values: int | bytes) -> ctypes.Array[ctypes.c_char]:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(layout, attr, 0, *values)
    return attr


def create_map(map_type: int, key_size: int, value_size: int, max_entries: int, name: str) -> int:
    """A new map's file descriptor (close-on-exec, as every bpf fd is)."""
    layout = "<IIIIIII16s"  # type, key, value, entries, flags, inner fd, numa node, name
    attr = _attr(layout, map_type, key_size, value_size, max_entries, 0, 0, 0, name.encode())
    return _bpf(BPF_MAP_CREATE, attr, f"creating BPF map {name}")


def load_program(
    prog_type: int,
    instructions: bytes,
    license_text: str,
    name: str,
    *,
    attach_type: int = 0,
    attach_btf_id: int = 0,
) -> int:
    """Load a program; when the verifier refuses it, retry once with its log for the error.
    A tracing program names what it attaches to: `attach_type` and the kernel function's BTF
    id."""
    code = ctypes.create_string_buffer(instructions, len(instructions))
    license_buffer = ctypes.create_string_buffer(license_text.encode())
    # type, count, insns, license, log level/size/buf, kver, flags, name, ifindex,
    # expected attach type, then (at 108) the attach BTF id
    layout = "<IIQQIIQII16sII36xI"

    def attempt(log_level: int, log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = _attr(
            layout,
            prog_type,
            len(instructions) // 8,
            ctypes.addressof(code),
            ctypes.addressof(license_buffer),
            log_level,
            len(log) if log is not None else 0,
            ctypes.addressof(log) if log is not None else 0,
            0,
            0,
            name.encode(),
            0,
            attach_type,
            attach_btf_id,
        )
        try:
            return _bpf(BPF_PROG_LOAD, attr, f"loading BPF program {name}")
        except BpfError as error:
            text = log.value.decode("utf-8", "replace") if log is not None else ""
            raise BpfError(error.errno or 0, f"loading BPF program {name}", text) from None

    try:
        return attempt(0, None)
    except BpfError as error:
        if error.errno not in (13, 22):  # EACCES, EINVAL: the verifier's refusals
            raise
        return attempt(1, ctypes.create_string_buffer(1 << 20))


def attach_raw_tracepoint(tracepoint: str, program_fd: int) -> int:
    """Attach a program to a raw tracepoint; closing the returned fd detaches it."""
    name = ctypes.create_string_buffer(tracepoint.encode())
    attr = _attr("<QI", ctypes.addressof(name), program_fd)
    return _bpf(BPF_RAW_TRACEPOINT_OPEN, attr, f"attaching to tracepoint {tracepoint}")


def create_iterator_link(program_fd: int) -> int:
    """A link for an iterator program (BPF_TRACE_ITER); `create_iterator` reads through it."""
    attr = _attr("<III", program_fd, 0, TRACE_ITER)
    return _bpf(BPF_LINK_CREATE, attr, "linking the BPF task iterator")


def create_iterator(link_fd: int) -> int:
    """A new pass of an iterator: read the returned fd to its end, then close it."""
    attr = _attr("<II", link_fd, 0)
    return _bpf(BPF_ITER_CREATE, attr, "starting a BPF task iterator pass")


class RingBuffer:
    """The consumer side of a BPF_MAP_TYPE_RINGBUF map of `size` bytes (a power-of-two number
    of pages). One reader only.

    The data area is mapped once, not twice as libbpf maps it (the kernel allows either): a
    record that runs past the end is joined from its two pieces here. Mapped twice, each ring
    counted twice in procmond's RSS (6 MiB for its 3 MiB of rings)."""

    def __init__(self, map_fd: int, size: int) -> None:
        self._page = mmap.PAGESIZE
        self._size = size
        self._mask = size - 1
        self._consumer = mmap.mmap(
            map_fd, self._page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        try:
            self._producer = mmap.mmap(
                map_fd, self._page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=self._page
            )
        except OSError:
            self._consumer.close()
            raise

    def records(self, limit: int) -> Iterator[bytes]:
        """Up to `limit` committed records, oldest first; each is released once yielded.
        Stops at a record still being written (busy) and skips discarded ones."""
        consumer = _U64.unpack_from(self._consumer)[0]
        producer = _U64.unpack_from(self._producer)[0]
        taken = 0
        data, page, mask = self._producer, self._page, self._mask
        try:
            while consumer < producer and taken < limit:
                # a header is 8-byte aligned in a ring of whole pages: it never runs past the end
                length, _page_offset = _RECORD_HEADER.unpack_from(data, page + (consumer & mask))
                if length & _BUSY:
                    break
                size = length & ~(_BUSY | _DISCARD)
                start = (consumer + 8) & mask
                consumer += (size + 8 + 7) & ~7
                if not length & _DISCARD:
                    taken += 1
                    end = start + size
                    if end <= self._size:
                        yield data[page + start : page + end]
                    else:  # runs past the end: the rest is at the start
                        yield (
                            data[page + start : page + self._size]
                            + data[page : page + end - self._size]
                        )
        finally:
            _U64.pack_into(self._consumer, 0, consumer)

    def close(self) -> None:
        self._producer.close()
        self._consumer.close()
