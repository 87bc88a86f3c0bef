"""The eBPF exec capture without the kernel: the assembler's jumps, the BTF reader on a blob
built here, ring records decoded, records paired with their connector events, and what the
event source makes of a capture for a process /proc no longer shows."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.collector import bpf_asm as asm
from daemoneye.collector.btf import BtfError, KernelTypes
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.exec_capture import (
    _CONTEXT,
    _CWD,
    _CWD_LEN,
    _HEADER,
    _PATH,
    ARGV_BYTES,
    FILENAME_BYTES,
    HEADER_BYTES,
    PATH_BYTES,
    SHORT_ARGV_BYTES,
    CapturedExec,
    ExecCapture,
    decode_record,
)
from daemoneye.collector.proc_events import (
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    ExecEvent,
    ForkEvent,
    NetlinkOverrun,
    ProcConnectorEvent,
)
from tests.unit.test_netlink_events import (
    BOOT,
    EVENT_NS,
    PARENT,
    SocketPairConnector,
    drain_until,
    wire,
    write_process,
)

TICK_NS = 10_000_000  # USER_HZ 100


# -- the assembler ----------------------------------------------------------------------------


def _jump_offset(code: bytes, slot: int) -> int:
    _op, _regs, offset, _imm = struct.unpack_from("<BBhi", code, slot * 8)
    return int(offset)


def test_jumps_count_slots_and_a_map_load_takes_two() -> None:
    code = asm.assemble(
        [
            asm.jump("jeq", asm.R0, 0, "out"),  # slot 0
            asm.load_map_fd(asm.R1, 7),  # slots 1-2
            asm.label("back"),
            asm.mov(asm.R6, asm.R1),  # slot 3
            asm.jump("ja", 0, 0, "back"),  # slot 4
            asm.label("out"),
            asm.exit_(),  # slot 5
        ]
    )
    assert len(code) == 6 * 8
    assert _jump_offset(code, 0) == 4  # to slot 5, counted from slot 1
    assert _jump_offset(code, 4) == -2  # back to slot 3
    assert struct.unpack_from("<BBhi", code, 8) == (0x18, 0x11, 0, 7)  # ld_imm64 map fd


def test_a_jump_to_nowhere_and_a_label_twice_are_refused() -> None:
    with pytest.raises(ValueError, match="undefined label nowhere"):
        asm.assemble([asm.jump("ja", 0, 0, "nowhere")])
    with pytest.raises(ValueError, match="twice"):
        asm.assemble([asm.label("a"), asm.label("a")])


# -- BTF --------------------------------------------------------------------------------------


class _Blob:
    """A BTF blob with the records a test adds (kinds as in include/uapi/linux/btf.h)."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def name(self, text: str) -> int:
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, name: str, kind: int, vlen: int, size: int, tail: bytes = b"") -> int:
        self.types += struct.pack("<III", self.name(name) if name else 0, kind << 24 | vlen, size)
        self.types += tail
        self.count += 1
        return self.count

    def struct(
        self, name: str, size: int, members: list[tuple[str, int, int]], *, bits: bool = False
    ) -> int:
        tail = b"".join(struct.pack("<III", self.name(m) if m else 0, t, o) for m, t, o in members)
        kind = 4 | (0x80 if bits else 0)  # kind_flag: bitfield offsets
        return self.add(name, kind, len(members), size, tail)

    def bytes(self) -> bytes:
        header = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return header + bytes(self.types) + bytes(self.strings)


def _kernel_like() -> bytes:
    blob = _Blob()
    ulong = blob.add("unsigned long", 1, 0, 8, struct.pack("<I", 64))
    blob.add("mm_struct", 7, 0, 0)  # a forward declaration first: not the struct
    inner = blob.struct("", 16, [("arg_start", ulong, 0), ("arg_end", ulong, 64)])
    const = blob.add("", 10, 0, inner)  # const of the anonymous struct
    blob.struct("mm_struct", 1024, [("flags", ulong, 0), ("", const, 3904)])
    blob.struct("task_struct", 64, [("pid", ulong, 0), ("bits", ulong, 70)], bits=True)
    return blob.bytes()


def test_offsets_are_found_inside_anonymous_members_behind_qualifiers() -> None:
    types = KernelTypes(_kernel_like())
    assert types.offsets({"mm_struct": ("flags", "arg_start", "arg_end")}) == {
        "mm_struct.flags": 0,
        "mm_struct.arg_start": 488,
        "mm_struct.arg_end": 496,
    }


def test_missing_structs_members_and_bitfields_are_refused_by_name() -> None:
    types = KernelTypes(_kernel_like())
    with pytest.raises(BtfError, match="no struct linux_binprm"):
        types.offsets({"linux_binprm": ("filename",)})
    with pytest.raises(BtfError, match="struct mm_struct has no member arg_strat"):
        types.offsets({"mm_struct": ("arg_strat",)})
    with pytest.raises(BtfError, match=r"task_struct\.bits is a bitfield"):
        types.offsets({"task_struct": ("bits",)})


def test_a_blob_that_is_not_btf_is_refused() -> None:
    with pytest.raises(BtfError, match="not BTF"):
        KernelTypes(b"\0" * 64)
    with pytest.raises(BtfError, match="shorter than its header"):
        KernelTypes(b"\x9f\xeb")
    truncated = _kernel_like()[:-40]
    with pytest.raises(BtfError, match="past the end"):
        KernelTypes(truncated)
    with pytest.raises(BtfError, match="cannot read"):
        KernelTypes.load("/nonexistent/vmlinux")


# -- records ----------------------------------------------------------------------------------


def record(
    tgid: int,
    argv: bytes,
    *,
    ktime: int = EVENT_NS - 1000,
    filename: bytes = b"/bin/sh",
    total: int | None = None,
    start_ticks: int = 777,
    name_len: int | None = None,
    path: tuple[bytes, ...] | None = (b"dash", b"bin", b"usr"),
    path_word_flags: int = 0,
    context: bytes = b"",
    cwd: tuple[bytes, ...] | None = (b"work", b"srv"),
    cwd_word_flags: int = 0,
) -> bytes:
    header = _HEADER.pack(
        tgid,
        tgid,
        1000,
        1001,
        start_ticks * TICK_NS + 5,
        ktime,
        PARENT,
        len(argv),
        len(filename) + 1 if name_len is None else name_len,
        _path_length(path) | path_word_flags,
        len(argv) if total is None else total,
        b"sh\0garbage",
    )
    name = filename.ljust(FILENAME_BYTES, b"\0")
    walked = b"".join(part + b"\0" for part in path or ()).ljust(_CONTEXT - _PATH, b"\0")
    cwd_walked = b"".join(part + b"\0" for part in cwd or ()).ljust(HEADER_BYTES - _CWD, b"\0")
    cwd_word = struct.pack("<I4x", _path_length(cwd) | cwd_word_flags)
    block = context.ljust(_CWD_LEN - _CONTEXT, b"\0")
    return header + name + walked + block + cwd_word + cwd_walked + argv


def _path_length(path: tuple[bytes, ...] | None) -> int:
    """The walk's length word: the bytes written, and bit 31 when it reached the top."""
    if path is None:
        return 12  # written, but cut: not used
    return sum(len(part) + 1 for part in path) | 1 << 31


def test_a_record_decodes_to_the_exec_as_the_kernel_saw_it() -> None:
    captured = decode_record(record(42, b"/bin/sh\0-c\0: x\xff\0"), TICK_NS)
    assert captured == CapturedExec(
        tgid=42,
        ktime_ns=EVENT_NS - 1000,
        start_ticks=777,
        ppid=PARENT,
        uid=1000,
        gid=1001,
        comm="sh",
        filename="/bin/sh",
        path="/usr/bin/dash",
        path_deleted=False,
        cwd="/srv/work",
        argv=("/bin/sh", "-c", ": x\\xff"),
        argv_complete=True,
    )


def test_the_walked_path_is_used_only_when_the_walk_reached_the_top() -> None:
    named = decode_record(record(42, b"x\0", path=(b"t\nx", b"a b", b"tmp")), TICK_NS)
    assert named is not None and not named.path_deleted
    assert named is not None and named.path == "/tmp/a b/t\nx"
    cut = decode_record(record(42, b"x\0", path=None), TICK_NS)
    assert cut is not None and cut.path is None and cut.filename == "/bin/sh"
    nothing = decode_record(record(42, b"x\0", path=()), TICK_NS)  # a mount root: no names
    assert nothing is not None and nothing.path is None
    assert PATH_BYTES < HEADER_BYTES - _PATH  # room for the last name past the mask


def test_the_working_directory_is_walked_like_the_executable() -> None:
    """As /proc/PID/cwd reads: " (deleted)" for a removed directory, nothing for a walk that
    did not reach the top (too deep or too long: /proc is read instead)."""
    home = decode_record(record(42, b"x\0", cwd=(b"a\nb", b"tmp")), TICK_NS)
    assert home is not None and home.cwd == "/tmp/a\nb"
    gone = decode_record(record(42, b"x\0", cwd=(b"old", b"tmp"), cwd_word_flags=1 << 30), TICK_NS)
    assert gone is not None and gone.cwd == "/tmp/old (deleted)"
    assert not gone.path_deleted  # the executable's own flag is apart
    top = decode_record(record(42, b"x\0", cwd=()), TICK_NS)
    assert top is not None and top.cwd == "/"  # where a daemon chdir()s to
    cut = decode_record(record(42, b"x\0", cwd=None), TICK_NS)
    assert cut is not None and cut.cwd is None and cut.path == "/usr/bin/dash"
    assert PATH_BYTES + 128 <= HEADER_BYTES - _CWD  # room for the last name past the mask


def test_the_path_given_to_execve_never_stands_in_for_the_exe(tmp_path: Path) -> None:
    """A relative path, a symlink's name or a decoy: what execve was given is the caller's
    word, so a gone process whose path could not be walked has no exe (as before)."""
    source = source_with(tmp_path, record(42, b"memfd-prog\0", filename=b"./sshd", path=None))
    item = source.handle(exec_event(42))
    assert item is not None and item.event.exe is None
    assert item.event.cmdline == ("memfd-prog",)


def test_an_unlinked_executable_keeps_its_deleted_flag(tmp_path: Path) -> None:
    gone = record(42, b"x\0", path=(b"dropper", b"tmp"), path_word_flags=1 << 30)
    source = source_with(tmp_path, gone)
    item = source.handle(exec_event(42))
    assert item is not None and item.details is not None
    assert item.event.exe == "/tmp/dropper" and item.details.exe_deleted


def test_a_record_of_an_earlier_instance_of_the_pid_is_not_used(tmp_path: Path) -> None:
    write_process(tmp_path, 42, cmdline=b"curl\0-s\0")  # started at tick 4321
    source = source_with(tmp_path, record(42, b"old-process\0", start_ticks=1234))
    item = source.handle(exec_event(42))
    assert item is not None and item.event.cmdline == ("curl", "-s")
    assert source.stats().uncaptured_total == 1


def test_lost_connector_events_let_go_of_every_waiting_record(tmp_path: Path) -> None:
    """After a loss, a waiting record may be one whose event was lost; given to the next exec
    of the same process it would lend that exec a wrong argv."""
    source = source_with(tmp_path, record(42, b"earlier-exec\0"))
    source.handle(NetlinkOverrun())
    item = source.handle(exec_event(42))
    assert item is not None and item.event.cmdline is None
    assert source.needs_reconcile


def test_a_name_that_fills_its_buffer_may_be_cut_and_is_not_used() -> None:
    full = decode_record(record(42, b"x\0", name_len=FILENAME_BYTES), TICK_NS)
    assert full is not None and full.filename is None


def test_cut_unreadable_and_short_records() -> None:
    cut = decode_record(record(42, b"a" * 100, total=ARGV_BYTES + 5), TICK_NS)
    assert cut is not None and not cut.argv_complete and cut.argv == ("a" * 100,)
    unreadable = decode_record(record(42, b"", total=4096), TICK_NS)
    assert unreadable is not None and unreadable.argv == () and not unreadable.argv_complete
    failed_name = decode_record(record(42, b"x\0", name_len=-14), TICK_NS)  # -EFAULT
    assert failed_name is not None and failed_name.filename is None
    # a length past the record is held to the record
    lying = decode_record(record(42, b"ab\0")[:-1] + b"", TICK_NS)
    assert lying is not None and lying.argv == ("ab",)
    assert decode_record(b"\0" * (HEADER_BYTES - 1), TICK_NS) is None


class _Ring:
    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.closed = False

    def records(self, limit: int) -> Iterator[bytes]:
        taken, self.pending = self.pending[:limit], self.pending[limit:]
        yield from taken

    def close(self) -> None:
        self.closed = True


def capture_with(
    *records: bytes,
    long: tuple[bytes, ...] = (),
    capacity: int = 8192,
    size: int = 32 << 20,
) -> tuple[ExecCapture, _Ring]:
    ring, long_ring = _Ring(), _Ring()
    ring.pending += records
    long_ring.pending += long
    capture = ExecCapture(
        (), (ring, long_ring), TICK_NS, pending_capacity=capacity, pending_bytes=size
    )
    return capture, ring


def test_each_exec_event_takes_its_own_record_and_later_ones_wait() -> None:
    first = record(42, b"sh\0-c\0exec next\0", ktime=100)
    second = record(42, b"next\0", ktime=200)
    capture, _ = capture_with(first, second)
    assert capture.collect() == 2
    assert capture.take(42, 50) is None  # an event before both: neither is its own
    taken = capture.take(42, 150)
    assert taken is not None and taken.argv == ("sh", "-c", "exec next")
    taken = capture.take(42, 250)
    assert taken is not None and taken.argv == ("next",)
    assert capture.unmatched_total == 0
    assert capture.take(42, 300) is None


def test_a_record_whose_event_was_lost_is_not_given_to_the_next_exec() -> None:
    capture, _ = capture_with(record(42, b"old\0", ktime=100), record(42, b"new\0", ktime=200))
    capture.collect()
    taken = capture.take(42, 250)
    assert taken is not None and taken.argv == ("new",)
    assert capture.unmatched_total == 1


def test_records_waiting_for_events_are_bounded_oldest_out() -> None:
    capture, _ = capture_with(*(record(pid, b"x\0") for pid in range(10, 20)), capacity=4)
    capture.collect()
    assert capture.evicted_total == 6
    assert capture.take(10, EVENT_NS) is None
    assert capture.take(19, EVENT_NS) is not None


def test_a_long_argv_completes_the_short_record_of_the_same_exec() -> None:
    whole = b"java\0" + b"c" * 2000 + b"\0"
    cut = record(42, whole[:SHORT_ARGV_BYTES], ktime=100, total=len(whole))
    other = record(42, b"sh\0", ktime=300)
    capture, _ = capture_with(cut, other, long=(record(42, whole, ktime=100),))
    assert capture.collect() == 2  # execs, not records
    taken = capture.take(42, 150)
    assert taken is not None and taken.argv_complete and taken.argv[1] == "c" * 2000
    taken = capture.take(42, 350)
    assert taken is not None and taken.argv == ("sh",)


def test_a_long_record_whose_short_one_was_lost_still_counts() -> None:
    capture, _ = capture_with(long=(record(42, b"x\0" * 400, ktime=100),))
    capture.collect()
    taken = capture.take(42, 150)
    assert taken is not None and taken.argv_complete


def test_records_waiting_for_events_are_bounded_in_bytes_too() -> None:
    """Held execs (a tracer's exec stop) with 30 KB command lines: memory stays bounded."""
    huge = [record(pid, b"\0" * 30_000) for pid in range(10, 30)]
    capture, _ = capture_with(*huge, size=10 * len(huge[0]))
    capture.collect()
    assert capture.evicted_total == 10
    assert capture.take(10, EVENT_NS) is None and capture.take(29, EVENT_NS) is not None


def test_close_releases_the_ring() -> None:
    capture, ring = capture_with()
    capture.close()
    assert ring.closed


# -- the event source with a capture ----------------------------------------------------------


def source_with(proc: Path, *records: bytes) -> ProcEventSource:
    capture, _ = capture_with(*records)
    capture.collect()
    return ProcEventSource(BOOT, clk_tck=100, proc_root=str(proc), capture=capture)


def exec_event(pid: int) -> ExecEvent:
    return ExecEvent(0, 2, EVENT_NS, pid, pid)


def test_a_process_gone_before_proc_was_read_is_still_stored_whole(tmp_path: Path) -> None:
    source = source_with(tmp_path, record(42, b"/bin/sh\0-c\0: MARKER-1\0"))
    item = source.handle(exec_event(42))
    assert item is not None and item.details is not None
    event = item.event
    assert event.partial  # the context's /proc part and stat's fields are still missing
    assert event.cmdline == ("/bin/sh", "-c", ": MARKER-1")
    assert event.exe == "/usr/bin/dash"  # the executable's path, as the kernel walked it
    assert item.details.cwd == "/srv/work"  # and the working directory
    assert event.start_time == BOOT + 777 / 100 and event.ppid == PARENT
    assert (item.details.uid, item.details.gid) == (1000, 1001)
    assert source.stats().rescued_total == 1


def test_the_argv_exec_d_wins_over_one_the_process_wrote_since(tmp_path: Path) -> None:
    write_process(tmp_path, 42, cmdline=b"[kworker/0:1]\0")
    source = source_with(tmp_path, record(42, b"./miner\0--pool\0x\0", start_ticks=4321))
    item = source.handle(exec_event(42))
    assert item is not None
    assert item.event.cmdline == ("./miner", "--pool", "x")
    assert item.event.exe == "/usr/bin/dash"  # the file exec'd, as the kernel walked its path
    assert item.details is not None and item.details.cwd == "/srv/app"  # /proc's, still there
    assert not item.event.partial and source.stats().rescued_total == 0


def test_what_the_record_cannot_settle_is_read_from_proc(tmp_path: Path) -> None:
    """No walked paths (too deep, say) and a cut argv: /proc's exe, cwd and cmdline; the ids
    are the record's either way (status is not read for a recorded exec)."""
    write_process(tmp_path, 42, cmdline=b"curl\0-s\0", uid=5, gid=6)
    source = source_with(
        tmp_path,
        record(42, b"curl\0", start_ticks=4321, path=None, cwd=None, total=ARGV_BYTES + 1),
    )
    item = source.handle(exec_event(42))
    assert item is not None and item.details is not None
    assert item.event.exe == "/usr/bin/curl" and item.event.cmdline == ("curl", "-s")
    assert (item.details.uid, item.details.gid) == (1000, 1001)
    assert item.details.cwd == "/srv/app" and not item.event.partial


def test_a_cut_capture_leaves_procs_whole_argv(tmp_path: Path) -> None:
    write_process(tmp_path, 42, cmdline=b"curl\0" + b"y" * 40_000 + b"\0")
    source = source_with(tmp_path, record(42, b"curl\0" + b"y" * 100, total=ARGV_BYTES + 1))
    item = source.handle(exec_event(42))
    assert item is not None and item.event.cmdline is not None
    assert item.event.cmdline[1] == "y" * 40_000


def test_without_a_record_the_source_reads_proc_as_before(tmp_path: Path) -> None:
    source = source_with(tmp_path)
    item = source.handle(exec_event(42))
    assert item is not None and item.event.partial and item.event.cmdline is None
    assert source.stats().rescued_total == 0


def test_a_cut_capture_keeps_the_exec_s_argv_when_the_process_wrote_over_it(
    tmp_path: Path,
) -> None:
    """Past the record's room, /proc's argv is taken only when it begins with what the kernel
    exec'd; a process that wrote a disguise over it keeps the exec's argv, cut."""
    write_process(tmp_path, 42, cmdline=b"[kworker/0:1]\0")
    cut = record(42, b"perl\0-e\0" + b"x" * 100, total=ARGV_BYTES + 1, start_ticks=4321)
    source = source_with(tmp_path, cut)
    item = source.handle(exec_event(42))
    assert item is not None and item.event.cmdline == ("perl", "-e", "x" * 100)


def test_an_unreadable_capture_leaves_procs_argv(tmp_path: Path) -> None:
    write_process(tmp_path, 42, cmdline=b"curl\0-s\0")
    source = source_with(tmp_path, record(42, b"", total=4096, start_ticks=4321))
    item = source.handle(exec_event(42))
    assert item is not None and item.event.cmdline == ("curl", "-s")


def test_a_fork_whose_child_was_gone_before_its_read_takes_its_start_from_the_exec(
    tmp_path: Path,
) -> None:
    """The reader batches a burst's datagrams while the capture is on: a child that forked,
    exec'd and exited in between has no /proc entry left, and its fork is stored with the
    start its exec's record gives, not as an instance of unknown start."""
    source = source_with(tmp_path, record(42, b"/bin/sh\0-c\0:\0"))
    messages: list[ProcConnectorEvent] = [
        ForkEvent(0, 1, EVENT_NS - 2000, PARENT, PARENT, 42, 42),
        exec_event(42),
    ]
    source.prefetch_execs(messages)
    fork, execed = (source.handle(message) for message in messages)
    assert fork is not None and execed is not None
    assert fork.event.kind == "fork" and not fork.event.partial
    assert fork.event.start_time == execed.event.start_time == BOOT + 777 / 100


# -- forks held to the next read --------------------------------------------------------------


def _fork_datagram(child: int, seq: int) -> bytes:
    return wire(PROC_EVENT_FORK, struct.pack("=IIII", PARENT, PARENT, child, child), seq)


def _exec_datagram(pid: int, seq: int) -> bytes:
    return wire(PROC_EVENT_EXEC, struct.pack("=II", pid, pid), seq)


@pytest.fixture
def fed() -> Iterator[SocketPairConnector]:
    connector = SocketPairConnector()
    connector.open()
    yield connector
    connector.close()
    connector.feed.close()


def _captured(
    proc: Path, connector: SocketPairConnector, *records: bytes
) -> tuple[ProcEventSource, list[int]]:
    """A source with a capture, and the pids whose stat it reads (what holding forks spares)."""
    capture, _ = capture_with(*records)
    source = ProcEventSource(
        BOOT, clk_tck=100, proc_root=str(proc), capture=capture, connector=connector
    )
    reads: list[int] = []
    read_stat = source._read_stat

    def counted(pid: int, event_ns: int) -> object:
        reads.append(pid)
        return read_stat(pid, event_ns)

    source._read_stat = counted  # type: ignore[method-assign,assignment]
    return source, reads


def test_a_fork_alone_in_its_read_takes_its_start_from_the_child_s_exec_at_the_next(
    tmp_path: Path, fed: SocketPairConnector
) -> None:
    """Under an exec storm the child has usually not exec'd yet when its fork is read: the
    fork waits for the next read, where its exec's record gives the start time, and stat is
    not read for it. Fork, then exec, as the kernel sent them."""
    write_process(tmp_path, 42, start_ticks=777)
    source, reads = _captured(tmp_path, fed, record(42, b"/bin/sh\0-c\0:\0"))
    fed.feed.send(_fork_datagram(42, 1))
    assert source._read_available() == 1
    assert source.drain_observed() == []  # held
    fed.feed.send(_exec_datagram(42, 2))
    source._read_available()
    fork, execed = source.drain_observed()
    assert (fork.event.kind, execed.event.kind) == ("fork", "exec")
    assert fork.event.start_time == execed.event.start_time == BOOT + 777 / 100
    assert not fork.event.partial and fork.event.ppid == PARENT
    assert reads == []


def test_a_held_fork_whose_child_did_nothing_reads_stat_at_the_next_read(
    tmp_path: Path, fed: SocketPairConnector
) -> None:
    write_process(tmp_path, 42, start_ticks=4321)
    source, reads = _captured(tmp_path, fed)
    fed.feed.send(_fork_datagram(42, 1))
    source._read_available()
    assert source.drain_observed() == [] and reads == []
    assert source._read_available() == 0  # nothing new: the held fork is handled now
    (fork,) = source.drain_observed()
    assert fork.event.kind == "fork" and fork.event.start_time == BOOT + 4321 / 100
    assert reads == [42]


def test_a_fork_with_its_child_s_exit_in_the_same_read_is_not_held(
    tmp_path: Path, fed: SocketPairConnector
) -> None:
    write_process(tmp_path, 42, start_ticks=4321, state="Z")
    source, _ = _captured(tmp_path, fed)
    fed.feed.send(_fork_datagram(42, 1))
    fed.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 42, 42, 0, 17, 1, 1), 2))
    source._read_available()
    assert [o.event.kind for o in source.drain_observed()] == ["fork", "exit"]


def test_without_the_capture_a_fork_is_read_at_once(
    tmp_path: Path, fed: SocketPairConnector
) -> None:
    """No record to give a gone child's start: the fork's own read is all there is."""
    write_process(tmp_path, 42, start_ticks=4321)
    source = ProcEventSource(BOOT, clk_tck=100, proc_root=str(tmp_path), connector=fed)
    fed.feed.send(_fork_datagram(42, 1))
    source._read_available()
    (fork,) = source.drain_observed()
    assert fork.event.start_time == BOOT + 4321 / 100


def test_the_reader_thread_handles_a_held_fork_when_nothing_else_wakes_it(
    tmp_path: Path, fed: SocketPairConnector
) -> None:
    write_process(tmp_path, 42, start_ticks=4321)
    source, _ = _captured(tmp_path, fed)
    source.start()
    try:
        fed.feed.send(_fork_datagram(42, 1))
        (fork,) = drain_until(source, 1)  # held at the wake, then handled after a wait
        assert fork.event.kind == "fork" and not fork.event.partial
    finally:
        source.stop()


def test_a_held_fork_does_not_make_the_messages_after_it_look_lost(
    tmp_path: Path, fed: SocketPairConnector
) -> None:
    """Where every event reaches the reader (no socket filter, no kernel mask) a gap in a
    CPU's sequence numbers is a loss. A fork handled a read late must not move that CPU's
    last number back: its successors came in order."""
    write_process(tmp_path, 42)
    source, _ = _captured(tmp_path, fed)
    fed.feed.send(_fork_datagram(42, 1))
    fed.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 77, 77, 0, 17, 1, 1), 2))
    source._read_available()
    fed.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 78, 78, 0, 17, 1, 1), 3))
    source._read_available()
    source._read_available()  # the held fork, handled last
    assert sorted(o.event.pid for o in source.drain_observed()) == [42, 77, 78]
    assert source.lost_total == 0 and not source.needs_reconcile


def test_a_held_fork_whose_child_ended_does_not_take_a_newcomer_s_start(
    tmp_path: Path, fed: SocketPairConnector
) -> None:
    """Held, its child exited, and a newcomer forked and exec'd under the same pid before the
    next read: the newcomer's start is not the ended child's (its exit would end the
    newcomer's instance). The ended one's fork and exit stay of unknown start."""
    newcomer = 9999
    source, _ = _captured(tmp_path, fed, record(42, b"/bin/sh\0", start_ticks=newcomer))
    fed.feed.send(_fork_datagram(42, 1))
    source._read_available()  # held
    write_process(tmp_path, 42, start_ticks=newcomer)
    fed.feed.send(wire(PROC_EVENT_EXIT, struct.pack("=IIIiII", 42, 42, 0, 17, 1, 1), 2))
    fed.feed.send(_fork_datagram(42, 3))
    fed.feed.send(_exec_datagram(42, 4))
    source._read_available()
    events = [o.event for o in source.drain_observed()]
    assert [e.kind for e in events] == ["fork", "exit", "fork", "exec"]
    assert events[2].start_time == events[3].start_time == BOOT + newcomer / 100
    assert events[0].start_time != events[3].start_time
    assert events[1].start_time != events[3].start_time
