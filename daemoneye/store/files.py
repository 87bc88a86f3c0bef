"""The store's directory and files get their permissions before SQLite ever opens them.

The store holds every command line on the host, so its file is created with the caller's mode
(0600, or 0640 for the daemoneye group) instead of whatever the umask allows, and the mode is
enforced on an existing file and its `-wal`/`-shm` companions too.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from daemoneye.errors import StoreError

SIDE_FILE_SUFFIXES = ("-wal", "-shm")


def directory_mode_for(file_mode: int) -> int:
    """0700, widened with read+search only for the classes the file itself is readable by
    (0640 -> 0750), so a group allowed to read the file can reach it."""
    mode = 0o700
    if file_mode & 0o040:
        mode |= 0o050
    if file_mode & 0o004:
        mode |= 0o005
    return mode


def _reason(exc: OSError) -> str:
    return exc.strerror or os.strerror(exc.errno or errno.EIO)


# What a directory the store cannot be created in reports: not writable for this user, or on a
# read-only mount.
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _nearest_existing(directory: Path) -> Path:
    """`directory` or its closest ancestor that exists: the one that refused a new entry."""
    for candidate in (directory, *directory.parents):
        try:
            if candidate.exists():
                return candidate
        except OSError:
            continue
    return Path("/")


def store_directory_error(directory: Path, exc: OSError, store: Path | None = None) -> StoreError:
    """A StoreError for failing to create the store (or its directory, or a file next to it) in
    `directory`: `cannot create the store in /x: directory /x is not writable (Permission
    denied)`. When the store file `store` already exists the sentence says what else the
    directory must take."""
    if exc.errno not in _NOT_WRITABLE:
        what = f"cannot create {exc.filename}: " if exc.filename else ""
        return StoreError(f"cannot create the store in {directory}: {what}{_reason(exc)}")
    blocker = _nearest_existing(directory)
    if store is not None and os.path.lexists(store):
        return StoreError(
            f"cannot use the store {store}: directory {blocker} is not writable "
            f"({_reason(exc)}); the daemon keeps its lock, WAL and shared-memory files next to "
            "the store"
        )
    return StoreError(
        f"cannot create the store in {directory}: directory {blocker} is not writable "
        f"({_reason(exc)})"
    )


def store_exists(path: Path) -> bool:
    """Whether the store file (or directory) `path` exists. A StoreError naming it when this
    user cannot even look, because a directory on the way is not searchable: Path.exists()
    raises PermissionError there instead of answering."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError as exc:
        raise StoreError(
            f"cannot reach the store {path}: a directory on the way is not searchable for uid "
            f"{os.geteuid()} ({_reason(exc)})"
        ) from exc
    except OSError as exc:
        raise StoreError(f"cannot reach the store {path}: {_reason(exc)}") from exc
    return True


def ensure_store_directory(directory: Path, dir_mode: int = 0o700) -> None:
    """Create the store's directory (and its parents) with `dir_mode` when missing; a
    StoreError naming the directory when that is impossible."""
    if store_exists(directory):
        return
    try:
        directory.mkdir(parents=True, mode=dir_mode)
        os.chmod(directory, dir_mode)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass  # created concurrently; opening the file reports anything wrong with it
    except OSError as exc:
        raise store_directory_error(directory, exc) from exc


def side_files(path: Path) -> tuple[Path, ...]:
    """The WAL and shared-memory files SQLite keeps next to the database."""
    return tuple(path.with_name(path.name + suffix) for suffix in SIDE_FILE_SUFFIXES)


def prepare_store_file(path: Path, file_mode: int) -> None:
    """Create the parent directory and the (empty) database file if missing, and give the file
    and any existing WAL/shm files exactly `file_mode`. Raises StoreError naming the path."""
    parent = path.parent
    ensure_store_directory(parent, directory_mode_for(file_mode))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode)
    except OSError as exc:
        if exc.errno in _NOT_WRITABLE and not os.path.lexists(path):
            raise store_directory_error(parent, exc) from exc  # the file could not be created
        raise StoreError(f"cannot open the store {path} for writing: {_reason(exc)}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"the store {path} is not a regular file")
        if stat.S_IMODE(info.st_mode) != file_mode:
            os.fchmod(fd, file_mode)
    except OSError as exc:
        raise StoreError(
            f"cannot set mode {file_mode:04o} on the store {path}: {_reason(exc)}"
        ) from exc
    finally:
        os.close(fd)
    enforce_side_file_modes(path, file_mode)


def enforce_side_file_modes(path: Path, file_mode: int) -> None:
    """Give existing `-wal`/`-shm` files the database's mode (they hold the same data)."""
    for side in side_files(path):
        try:
            if stat.S_IMODE(os.stat(side).st_mode) != file_mode:
                os.chmod(side, file_mode)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot set mode {file_mode:04o} on {side}: {_reason(exc)}") from exc
