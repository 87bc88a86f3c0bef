"""The socket file: a path that fits in sun_path, a directory nobody else can tamper with,
a stale socket (its daemon died) replaced, a live one (another daemon) never, and the final
permissions from the first instant."""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

from daemoneye.errors import DaemonError
from daemoneye.ipc.auth import peer_of
from daemoneye.ipc.protocol import MAX_SOCKET_PATH_BYTES

log = logging.getLogger(__name__)


def check_socket_path(path: Path) -> None:
    """Refuse a path that does not fit in sun_path: it would be truncated or fail oddly."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise DaemonError(
            f"socket path {path} is {size} bytes long, more than the {MAX_SOCKET_PATH_BYTES} "
            "bytes a Unix socket path may have; choose a shorter one (--socket, daemon.socket, "
            "or a shorter $XDG_RUNTIME_DIR)"
        )


def bind_unix_socket(path: Path, *, file_mode: int, group: int | None) -> socket.socket:
    """A listening socket at `path` with `file_mode` (and `group`) from the first instant.

    A socket file left by a daemon that died (nothing accepts on it) is replaced; one that a
    live daemon listens on makes this fail with DaemonError naming that daemon's pid; a path
    that is not a socket is never touched.
    """
    check_socket_path(path)
    _prepare_directory(path.parent)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The umask makes the socket 0600 the moment it exists; it is only ever loosened after.
        old_umask = os.umask(0o177)
        try:
            sock.bind(os.fsencode(path))
        finally:
            os.umask(old_umask)
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, file_mode)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == 98:  # EADDRINUSE: another daemon bound it between our check and bind
            raise DaemonError(f"another daemon is already listening on {path}") from None
        raise DaemonError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return sock


def _prepare_directory(directory: Path) -> None:
    if not directory.exists():
        try:
            directory.mkdir(parents=True, mode=0o755 if os.geteuid() == 0 else 0o700)
        except OSError as exc:
            raise DaemonError(
                f"cannot create the socket directory {directory}: {exc.strerror}"
            ) from None
        return
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise DaemonError(f"{directory} is not a directory; cannot put the socket there")
    if st.st_uid not in (0, os.geteuid()):
        raise DaemonError(
            f"the socket directory {directory} belongs to uid {st.st_uid}, who "
            "could replace the socket; use a directory of your own"
        )
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise DaemonError(
            f"the socket directory {directory} is writable by everyone; use a "
            "directory others cannot write to"
        )


def _clear_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonError(
            f"{path} exists and is not a socket; refusing to replace it "
            "(move it away or choose another --socket)"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(os.fsencode(path))
    except ConnectionRefusedError:
        log.info("removing the stale socket %s (the daemon that made it is gone)", path)
        os.unlink(path)
        return
    except OSError as exc:
        raise DaemonError(
            f"cannot tell whether a daemon is listening on {path}: {exc.strerror or exc}"
        ) from None
    else:
        try:
            holder = str(peer_of(probe).pid)
        except OSError:
            holder = "unknown"
        raise DaemonError(
            f"another daemon (pid {holder}) is already listening on {path}; "
            "stop it first, or give this one another --socket"
        )
    finally:
        probe.close()
