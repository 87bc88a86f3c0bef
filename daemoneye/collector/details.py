"""Reading one process instance in full: stat plus the details read once per instance.

Everything is read through one open /proc/<pid> directory descriptor. That descriptor stays
bound to the task it was opened for: if the process exits and its pid is reused while we read,
reads through it fail instead of silently returning the newcomer's exe or command line. So the
stat read first (through the same descriptor) names the instance every other field belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter

from daemoneye.collector.context import NO_CONTEXT, Context, ContextReader, ContextValues
from daemoneye.collector.exec_capture import CapturedExec
from daemoneye.collector.kernel_context import KernelContext
from daemoneye.collector.procfs import (
    VANISHED_ERRORS,
    StatFields,
    parse_cmdline,
    parse_stat_fields,
    parse_status_ids,
    read_exe,
    read_fd,
    read_file,
    read_link,
)
from daemoneye.collector.shared_text import SHARED
from daemoneye.collector.task_iter import TaskContext
from daemoneye.models import ProcessDetails

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_CLOEXEC

# ProcessDetails ends with the context's fields, in the same order, so a context is spliced in
# positionally (a keyword call per new process costs more than the reads it would save).
_CONTEXT_NAMES = tuple(f.name for f in fields(Context))
if tuple(f.name for f in fields(ProcessDetails))[-len(_CONTEXT_NAMES) :] != _CONTEXT_NAMES:
    raise TypeError("models.ProcessDetails must end with collector/context.py Context's fields")
NO_CONTEXT_VALUES: ContextValues = attrgetter(*_CONTEXT_NAMES)(NO_CONTEXT)


@dataclass(frozen=True, slots=True)
class InstanceRead:
    """One instance as read now. `raw_stat` is kept so the scanner can compare the next tick's
    stat bytes against it. `denied` is True when a detail was refused (exe and cwd need ptrace
    access to other users' processes); `partial` when the process exited during the read, so
    the details hold only what was read before it went."""

    raw_stat: bytes
    stat: StatFields
    details: ProcessDetails
    denied: bool
    partial: bool
    stat_fd: int | None = None  # the open stat file, when read_instance(keep_stat=True)
    captured: CapturedExec | None = None  # the exec capture's record the details were taken from


def read_instance(
    proc_root: bytes,
    name: bytes,
    user_of: Callable[[int], str | None],
    context: ContextReader | None = None,
    *,
    keep_stat: bool = False,
    captured: CapturedExec | None = None,
    task: TaskContext | None = None,
) -> InstanceRead | None:
    """Read /proc/<name> in full (with its context when a reader is given). Returns None when
    the process is gone before its stat could be read; raises PermissionError when even stat
    is refused (hidepid); a malformed stat line raises ValueError. With `keep_stat` the stat
    file stays open and is handed over as `stat_fd`, which the caller then owns: the scanner
    polls it every tick, bound to the instance read here (no second open by path).

    `captured` is the exec capture's record of this process's exec. When stat shows it is the
    same instance (the start time), what the record holds is taken instead of read: the argv
    (unless cut), the executable's path, the real ids and the kernel's part of the context.
    /proc then gives the working directory, the environment and what the record could not
    settle; the instance's `captured` says the record was used. `task` is a task iterator's
    block for this pid (collector/task_iter.py): its context and real ids are taken when its
    start time is this instance's (and `status` is then not read)."""
    try:
        dir_fd = os.open(proc_root + b"/" + name, _DIR_FLAGS)
    except VANISHED_ERRORS:
        return None
    try:
        try:
            stat_fd = os.open(b"stat", _FILE_FLAGS, dir_fd=dir_fd)
        except VANISHED_ERRORS:
            return None
        handed_over = False
        try:
            try:
                raw_stat = read_fd(stat_fd)
            except VANISHED_ERRORS:
                return None
            if not raw_stat:
                return None  # a task torn down between open and read gives an empty file
            stat = parse_stat_fields(raw_stat)
            kept = stat_fd if keep_stat else None
            if captured is not None and captured.start_ticks == stat.start_ticks:
                read = _read_captured(
                    dir_fd, stat_fd, raw_stat, stat, user_of, context, captured, kept
                )
            else:
                if task is not None and task.start_ticks != stat.start_ticks:
                    task = None  # a task pass's block is taken only for its own instance
                read = _read_details(dir_fd, stat_fd, raw_stat, stat, user_of, context, kept, task)
            handed_over = keep_stat
            return read
        finally:
            if not handed_over:
                os.close(stat_fd)
    finally:
        os.close(dir_fd)


def _read_details(
    dir_fd: int,
    open_stat: int,
    raw_stat: bytes,
    stat: StatFields,
    user_of: Callable[[int], str | None],
    context: ContextReader | None,
    stat_fd: int | None = None,
    task: TaskContext | None = None,
) -> InstanceRead:
    """The details of a process; `task` is a task pass's record of this instance, whose
    context and real ids are taken instead of read (then `status` is not read at all: whether
    the process went during the reads is told, as for a captured exec, by the cwd link, read
    last — an exiting task loses it (exit_fs) before it can be reaped — and only when that
    cannot be read by its open stat file `open_stat`, read again)."""
    if stat.kernel_thread:  # no memory, no files, the kernel's own credentials
        details = ProcessDetails(None, False, (), None, 0, 0, user_of(0))
        return InstanceRead(raw_stat, stat, details, False, False, stat_fd)
    uid: int | None = None
    gid: int | None = None
    # exe and cwd: ENOENT is normal for zombies (no mm, no fs), so a missing link is not proof
    # of exit. status is read last and settles whether the process is gone.
    cmdline, no_cmdline = _cmdline(dir_fd)
    (exe, exe_deleted), no_exe = _exe(dir_fd)
    # the context too is read before status: a process gone meanwhile is marked partial
    kernel = task.context if task is not None else None
    found = _context_values(context, dir_fd, raw_stat, stat.start_ticks, kernel)
    cwd, no_cwd = _cwd(dir_fd)  # last: read, it shows the process was there until the end
    denied = no_cmdline or no_exe or no_cwd
    partial = False
    if task is not None and task.ids is not None:
        uid, gid = task.ids
        partial = cwd is None and not _still_there(open_stat)
    else:
        try:
            status = read_file(b"status", dir_fd=dir_fd)
        except PermissionError:
            denied = True
        except VANISHED_ERRORS:
            partial = True
        else:
            if status:
                uid, gid = parse_status_ids(status)
            else:
                partial = True
    details = ProcessDetails(
        SHARED.one(exe),
        exe_deleted,
        cmdline,
        SHARED.one(cwd),
        uid,
        gid,
        user_of(uid) if uid is not None else None,
        *found,
    )
    return InstanceRead(raw_stat, stat, details, denied, partial, stat_fd)


def _read_captured(
    dir_fd: int,
    stat_fd: int,
    raw_stat: bytes,
    stat: StatFields,
    user_of: Callable[[int], str | None],
    context: ContextReader | None,
    captured: CapturedExec,
    kept: int | None,
) -> InstanceRead:
    """`_read_details` for an exec the capture recorded: cmdline, exe and status are not read
    (the record has the argv, the walked path and the real ids), nor what the record's context
    settles. Whether the process went during the read is told by the cwd link, read last, or
    when that cannot be read by stat read again through the open file (no open, no close): a
    reaped task's reads empty or fail."""
    cmdline, no_cmdline = captured.argv, False
    if not captured.argv_complete:  # /proc's whole argv, if it is the one exec'd
        whole, no_cmdline = _cmdline(dir_fd)
        cmdline = whole if _extends(whole, captured.argv) else captured.argv
    (exe, exe_deleted), no_exe = (captured.path, captured.path_deleted), False
    if exe is None:
        (exe, exe_deleted), no_exe = _exe(dir_fd)
    found = _context_values(
        context, dir_fd, raw_stat, stat.start_ticks, captured.context, captured.environ
    )
    # /proc's cwd while the process is there: the kernel reads it under the rename lock,
    # which the capture's walk cannot take (a racing rename could mix two paths' names); the
    # record's is for a process gone before its read (events.py `_from_capture`). Read last,
    # as in `_read_details`.
    cwd, no_cwd = _cwd(dir_fd)
    denied = no_cmdline or no_exe or no_cwd
    partial = cwd is None and not _still_there(stat_fd)
    details = ProcessDetails(
        SHARED.one(exe),
        exe_deleted,
        cmdline,
        SHARED.one(cwd),
        captured.uid,
        captured.gid,
        user_of(captured.uid),
        *found,
    )
    return InstanceRead(raw_stat, stat, details, denied, partial, kept, captured)


def _still_there(stat_fd: int) -> bool:
    """Whether a process is still there after its reads: the open stat file of a reaped task
    reads empty or fails (no open, no close)."""
    try:
        return bool(os.pread(stat_fd, 512, 0))
    except OSError:
        return False


def _extends(whole: tuple[str, ...], cut: tuple[str, ...]) -> bool:
    """Whether an argv read from /proc begins with the one the capture cut short (its last
    argument cut mid-way): else the process wrote over its argv after the exec, and the
    stored argv stays the exec's, cut."""
    if not cut:  # nothing captured (unreadable): /proc's is all there is
        return True
    if len(whole) < len(cut):
        return False
    last = len(cut) - 1
    return whole[:last] == cut[:last] and whole[last].startswith(cut[last])


def _context_values(
    context: ContextReader | None,
    dir_fd: int,
    raw_stat: bytes,
    start_ticks: int,
    kernel: KernelContext | None,
    environ: bytes | None = None,
) -> ContextValues:
    if context is None:
        return NO_CONTEXT_VALUES
    return context.read_values(dir_fd, raw_stat, start_ticks, kernel, environ)


# Each read of one detail: its value (None or empty when gone) and whether it was refused.


def _cmdline(dir_fd: int) -> tuple[tuple[str, ...], bool]:
    try:
        raw = read_file(b"cmdline", dir_fd=dir_fd)
    except PermissionError:
        return (), True
    except VANISHED_ERRORS:
        return (), False
    return SHARED.argv(len(raw), parse_cmdline(raw)), False


def _exe(dir_fd: int) -> tuple[tuple[str | None, bool], bool]:
    try:
        return read_exe(b"exe", dir_fd=dir_fd), False
    except PermissionError:
        return (None, False), True
    except VANISHED_ERRORS:
        return (None, False), False


def _cwd(dir_fd: int) -> tuple[str | None, bool]:
    try:
        return read_link(b"cwd", dir_fd=dir_fd), False
    except PermissionError:
        return None, True
    except VANISHED_ERRORS:
        return None, False
