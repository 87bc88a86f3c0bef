"""Parsers for /proc files and the small readers around them.

Everything a process writes about itself is hostile input: a command name may hold spaces,
parentheses, newlines or bytes that are not UTF-8, so text is decoded with
``errors="backslashreplace"`` (a stray 0xff byte becomes the four characters ``\\xff``) and the
parsers never trust a delimiter that the process controls.

Errors follow the kernel: FileNotFoundError / ProcessLookupError (ESRCH) mean the process is gone,
PermissionError means it exists but this collector may not look. Callers decide what to count.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from daemoneye.errors import CollectorError
from daemoneye.models import ProcessSample

_READ_SIZE = 4096
CMDLINE_KEEP_BYTES = 128 * 1024  # of a command line: its first and last 64 KiB
CMDLINE_KEEP_ARGS = 4096  # of its arguments: the first and the last 2,048
DELETED_SUFFIX = " (deleted)"
_PF_KTHREAD = 0x00200000  # task flag (stat field 9): a kernel thread, which can never execve
_CAP_SYS_PTRACE = 19

PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS: int = os.sysconf("SC_CLK_TCK")

# The errors that mean "this process is gone": the pid directory disappeared (ENOENT), the task
# died between open and read (ESRCH), or a name in the listing was never a pid directory.
VANISHED_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    ProcessLookupError,
    NotADirectoryError,
)


def clock_ticks() -> int:
    """Clock ticks per second (USER_HZ), the unit of stat's times; 100 on every mainstream arch."""
    return CLOCK_TICKS


def page_size() -> int:
    """Bytes per page, the unit of stat's rss field."""
    return PAGE_SIZE


def decode(raw: bytes) -> str:
    """Bytes from /proc as text; undecodable bytes stay visible as ``\\xNN``."""
    return raw.decode("utf-8", "backslashreplace")


class StatFields(NamedTuple):
    """What the collector takes from one /proc/<pid>/stat line (field numbers as in proc(5))."""

    pid: int  # 1
    comm: str  # 2, between the first '(' and the last ')'
    state: str  # 3
    ppid: int  # 4
    kernel_thread: bool  # 9, flags & PF_KTHREAD
    cpu_ticks: int  # 14 utime + 15 stime
    threads: int  # 20
    start_ticks: int  # 22
    rss_bytes: int  # 24, pages * page size


def parse_stat_fields(raw: bytes) -> StatFields:
    """Parse /proc/<pid>/stat. The name is everything between the FIRST '(' and the LAST ')':
    the pid before it cannot hold a parenthesis and nothing after it can hold a ')' , while the
    name itself may hold anything (`a) (b`, newlines, a lone ')'). Raises ValueError when the
    line is not a stat line."""
    open_paren = raw.find(b"(")
    close_paren = raw.rfind(b")")
    if open_paren <= 0 or close_paren < open_paren:
        raise ValueError(f"not a /proc/<pid>/stat line: {raw[:80]!r}")
    rest = raw[close_paren + 2 :].split(None, 22)  # fields 3..24, then the unsplit remainder
    if len(rest) < 22:
        raise ValueError(f"/proc/<pid>/stat line too short ({len(rest) + 2} fields)")
    # rest[i] is field i + 3
    return StatFields(
        int(raw[:open_paren]),
        decode(raw[open_paren + 1 : close_paren]),
        rest[0].decode("ascii", "backslashreplace"),
        int(rest[1]),
        bool(int(rest[6]) & _PF_KTHREAD),
        int(rest[11]) + int(rest[12]),
        int(rest[17]),
        int(rest[19]),
        int(rest[21]) * PAGE_SIZE,
    )


def parse_stat(raw: bytes) -> ProcessSample:
    """Parse /proc/<pid>/stat into the shared per-tick sample (see `parse_stat_fields`)."""
    fields = parse_stat_fields(raw)
    return ProcessSample(
        pid=fields.pid,
        start_ticks=fields.start_ticks,
        ppid=fields.ppid,
        comm=fields.comm,
        state=fields.state,
        threads=fields.threads,
        rss_bytes=fields.rss_bytes,
        cpu_ticks=fields.cpu_ticks,
    )


def parse_status_ids(raw: bytes) -> tuple[int | None, int | None]:
    """The real uid and gid from /proc/<pid>/status (the ``Uid:``/``Gid:`` lines list real,
    effective, saved and filesystem ids). A missing or malformed line gives None. The Name line
    comes first and escapes newlines, so a hostile name cannot forge a Uid line."""
    return _status_id(raw, b"\nUid:"), _status_id(raw, b"\nGid:")


def _status_id(raw: bytes, label: bytes) -> int | None:
    start = raw.find(label)
    if start < 0:
        return None
    end = raw.find(b"\n", start + 1)
    parts = raw[start + len(label) : end if end > 0 else len(raw)].split(None, 1)
    try:
        return int(parts[0])
    except (IndexError, ValueError):
        return None


def parse_cmdline(raw: bytes) -> tuple[str, ...]:
    """argv from /proc/<pid>/cmdline: NUL-terminated arguments. Trailing NULs are dropped (the
    padding a process leaves after rewriting its title, at the cost of a trailing empty
    argument). A process that rewrote argv into one space-separated title (nginx, postgres) is
    kept as one element: splitting on spaces would invent arguments. Kernel threads and zombies
    give ().

    What a process puts in its argv is hostile in cost too: 2 MB of empty arguments would be
    a 200,000-item tuple in every copy of the record. So at most CMDLINE_KEEP_BYTES are kept
    and at most CMDLINE_KEEP_ARGS arguments, each bound split between the head and the tail
    (padding at either end cannot push what a program acts on out of sight)."""
    raw = raw.rstrip(b"\0")
    if not raw:
        return ()
    if len(raw) > CMDLINE_KEEP_BYTES:
        half = CMDLINE_KEEP_BYTES // 2
        raw = raw[:half] + b"\0" + raw[-half:]
    # Decoded whole, then split: NUL is never part of a UTF-8 sequence, valid or not, so this
    # equals decoding each argument (one decode instead of one per argument).
    args = decode(raw).split("\0")
    if len(args) > CMDLINE_KEEP_ARGS:
        half = CMDLINE_KEEP_ARGS // 2
        args = args[:half] + args[-half:]
    return tuple(args)


def split_deleted(target: str) -> tuple[str, bool]:
    """Strip the kernel's " (deleted)" suffix from a /proc symlink target: (path, was_deleted).
    A file can really be named "x (deleted)"; `read_exe` settles that case with the link count."""
    if target.endswith(DELETED_SUFFIX):
        return target[: -len(DELETED_SUFFIX)], True
    return target, False


def read_fd(fd: int, first: int = _READ_SIZE) -> bytes:
    """Read an open /proc file to its end. procfs generates these files whole (stat, status
    through a single seq_file record, cmdline page by page until the buffer is full), so a read
    that does not fill the buffer has reached the end, and one syscall usually suffices. A read
    that fills it is followed by reads until EOF: that is how a 128 KiB command line arrives."""
    chunk = os.read(fd, first)
    if len(chunk) < first:
        return chunk
    chunks = [chunk]
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_file(path: str | bytes, *, dir_fd: int | None = None) -> bytes:
    """The whole file (a 128 KiB command line included), see `read_fd`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def read_link(path: bytes, *, dir_fd: int | None = None) -> str:
    """A symlink's target, decoded like every other /proc text."""
    return decode(os.readlink(path, dir_fd=dir_fd))


def read_exe(path: bytes, *, dir_fd: int | None = None) -> tuple[str, bool]:
    """The executable behind /proc/<pid>/exe: (path without " (deleted)", deleted). Only when
    the suffix is present is the link count checked, so that a binary literally named
    "x (deleted)" is not mistaken for a deleted one (a deleted file has no links left)."""
    path_text, deleted = split_deleted(read_link(path, dir_fd=dir_fd))
    if deleted:
        try:
            if os.stat(path, dir_fd=dir_fd).st_nlink > 0:
                return path_text + DELETED_SUFFIX, False
        except OSError:
            pass  # cannot tell; the kernel's word stands
    return path_text, deleted


def read_boot_time(proc_root: str = "/proc") -> float:
    """Boot time in epoch seconds (``btime`` in /proc/stat). Read it once per boot and keep it:
    start_time = boot_time + start_ticks / CLK_TCK must give the same float for the same
    process every time, and the kernel may shift btime by a second as the clock is adjusted."""
    try:
        raw = read_file(os.path.join(proc_root, "stat"))
    except OSError as exc:
        raise CollectorError(f"cannot read {proc_root}/stat: {exc.strerror}") from exc
    for line in raw.split(b"\n"):
        if line.startswith(b"btime "):
            return float(int(line.split()[1]))
    raise CollectorError(f"{proc_root}/stat has no btime line")


def read_boot_id(proc_root: str = "/proc") -> str:
    """The kernel's random id of this boot: start ticks are only comparable within one boot."""
    path = os.path.join(proc_root, "sys", "kernel", "random", "boot_id")
    try:
        return read_file(path).decode("ascii", "replace").strip()
    except OSError as exc:
        raise CollectorError(f"cannot read {path}: {exc.strerror}") from exc


def parse_cap_eff(raw: bytes) -> int:
    """The effective capability mask from a status file (0 when absent)."""
    for line in raw.split(b"\n"):
        if line.startswith(b"CapEff:"):
            return int(line.split()[1], 16)
    return 0


def sees_all_processes() -> bool:
    """Whether this process may read every process's exe and cwd. The kernel lets a task read
    another uid's links only with CAP_SYS_PTRACE, which root normally holds but a container's
    root often does not, so the effective capability set decides, not the uid."""
    try:
        cap_eff = parse_cap_eff(read_file("/proc/self/status"))
    except OSError:
        return os.geteuid() == 0
    return bool(cap_eff & (1 << _CAP_SYS_PTRACE))
