"""Who is on the other end of a connection, and what they may do (ARCHITECTURE.md §5).

The kernel tells us: SO_PEERCRED gives the pid, uid and gid the peer had when it called
connect(), SO_PEERGROUPS its supplementary groups at that moment. Nothing the client says is
trusted. Readers may call every read method; admins — uid 0, the daemon's own uid, or members
of the configured admin group — may also call the admin methods.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
import struct
from dataclasses import dataclass

log = logging.getLogger(__name__)

ROLE_ADMIN = "admin"
ROLE_READER = "reader"

# Not exported by Python's socket module on every version; the value is fixed by the kernel ABI.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_UCRED = struct.Struct("3i")
_GID = struct.Struct("I")


@dataclass(frozen=True, slots=True)
class Peer:
    """The credentials of a connected client, as the kernel recorded them at connect()."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]

    def __str__(self) -> str:
        return f"pid {self.pid} uid {self.uid}"


def peer_of(sock: socket.socket) -> Peer:
    """The peer's credentials. Raises OSError when the socket has none (not AF_UNIX)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid=pid, uid=uid, gid=gid, groups=_peer_groups(sock, uid, gid))


def _peer_groups(sock: socket.socket, uid: int, gid: int) -> tuple[int, ...]:
    for size in (256 * _GID.size, 65536 * _GID.size):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == 34:  # ERANGE: more groups than fit, ask again with more room
                continue
            break  # ENOPROTOOPT: a kernel before 4.13; use the user database instead
        count = len(raw) // _GID.size
        return tuple(_GID.unpack_from(raw, i * _GID.size)[0] for i in range(count))
    try:
        return tuple(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except (KeyError, OSError):
        return ()


def group_id(name: str) -> int | None:
    """The gid of group `name`, or None when there is no such group (or no name)."""
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def role_of(peer: Peer, *, daemon_uid: int, admin_gid: int | None) -> str:
    """`admin` for uid 0, the daemon's uid and members of the admin group; else `reader`."""
    if peer.uid in (0, daemon_uid):
        return ROLE_ADMIN
    if admin_gid is not None and (peer.gid == admin_gid or admin_gid in peer.groups):
        return ROLE_ADMIN
    return ROLE_READER


def actor(peer: Peer) -> str:
    """How the audit log and alert state changes name the peer: "uid 0 pid 123"."""
    return f"uid {peer.uid} pid {peer.pid}"
