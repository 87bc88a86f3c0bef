"""Which process instance holds which socket, refreshed on its own interval.

The method (docs/connections.md says it with its measured cost):

1. The socket tables: for each network namespace in use, one process of it is picked and its
   /proc/PID/net/{tcp,tcp6,udp,udp6,unix} are read (net_tables.py): every socket of that
   namespace with its inode, in a few reads, whatever the number of processes.
2. Which process holds an inode is only in /proc/PID/fd/N → "socket:[INODE]", one readlink
   per fd. Those are read only for processes that are new, or whose fd count changed since
   their last walk — `stat("/proc/PID/fd").st_size` is the count on Linux ≥ 6.2 (older kernels:
   the length of a directory listing, no readlink). A process that closed one fd and opened a
   socket between two refreshes keeps its count: a tcp/udp socket that appears in the tables
   and that no walked process holds is looked for, once, among the processes of its uid; and
   a rotating 1/`ROTATION` of the processes is re-walked each refresh (unix sockets have no
   uid in their table). What a walk found is kept per instance.
3. The holders' inodes joined with the tables give the connections; they are compared with
   the previous refresh by the kernel's undecoded text, so only new and changed sockets are
   decoded and written.

The readlinks of one refresh are capped (`link_budget`): a process with 100,000 fds is walked,
but processes past the cap wait for the next refresh instead of stretching this one.
Processes and fds vanish between two reads all the time: they are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from daemoneye.collector.net_tables import (
    TABLE_FILES,
    RawSocket,
    decode_endpoint,
    parse_table,
    scope_of,
)
from daemoneye.models import (
    Connection,
    ConnectionsDelta,
    ConnectionStats,
    ProcessKey,
)

log = logging.getLogger(__name__)

# Each refresh also re-walks the processes whose pid falls in this refresh's slot of ROTATION:
# a full re-walk every ROTATION refreshes, spread out (unix sockets swapped at the same count).
ROTATION = 60
# readlink calls one refresh may spend; the processes left over are walked next time.
DEFAULT_LINK_BUDGET = 400_000
# Processes one refresh walks looking for new tcp/udp sockets nobody was seen opening (the
# youngest processes of the socket's uid first).
SEARCH_WALKS = 32
_SOCKET_PREFIX = "socket:["
_NO_INODES: frozenset[int] = frozenset()  # most processes hold no socket: one set for all


@dataclass(slots=True)
class _Holder:
    """What the last walk of one instance found."""

    netns: int | None
    fd_count: int | None  # None: walk it at the next refresh
    inodes: frozenset[int] = frozenset()
    walked_at: int = -1  # the refresh that last walked it


@dataclass(slots=True)
class _Counters:
    walked: int = 0
    links: int = 0
    denied: int = 0
    vanished: int = 0


@dataclass(frozen=True, slots=True)
class _Located:
    """A socket from a table, with the namespace it was listed in."""

    raw: RawSocket
    netns: int | None


def fd_count_from_stat(proc_root: str) -> bool:
    """True when this kernel reports a process's fd count as the size of /proc/PID/fd."""
    try:
        return os.stat(f"{proc_root}/self/fd").st_size > 0
    except OSError:
        return False


@dataclass(slots=True)
class ConnectionTracker:
    """Keeps the connections of the live instances; `refresh` returns what changed."""

    proc_root: str = "/proc"
    clock: Callable[[], float] = time.time
    link_budget: int = DEFAULT_LINK_BUDGET
    rotation: int = ROTATION
    # Whether st_size of /proc/PID/fd is the fd count (None: find out at the first refresh).
    count_by_stat: bool | None = None
    # The collector's own pid, never walked: procmond holds a stat descriptor per live
    # process, so its fd count moves with every start and exit on the host, and walking it
    # was 20,000 readlinks a refresh at 10,000 processes. It holds no network socket (the
    # pair to its agent and the kernel event socket are not in the inet tables).
    own_pid: int | None = None
    _holders: dict[ProcessKey, _Holder] = field(default_factory=dict)
    _open: dict[tuple[ProcessKey, int], Connection] = field(default_factory=dict)
    _raw: dict[tuple[ProcessKey, int], RawSocket] = field(default_factory=dict)
    _refreshes: int = 0
    _searched: set[int] = field(default_factory=set)  # new sockets already looked for

    def prime(self, known: Iterable[Connection]) -> None:
        """Start from what the store says is open (after a restart): sockets still held keep
        their rows and first_seen; the others are closed by the first refresh."""
        for conn in known:
            self._open[(conn.key, conn.inode)] = conn

    def snapshot(self) -> dict[ProcessKey, tuple[Connection, ...]]:
        """The open connections by instance (a new dict; the Connections are immutable)."""
        by_key: dict[ProcessKey, list[Connection]] = {}
        for (key, _inode), conn in self._open.items():
            by_key.setdefault(key, []).append(conn)
        return {key: tuple(conns) for key, conns in by_key.items()}

    def refresh(
        self,
        live: Iterable[ProcessKey],
        netns_of: Callable[[ProcessKey], int | None] | None = None,
    ) -> ConnectionsDelta:
        """Walk what needs walking among the `live` instances, read the tables, and return the
        connections opened, changed and closed since the last refresh. `netns_of` gives the
        network namespace the collector already read for an instance (its record's net_ns,
        read through the instance's pinned directory), so that a new holder costs no stat of
        its ns/net; None from it (or no `netns_of`) reads the link here."""
        started = time.perf_counter()
        now = self.clock()
        if self.count_by_stat is None:
            self.count_by_stat = fd_count_from_stat(self.proc_root)
        counters = _Counters()
        own = self.own_pid
        live_keys = [key for key in live if key.pid != own]
        live_set = set(live_keys)
        for gone in [key for key in self._holders if key not in live_set]:
            del self._holders[gone]
        to_walk = self._due_for_walk(live_keys, counters, netns_of)
        self._walk(to_walk, counters)
        sockets, namespaces = self._read_tables(live_keys, counters)
        self._search_new_sockets(sockets, live_keys, set(to_walk), counters)
        listening = _listening_ports(sockets.values())
        opened: list[Connection] = []
        changed: list[Connection] = []
        current: dict[tuple[ProcessKey, int], Connection] = {}
        current_raw: dict[tuple[ProcessKey, int], RawSocket] = {}
        held: set[int] = set()
        for key, holder in self._holders.items():
            for inode in holder.inodes:
                located = sockets.get(inode)
                if located is None:
                    continue
                held.add(inode)
                slot = (key, inode)
                before = self._open.get(slot)
                current_raw[slot] = located.raw
                if before is not None and self._raw.get(slot) == located.raw:
                    current[slot] = before
                    continue
                conn = _connection(key, located, listening, now, before)
                if before is None:
                    opened.append(conn)
                elif _differs(before, conn):
                    changed.append(conn)
                else:
                    conn = before  # restored from the store: same socket, same values
                current[slot] = conn
        closed = [_ended(conn, now) for slot, conn in self._open.items() if slot not in current]
        self._open, self._raw = current, current_raw
        self._refreshes += 1
        stats = ConnectionStats(
            duration_s=time.perf_counter() - started,
            sockets=len(sockets),
            namespaces=namespaces,
            processes_walked=counters.walked,
            links_read=counters.links,
            unresolved=len(sockets) - len(held),
            denied=counters.denied,
            vanished=counters.vanished,
        )
        return ConnectionsDelta(now, tuple(opened), tuple(changed), tuple(closed), stats)

    def _search_new_sockets(
        self,
        sockets: dict[int, _Located],
        live_keys: list[ProcessKey],
        walked: set[ProcessKey],
        counters: _Counters,
    ) -> None:
        """tcp and udp sockets that appeared in the tables and that no walked process holds
        were opened by a process whose fd count did not change (it closed another fd): walk
        the processes of the socket's uid (the owner of /proc/PID), youngest first, up to
        SEARCH_WALKS of them, once per such socket: a socket nobody readable holds is looked
        for once, not at every refresh."""
        self._searched &= sockets.keys()
        held: set[int] = set()
        for holder in self._holders.values():
            held.update(holder.inodes)
        wanted = {
            inode: located.raw.uid
            for inode, located in sockets.items()
            if inode not in held
            and inode not in self._searched
            and located.raw.uid is not None
            and located.raw.protocol != "unix"
        }
        if not wanted:
            return
        self._searched.update(wanted)
        uids = set(wanted.values())
        # The youngest first (a new process is the likeliest to open sockets; old ones are
        # covered by the rotation), then the least recently walked; /proc/PID's owner is read
        # only until enough are found.
        order = sorted(
            (key for key in live_keys if key not in walked and key in self._holders),
            key=lambda key: (-key.start_time, self._holders[key].walked_at),
        )
        candidates: list[ProcessKey] = []
        for key in order:
            try:
                owner = os.stat(f"{self.proc_root}/{key.pid}").st_uid
            except OSError:
                continue
            if owner in uids:
                candidates.append(key)
                if len(candidates) == SEARCH_WALKS:
                    break
        self._walk(candidates[:SEARCH_WALKS], counters)

    # -- which processes to walk -------------------------------------------------------------
    def _due_for_walk(
        self,
        live_keys: list[ProcessKey],
        counters: _Counters,
        netns_of: Callable[[ProcessKey], int | None] | None,
    ) -> list[ProcessKey]:
        due: list[ProcessKey] = []
        slot = self._refreshes % self.rotation
        for key in live_keys:
            holder = self._holders.get(key)
            if holder is None:
                netns = netns_of(key) if netns_of is not None else None
                if netns is None:
                    netns = self._netns(key.pid, counters)
                holder = _Holder(netns, None)
                if holder.netns is None and not os.path.exists(f"{self.proc_root}/{key.pid}"):
                    continue
                self._holders[key] = holder
                due.append(key)
                continue
            count = self._fd_count(key.pid, counters)
            if count is None:
                continue
            if count != holder.fd_count or key.pid % self.rotation == slot:
                holder.fd_count = count  # a walk that fails is not retried until it changes
                due.append(key)
        return due

    def _netns(self, pid: int, counters: _Counters) -> int | None:
        try:
            return os.stat(f"{self.proc_root}/{pid}/ns/net").st_ino
        except FileNotFoundError:
            counters.vanished += 1
        except PermissionError:
            counters.denied += 1
        except OSError as exc:
            log.debug("netns of pid %d: %s", pid, exc)
        return None

    def _fd_count(self, pid: int, counters: _Counters) -> int | None:
        path = f"{self.proc_root}/{pid}/fd"
        try:
            if self.count_by_stat:
                return os.stat(path).st_size
            return len(os.listdir(path))
        except (FileNotFoundError, ProcessLookupError):
            counters.vanished += 1
        except PermissionError:
            counters.denied += 1
        except OSError as exc:
            log.debug("fd count of pid %d: %s", pid, exc)
        return None

    def _walk(self, keys: list[ProcessKey], counters: _Counters) -> None:
        for key in keys:
            holder = self._holders[key]
            if counters.links >= self.link_budget:
                holder.fd_count = None  # next refresh
                continue
            walked = self._socket_inodes(key.pid, counters)
            if walked is None:
                continue
            holder.fd_count, holder.inodes = walked
            holder.walked_at = self._refreshes
            counters.walked += 1

    def _socket_inodes(self, pid: int, counters: _Counters) -> tuple[int, frozenset[int]] | None:
        """(fd count, socket inodes) of one process, or None when it cannot be read."""
        try:
            dir_fd = os.open(f"{self.proc_root}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, ProcessLookupError):
            counters.vanished += 1
            return None
        except PermissionError:
            counters.denied += 1
            return None
        inodes: set[int] = set()
        try:
            names = os.listdir(dir_fd)
            for name in names:
                counters.links += 1
                try:
                    target = os.readlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # closed between the listing and the readlink
                if target.startswith(_SOCKET_PREFIX) and target.endswith("]"):
                    try:
                        inodes.add(int(target[len(_SOCKET_PREFIX) : -1]))
                    except ValueError:
                        continue
            count = os.fstat(dir_fd).st_size if self.count_by_stat else len(names)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESRCH):
                counters.vanished += 1
            elif exc.errno in (errno.EACCES, errno.EPERM):
                counters.denied += 1
            else:
                log.debug("fds of pid %d: %s", pid, exc)
            return None
        finally:
            os.close(dir_fd)
        return count, frozenset(inodes) if inodes else _NO_INODES

    # -- the tables ----------------------------------------------------------------------------
    def _read_tables(
        self, live_keys: list[ProcessKey], counters: _Counters
    ) -> tuple[dict[int, _Located], int]:
        """Every socket of every namespace some live holder is in, by inode."""
        pids_by_netns: dict[int, list[int]] = {}
        for key in live_keys:
            holder = self._holders.get(key)
            if holder is not None and holder.netns is not None:
                pids_by_netns.setdefault(holder.netns, []).append(key.pid)
        sockets: dict[int, _Located] = {}
        for netns, pids in pids_by_netns.items():
            for pid in pids:
                tables = self._tables_of(pid, counters)
                if tables is None:
                    continue
                for raw in tables:
                    sockets[raw.inode] = _Located(raw, netns)
                break
        return sockets, len(pids_by_netns)

    def _tables_of(self, pid: int, counters: _Counters) -> list[RawSocket] | None:
        found: list[RawSocket] = []
        for name in TABLE_FILES:
            try:
                with open(
                    f"{self.proc_root}/{pid}/net/{name}", encoding="utf-8", errors="surrogateescape"
                ) as table:
                    text = table.read()
            except FileNotFoundError:
                if name != "unix" and not name.endswith("6"):
                    counters.vanished += 1
                    return None
                continue  # no IPv6 (or no unix) in this kernel
            except ProcessLookupError:
                counters.vanished += 1
                return None
            except PermissionError:
                counters.denied += 1
                return None
            found.extend(parse_table(name, text))
        return found


def _listening_ports(sockets: Iterable[_Located]) -> frozenset[tuple[int | None, str]]:
    """(netns, local port hex) of every listening tcp socket: accepted sockets share it."""
    return frozenset(
        (located.netns, located.raw.local.rpartition(":")[2])
        for located in sockets
        if located.raw.state == "LISTEN"
        and located.raw.protocol != "unix"
        and located.raw.local is not None
    )


def _direction(located: _Located, listening: frozenset[tuple[int | None, str]]) -> str | None:
    raw = located.raw
    if raw.state == "LISTEN":
        return "listen"
    if not raw.protocol.startswith("tcp") or raw.local is None:
        return None
    port = raw.local.rpartition(":")[2]
    return "inbound" if (located.netns, port) in listening else "outbound"


def _connection(
    key: ProcessKey,
    located: _Located,
    listening: frozenset[tuple[int | None, str]],
    now: float,
    before: Connection | None,
) -> Connection:
    raw = located.raw
    if raw.protocol == "unix":
        local_address, local_port = raw.local, None
        remote_address, remote_port = None, None
    else:
        local_address, local_port = decode_endpoint(raw.local or "")
        remote_address, remote_port = decode_endpoint(raw.remote or "")
    return Connection(
        pid=key.pid,
        start_time=key.start_time,
        protocol=raw.protocol,
        local_address=local_address,
        local_port=local_port,
        remote_address=remote_address,
        remote_port=remote_port,
        state=raw.state,
        inode=raw.inode,
        netns=located.netns,
        direction=_direction(located, listening),
        remote_scope=scope_of(remote_address),
        first_seen=before.first_seen if before is not None else now,
        last_seen=now,
    )


_COMPARED = (
    "protocol",
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "state",
    "netns",
    "direction",
)


def _differs(before: Connection, after: Connection) -> bool:
    return any(getattr(before, name) != getattr(after, name) for name in _COMPARED)


def _ended(conn: Connection, now: float) -> Connection:
    return dataclasses.replace(conn, ended_at=now)


def live_connections(
    snapshot: Mapping[ProcessKey, tuple[Connection, ...]],
) -> list[Connection]:
    """Every open connection of a snapshot, ordered by pid then inode."""
    return sorted(
        (conn for conns in snapshot.values() for conn in conns),
        key=lambda conn: (conn.pid, conn.start_time, conn.inode),
    )
