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


def side_files(path: Path) -> tuple[Path, ...]:
    """The WAL and shared-memory files SQLite keeps next to the database."""
    return tuple(path.with_name(path.name + suffix) for suffix in SIDE_FILE_SUFFIXES)


def prepare_store_file(path: Path, file_mode: int) -> None:
    """Create the parent directory and the (empty) database file if missing, and give the file
    and any existing WAL/shm files exactly `file_mode`. Raises StoreError naming the path."""
    parent = path.parent
    if not parent.exists():
        dir_mode = directory_mode_for(file_mode)
        try:
            parent.mkdir(parents=True, mode=dir_mode)
            os.chmod(parent, dir_mode)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass  # created concurrently; the open below reports anything wrong with it
        except OSError as exc:
            raise StoreError(f"cannot create the store directory {parent}: {_reason(exc)}") from exc
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode)
    except OSError as exc:
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
