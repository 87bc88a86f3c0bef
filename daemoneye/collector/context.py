"""What a process runs in, read once per instance (and again after an exec): its cgroup and from
it the container or systemd unit, its namespaces, its login session, what its stdin, stdout and
stderr are, and the allow-listed variables of its environment.

The parsers are plain functions over the bytes /proc gives (tested with hostile samples); the
`ContextReader` does the reads through the instance's pinned /proc/<pid> directory descriptor
(collector/details.py) and keeps what is worth keeping between instances: PID 1's namespaces
(read once), the socket tables of a network namespace (read only when a stdio fd is a socket,
at most once per table per scan) and the SSH client of a session leader.

Everything here is hostile input: cgroup names can be chosen by anyone with a delegated
subtree, unix socket paths by anyone who binds one, the environment by the process itself.
Text is decoded like every other /proc text (procfs.decode) and views escape it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

from daemoneye.collector.bounded import keep
from daemoneye.collector.cgroup_ids import CgroupIds
from daemoneye.collector.kernel_context import FD_CLOSED, FD_OPEN, KernelContext, KernelFd
from daemoneye.collector.procfs import VANISHED_ERRORS, decode
from daemoneye.models import DEFAULT_ENVIRONMENT

# /proc/<pid>/environ is read up to this many bytes: the kernel's default exec limit for argv and
# environment together (a quarter of an 8 MiB stack). One variable is at most 128 KiB
# (MAX_ARG_STRLEN), and is kept whole: a cut value could hide a path at its end.
ENVIRON_MAX_BYTES = 2 * 1024 * 1024
NAMESPACES = ("pid", "mnt", "net", "user")
STDIO = ("stdin", "stdout", "stderr")

_LOGINUID_UNSET = 4294967295  # (uid_t)-1: no login recorded for this process's session
_READ_CHUNK = 65536
_SOCKET_TABLES = ("tcp", "tcp6", "udp", "udp6", "unix")
_TCP_STATES = {
    1: "established",
    2: "syn-sent",
    3: "syn-recv",
    4: "fin-wait1",
    5: "fin-wait2",
    6: "time-wait",
    7: "close",
    8: "close-wait",
    9: "last-ack",
    10: "listen",
    11: "closing",
}
_UNIX_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}
_SESSIONS_MAX = 4096
_TEXT_MAX_BYTES = 64 * 1024  # cgroup, loginuid: a few dozen bytes; a cgroup path is < 4 KiB
_T = TypeVar("_T")
_V = TypeVar("_V", str | None, int | None)
_SHARED_MAX = 16384
_SHARED_TEXT_MAX = 512
_CGROUPS_MAX = 4096


# -- cgroup → container or unit ---------------------------------------------------------------

_HEX_ID = r"[0-9a-f]{64}"
# (runtime, pattern over one path component); the id is group 1. Order matters: the first match
# of the innermost component wins. conmon and lxc.monitor run on the host beside a container.
_CONTAINER_COMPONENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("docker", re.compile(rf"docker-({_HEX_ID})\.scope")),
    ("podman", re.compile(rf"libpod-({_HEX_ID})(?:\.scope)?")),
    ("containerd", re.compile(rf"cri-containerd-({_HEX_ID})\.scope")),
    ("cri-o", re.compile(rf"crio-({_HEX_ID})\.scope")),
    ("lxc", re.compile(r"lxc\.payload\.(.+)")),
)
# cgroupfs layouts, where the runtime is the parent component: /docker/<id>, /lxc/<name>,
# /kubepods/<qos>/pod<uid>/<id>.
_CONTAINER_PARENTS = {"docker": "docker", "lxc": "lxc", "libpod_parent": "podman"}
_KUBEPODS = re.compile(r"kubepods")
_UNIT_SUFFIXES = (".service", ".scope")


@dataclass(frozen=True, slots=True)
class CgroupContext:
    """What the cgroup path says: the path itself, a container (runtime and id) and the
    innermost systemd unit (a .service or .scope)."""

    path: str | None
    runtime: str | None
    container_id: str | None
    unit: str | None


def pick_cgroup_path(raw: bytes) -> str | None:
    """The process's cgroup path from /proc/<pid>/cgroup: the unified (v2, `0::`) line, unless
    it is the root while a v1 hierarchy says more (hybrid hosts); then `name=systemd`'s, then
    the longest v1 path. Only the first two colons separate fields: a path may hold colons."""
    unified: str | None = None
    systemd: str | None = None
    longest: str | None = None
    for line in raw.split(b"\n"):
        parts = line.split(b":", 2)
        if len(parts) != 3:
            continue
        path = decode(parts[2])
        if parts[0] == b"0" and not parts[1]:
            unified = path
        elif parts[1] == b"name=systemd":
            systemd = path
        elif longest is None or len(path) > len(longest):
            longest = path
    for candidate in (unified, systemd, longest):
        if candidate is not None and candidate != "/":
            return candidate
    return unified or systemd or longest


def classify_cgroup(path: str | None) -> CgroupContext:
    """The container and unit a cgroup path names. A component no runtime pattern matches is
    not a container; `ContextReader` calls a process in a foreign pid namespace with no known
    runtime 'unknown'."""
    if not path:
        return CgroupContext(path, None, None, None)
    components = [c for c in path.split("/") if c]
    runtime: str | None = None
    container_id: str | None = None
    unit: str | None = None
    for index, component in enumerate(components):
        if component.endswith(_UNIT_SUFFIXES):
            unit = component
        found = _container_in(components, index)
        if found is not None:
            runtime, container_id = found
            unit = component if component.endswith(_UNIT_SUFFIXES) else unit
            # processes of a container's own systemd sit deeper; the container is the outer one
            tail_unit = next(
                (c for c in reversed(components[index + 1 :]) if c.endswith(_UNIT_SUFFIXES)),
                None,
            )
            return CgroupContext(path, runtime, container_id, tail_unit or unit)
    return CgroupContext(path, runtime, container_id, unit)


def _container_in(components: list[str], index: int) -> tuple[str, str] | None:
    component = components[index]
    for runtime, pattern in _CONTAINER_COMPONENTS:
        match = pattern.fullmatch(component)
        if match is not None:
            return runtime, match.group(1)
    parent = components[index - 1] if index else ""
    if parent in _CONTAINER_PARENTS and (
        re.fullmatch(_HEX_ID, component) or _CONTAINER_PARENTS[parent] == "lxc"
    ):
        return _CONTAINER_PARENTS[parent], component
    if (
        index >= 2
        and re.fullmatch(_HEX_ID, component)
        and components[index - 1].startswith("pod")
        and any(_KUBEPODS.match(c) for c in components[:index])
    ):
        return "kubernetes", component
    return None


# -- namespaces, session, tty -----------------------------------------------------------------


def parse_ns_link(target: bytes) -> int | None:
    """The inode number in a /proc/<pid>/ns/* link target such as b'pid:[4026531836]'."""
    start, end = target.find(b"["), target.rfind(b"]")
    if start < 0 or end <= start:
        return None
    try:
        return int(target[start + 1 : end])
    except ValueError:
        return None


def foreign_namespaces(
    namespaces: Mapping[str, int | None], init: Mapping[str, int | None]
) -> str | None:
    """The names of the namespaces that differ from init's, space-separated in NAMESPACES order
    ('' when none does); None when init's (or all of this process's) could not be read."""
    if not init or all(value is None for value in namespaces.values()):
        return None
    return " ".join(
        name
        for name in NAMESPACES
        if namespaces.get(name) is not None
        and init.get(name) is not None
        and namespaces[name] != init[name]
    )


def session_fields(raw_stat: bytes) -> tuple[int, int]:
    """(session id, tty_nr): stat fields 6 and 7, after the name's last ')'."""
    rest = raw_stat[raw_stat.rfind(b")") + 2 :].split(None, 5)
    return int(rest[3]), int(rest[4])


def tty_name(tty_nr: int) -> str | None:
    """The controlling terminal's name from stat's tty_nr (a dev_t): 'pts/3', 'tty1',
    'ttyS0', 'console', or 'MAJOR:MINOR' for other devices; None when there is none."""
    if tty_nr == 0:
        return None
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    if major == 5 and minor == 1:
        return "console"
    return f"{major}:{minor}"


def parse_loginuid(raw: bytes) -> int | None:
    """/proc/<pid>/loginuid; None when unset (-1) or malformed."""
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return None if value == _LOGINUID_UNSET or value < 0 else value


# -- environment ------------------------------------------------------------------------------


def allowed_environment(raw: bytes, allowed: Iterable[str]) -> dict[str, str]:
    """The allow-listed variables of an environ block (NUL-separated NAME=value). Nothing else
    is returned. A name set more than once keeps every value, newline-joined in order (the
    dynamic loader and getenv() do not agree on which one counts)."""
    return _pick_environment(raw, [(name, b"\0" + os.fsencode(name) + b"=") for name in allowed])


def _pick_environment(raw: bytes, needles: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    block = b"\0" + raw
    found: dict[str, str] = {}
    for name, needle in needles:
        if needle not in block:
            continue
        values = []
        at = block.find(needle)
        while at >= 0:
            start = at + len(needle)
            end = block.find(b"\0", start)
            values.append(decode(block[start : end if end >= 0 else len(block)]))
            at = block.find(needle, start)
        if values:
            found[name] = "\n".join(values)
    return found


def environment_json(found: Mapping[str, str]) -> str:
    """The stored form: a compact JSON object (rules read it with json_extract)."""
    if not found:
        return "{}"
    return json.dumps(found, ensure_ascii=False, separators=(",", ":"))


def ssh_client(ssh_connection: str | None) -> str | None:
    """'ADDRESS PORT' of the client from SSH_CONNECTION ('client port server port'); None
    unless the value is well formed (it is the process's own word, never trusted as text)."""
    if not ssh_connection:
        return None
    parts = ssh_connection.split(" ")
    if len(parts) != 4 or not parts[1].isdigit() or not 0 < int(parts[1]) < 65536:
        return None
    try:
        address = ipaddress.ip_address(parts[0])
    except ValueError:
        return None
    return f"{address_text(address)} {int(parts[1])}"


# -- stdio and sockets -----------------------------------------------------------------------

_TTY_PATHS = re.compile(r"/dev/(pts/[0-9]+|tty[A-Za-z]*[0-9]*|console)")


def stdio_kind(target: str) -> str:
    """What one fd link target is, as '<kind>:<what>': 'tty:/dev/pts/3', 'pipe:[1234]',
    'file:/var/log/x', 'socket:[5678]' (resolved by `describe_socket`), 'other:anon_inode:…'."""
    if target.startswith("socket:["):
        return target
    if target.startswith("pipe:["):
        return target
    if _TTY_PATHS.fullmatch(target):
        return "tty:" + target
    if target.startswith("/"):
        return "file:" + target
    return "other:" + target


def socket_inode(target: str) -> int | None:
    if not target.startswith("socket:[") or not target.endswith("]"):
        return None
    try:
        return int(target[8:-1])
    except ValueError:
        return None


def _inet_address(hex_address: str, port_hex: str) -> str:
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":  # /proc prints each 32-bit word in host byte order
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    port = int(port_hex, 16)
    return f"[{address_text(address)}]:{port}" if address.version == 6 else f"{address}:{port}"


def address_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as people read it: an IPv4-mapped IPv6 address keeps its dotted quad
    ('::ffff:10.0.0.9', where Python 3.11 prints '::ffff:a00:9')."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def parse_inet_table(raw: bytes, protocol: str) -> dict[int, str]:
    """/proc/<pid>/net/{tcp,tcp6,udp,udp6}: socket inode → 'tcp 10.0.0.5:39122->10.0.0.9:4444
    established'. Malformed lines are skipped (nothing in these lines is process text)."""
    by_inode: dict[int, str] = {}
    for line in raw.split(b"\n")[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            local_hex, local_port = parts[1].decode("ascii").split(":")
            remote_hex, remote_port = parts[2].decode("ascii").split(":")
            local = _inet_address(local_hex, local_port)
            remote = _inet_address(remote_hex, remote_port)
            state = int(parts[3], 16)
            inode = int(parts[9])
        except (ValueError, UnicodeDecodeError):
            continue
        if protocol == "tcp":
            text = f"tcp {local}->{remote} {_TCP_STATES.get(state, str(state))}"
            if state == 10:
                text = f"tcp {local} listen"
        else:
            unconnected = remote.startswith(("0.0.0.0:", "[::]:"))
            text = f"udp {local}" if unconnected else f"udp {local}->{remote}"
        if inode:
            by_inode[inode] = text
    return by_inode


def parse_unix_table(raw: bytes) -> dict[int, str]:
    """/proc/<pid>/net/unix: inode → 'unix stream /run/x.sock'. The kernel prints a socket's
    path raw, so a path with a newline can forge a line claiming another socket's inode: an
    inode listed twice is described without a path."""
    by_inode: dict[int, str] = {}
    forged: set[int] = set()
    for line in raw.split(b"\n")[1:]:
        parts = line.split(None, 7)  # the inode is space-padded; the path may hold spaces
        if len(parts) < 7:
            continue
        try:
            kind = _UNIX_TYPES.get(int(parts[4], 16), "unix")
            inode = int(parts[6])
        except ValueError:
            continue
        path = decode(parts[7]) if len(parts) > 7 else ""
        if inode in by_inode:
            forged.add(inode)
        by_inode[inode] = f"unix {kind} {path}".rstrip()
    for inode in forged:
        by_inode[inode] = "unix (path not trusted: the socket is listed twice)"
    return by_inode


# -- the reader -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """Everything this module reads for one instance, named like ProcessRecord's fields."""

    cgroup: str | None = None
    container_runtime: str | None = None
    container_id: str | None = None
    unit: str | None = None
    pid_ns: int | None = None
    mnt_ns: int | None = None
    net_ns: int | None = None
    user_ns: int | None = None
    ns_foreign: str | None = None
    session_id: int | None = None
    tty: str | None = None
    loginuid: int | None = None
    ssh_client: str | None = None
    ssh_source: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    environment: str | None = None


# Context's fields in order, as a tuple (ContextReader.read_values).
ContextValues = tuple[
    str | None,  # cgroup
    str | None,  # container_runtime
    str | None,  # container_id
    str | None,  # unit
    int | None,  # pid_ns
    int | None,  # mnt_ns
    int | None,  # net_ns
    int | None,  # user_ns
    str | None,  # ns_foreign
    int | None,  # session_id
    str | None,  # tty
    int | None,  # loginuid
    str | None,  # ssh_client
    str | None,  # ssh_source
    str | None,  # stdin
    str | None,  # stdout
    str | None,  # stderr
    str | None,  # environment
]
# (pid, mnt, net, user namespace inodes, ns_foreign, whether the pid namespace is foreign)
_NamespaceSet = tuple[int | None, int | None, int | None, int | None, str | None, bool]
_MISSING = object()

NO_CONTEXT = Context()
_NO_CGROUP = CgroupContext(None, None, None, None)
_NO_NAMESPACES: _NamespaceSet = (None, None, None, None, None, False)
_FD_NAMES = (b"fd/0", b"fd/1", b"fd/2")


class ContextReader:
    """Reads a `Context` through a /proc/<pid> directory descriptor. Not thread-safe: one per
    collector thread (the scanner's and the event source's each own one). `new_scan()` marks
    the start of a scan: socket tables read before it are read again when next needed."""

    def __init__(
        self,
        proc_root: bytes = b"/proc",
        environment: Iterable[str] = DEFAULT_ENVIRONMENT,
        *,
        init_pid: int = 1,
        cgroup_mounts: Mapping[int, bytes] | None = None,
    ) -> None:
        self.environment = tuple(environment)
        self._needles = [(name, b"\0" + os.fsencode(name) + b"=") for name in self.environment]
        self._root = proc_root
        self._init_pid = init_pid  # whose namespaces count as the host's (tests pick another)
        self._init_ns: dict[str, int | None] | None = None
        self._generation = 0
        # (net namespace, table) → (generation, read again for a miss, inode → description)
        self._tables: dict[tuple[int | None, str], tuple[int, bool, dict[int, str]]] = {}
        self._shared: dict[object, object] = {}  # see _share
        # the cgroup file's bytes → what they say: thousands of processes share a few cgroups
        self._cgroups: dict[bytes, CgroupContext] = {}
        # the kernel's cgroup ids → what their path says (see _cgroup_of)
        self._cgroup_ids: CgroupIds[CgroupContext] = CgroupIds(cgroup_mounts)
        # the kernel's namespace inodes → what they say; a stdio device → what its link says
        self._ns_ids: dict[tuple[int | None, ...], _NamespaceSet] = {}
        self._devices: dict[tuple[int, int, int], str] = {}
        # (mount id, dentry, filesystem, inode, generation) of a regular file on stdio → what
        # its link said, for this scan or batch only (see _file_known)
        self._files: dict[tuple[int | None, int, int, int, int], str] = {}
        # the four namespace links' targets → what they say (see _namespaces_of)
        self._ns_sets: dict[tuple[bytes | None, ...], _NamespaceSet] = {}
        # a loginuid file's bytes → the uid; a stdio link's target (not a socket) → its kind
        self._loginuids: dict[bytes, object] = {}
        self._stdio_kinds: dict[bytes, str] = {}
        self._ssh_wanted = "SSH_CONNECTION" in self.environment
        # session id → (leader's start ticks, ssh client or None)
        self._sessions: dict[int, tuple[int, str | None]] = {}

    def new_scan(self) -> None:
        self._generation += 1
        self._files.clear()

    def init_namespaces(self) -> dict[str, int | None]:
        """PID 1's namespaces, read once ({} when not readable: user mode)."""
        if self._init_ns is None:
            try:
                fd = os.open(
                    self._root + b"/" + str(self._init_pid).encode(),
                    os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                )
            except OSError:
                self._init_ns = {}
            else:
                try:
                    found = self._namespaces(fd)
                finally:
                    os.close(fd)
                self._init_ns = found if any(v is not None for v in found.values()) else {}
        return self._init_ns

    def read(self, dir_fd: int, raw_stat: bytes, start_ticks: int) -> Context:
        """The context of the instance behind `dir_fd`; what cannot be read is None. Raises
        nothing for a process that vanishes meanwhile: its fields stay None."""
        return Context(*self.read_values(dir_fd, raw_stat, start_ticks))

    def read_values(
        self,
        dir_fd: int | None,
        raw_stat: bytes | None,
        start_ticks: int,
        kernel: KernelContext | None = None,
        environ: bytes | None = None,
    ) -> ContextValues:
        """`read` as a tuple in Context's field order (what details.py splices into a
        ProcessDetails). The per-process work is the reads; what the bytes say is looked up
        by the bytes (namespace links, cgroup, loginuid, stdio targets), so text shared by
        thousands of processes is decoded and classified once, and the values it gives are
        one object each.

        `kernel` is what the exec capture read at the exec (collector/kernel_context.py): what
        it settles is not read again. Without a directory (the process was gone before /proc
        could be read) only the kernel's values and what is known of them are given.
        `environ` is the environment block the capture took at the exec (not read again)."""
        if kernel is not None and None not in kernel.namespaces:
            namespaces = self._namespaces_known(kernel.namespaces)
        elif dir_fd is not None:
            namespaces = self._namespaces_of(dir_fd)
        else:
            namespaces = _NO_NAMESPACES
        pid_ns, mnt_ns, net_ns, user_ns, foreign, pid_foreign = namespaces
        cgroup = self._cgroup_of(dir_fd, kernel)
        runtime = cgroup.runtime
        if runtime is None and pid_foreign:
            runtime = "unknown"
        session_id, tty_nr = session_fields(raw_stat) if raw_stat is not None else (None, 0)
        found: dict[str, str] | None = None
        if environ is not None:
            found = _pick_environment(environ, self._needles) if self.environment else {}
        elif dir_fd is not None:
            found = self._environment(dir_fd)
        client, source = None, None
        if found is not None and self._ssh_wanted:
            client = ssh_client(found.get("SSH_CONNECTION"))
            source = "process" if client is not None else None
            if client is None and session_id and dir_fd is not None:
                client = self._session_ssh_client(session_id, start_ticks, dir_fd)
                source = "session leader" if client is not None else None
        if kernel is not None and kernel.loginuid is not None:
            loginuid = None if kernel.loginuid == _LOGINUID_UNSET else kernel.loginuid
        else:
            loginuid = self._loginuid(dir_fd) if dir_fd is not None else None
        if kernel is not None:
            known, (fd0, fd1, fd2) = self._stdio_known, kernel.stdio
            stdin = known(dir_fd, b"fd/0", fd0, net_ns)
            stdout = known(dir_fd, b"fd/1", fd1, net_ns)
            stderr = known(dir_fd, b"fd/2", fd2, net_ns)
        elif dir_fd is not None:
            stdin, stdout, stderr = (self._stdio(dir_fd, name, net_ns) for name in _FD_NAMES)
        else:
            stdin = stdout = stderr = None
        return (
            cgroup.path,
            runtime,
            cgroup.container_id,
            cgroup.unit,
            pid_ns,
            mnt_ns,
            net_ns,
            user_ns,
            foreign,
            session_id,
            tty_name(tty_nr) if tty_nr else None,
            loginuid,
            client,
            source,
            stdin,
            stdout,
            stderr,
            None if found is None else self._share(environment_json(found)),
        )

    def _cgroup_of(self, dir_fd: int | None, kernel: KernelContext | None) -> CgroupContext:
        """The cgroup: by the ids the kernel gave when their path is known (collector/
        cgroup_ids.py), else from /proc's file (and learnt by those ids when it proves to be
        theirs)."""
        if kernel is not None:
            known = self._cgroup_ids.get(kernel)
            if known is not None:
                return known
        if dir_fd is None:
            return _NO_CGROUP
        raw = _read_small(b"cgroup", dir_fd, _TEXT_MAX_BYTES)
        found = self._cgroup_read(raw)
        if kernel is not None and raw is not None and len(found.path or "") <= _SHARED_TEXT_MAX:
            self._cgroup_ids.learn(kernel, raw, found)  # a long path is not kept (hostile size)
        return found

    def _namespaces_known(self, ids: tuple[int | None, ...]) -> _NamespaceSet:
        """`_namespaces_of` for the inode numbers the kernel gave."""
        found = self._ns_ids.get(ids)
        if found is None:
            found = self._namespace_set(dict(zip(NAMESPACES, ids, strict=True)))
            keep(self._ns_ids, ids, found, _SHARED_MAX)
        return found

    def _stdio_known(
        self, dir_fd: int | None, fd_name: bytes, fd: KernelFd, net_ns: int | None
    ) -> str | None:
        """What one stdio fd was at the exec, from the inode the kernel saw: a pipe or socket
        by type and number; a device by the name kept for it; anything else (a device not
        named yet, a file) by its link now, once the fd shows it is still that inode
        (`_still_open_on`). An fd pointed elsewhere since the exec is described by the
        kernel's inode alone: its link now would name what the process put there after.

        A regular file is named by `_file_known`, once per scan (or batch of events) for each
        mount and dentry the kernel gave: thousands of processes started alike share one log
        file. A kept name stands for the file the kernel saw, as a kept device name does, even
        for a process that has since pointed the fd elsewhere; it may be up to one scan old (a
        file renamed meanwhile)."""
        if fd.state == FD_CLOSED:
            return "closed"
        if fd.state != FD_OPEN:
            return self._stdio(dir_fd, fd_name, net_ns) if dir_fd is not None else None
        file_type = stat.S_IFMT(fd.mode)
        if file_type == stat.S_IFIFO:  # a supervisor's log pipe: thousands may share one
            return self._share(f"pipe:[{fd.inode}]")
        if file_type == stat.S_IFSOCK:
            if dir_fd is None:
                return f"socket:[{fd.inode}]"
            description = self._socket(dir_fd, net_ns, fd.inode)
            return self._share(
                f"socket:{description}" if description is not None else f"socket:[{fd.inode}]"
            )
        if file_type == stat.S_IFREG and fd.mount_id is not None and fd.dentry:
            return self._file_known(dir_fd, fd_name, fd, net_ns)
        key = (fd.fs_dev, fd.inode, fd.rdev)
        if file_type == stat.S_IFCHR:
            known = self._devices.get(key)
            if known is not None:
                return known
        if dir_fd is None:
            return None
        if not _still_open_on(dir_fd, fd_name, fd):
            return f"other:inode {fd.inode} (replaced since the exec)"
        kind = self._stdio(dir_fd, fd_name, net_ns)
        if file_type == stat.S_IFCHR and kind is not None and _names_here(kind, fd):
            keep(self._devices, key, kind, _SESSIONS_MAX)
        return kind

    def _file_known(
        self, dir_fd: int | None, fd_name: bytes, fd: KernelFd, net_ns: int | None
    ) -> str | None:
        """A regular file on stdio, named by the path the kernel's file object has: its mount
        and dentry (which link of it was opened). That pair settles the name a link shows, so
        the name is kept for the rest of the scan or batch under it, with the filesystem, inode
        and generation: a btrfs subvolume's inode numbers repeat under one device, hard links
        share an inode, and a dentry's address or an inode's number freed during a batch may
        come back for another file, whose generation the filesystem draws anew. The name is
        read through a descriptor of procmond's own (`_open_name`), which the process cannot
        point elsewhere between the check and the read."""
        key = (fd.mount_id, fd.dentry, fd.fs_dev, fd.inode, fd.generation)
        known = self._files.get(key)
        if known is not None:
            return known
        if dir_fd is None:
            return None
        raw = _open_name(dir_fd, fd_name, fd)
        if raw is None:
            return f"other:inode {fd.inode} (replaced since the exec)"
        kind = self._kind_of(raw, dir_fd, net_ns)
        # a long name is read each time (hostile size)
        if kind is not None and kind.startswith("file:") and len(kind) <= _SHARED_TEXT_MAX:
            keep(self._files, key, kind, _SHARED_MAX)
        return kind

    def _cgroup_read(self, raw: bytes | None) -> CgroupContext:
        """What a cgroup file says, classified once per distinct file (bounded like `_share`;
        a file longer than `_SHARED_TEXT_MAX` is classified every time)."""
        if raw is None:
            return _NO_CGROUP
        found = self._cgroups.get(raw)
        if found is None:
            found = classify_cgroup(pick_cgroup_path(raw))
            if len(raw) <= _SHARED_TEXT_MAX:
                share = self._share
                found = CgroupContext(
                    share(found.path), found.runtime, share(found.container_id), share(found.unit)
                )
                keep(self._cgroups, raw, found, _CGROUPS_MAX)
        return found

    def _namespaces(self, dir_fd: int) -> dict[str, int | None]:
        """pid, mnt, net and user namespace inodes (None: unreadable)."""
        found: dict[str, int | None] = {}
        for name, link in zip(NAMESPACES, _NS_LINK_PATHS, strict=True):
            try:
                found[name] = parse_ns_link(os.readlink(link, dir_fd=dir_fd))
            except OSError:
                found[name] = None
        return found

    def _namespaces_of(self, dir_fd: int) -> _NamespaceSet:
        """(pid, mnt, net, user, ns_foreign, pid namespace foreign) from the four ns links;
        what the four targets say is worked out once per distinct set of them."""
        targets: list[bytes | None] = []
        for link in _NS_LINK_PATHS:
            try:
                targets.append(os.readlink(link, dir_fd=dir_fd))
            except OSError:
                targets.append(None)
        key = tuple(targets)
        found = self._ns_sets.get(key)
        if found is None:
            found = self._namespace_set(
                {
                    name: (None if target is None else parse_ns_link(target))
                    for name, target in zip(NAMESPACES, targets, strict=True)
                }
            )
            keep(self._ns_sets, key, found, _SHARED_MAX)
        return found

    def _namespace_set(self, found: dict[str, int | None]) -> _NamespaceSet:
        ids = {name: self._share(value) for name, value in found.items()}
        foreign = foreign_namespaces(ids, self.init_namespaces())
        return (
            ids["pid"],
            ids["mnt"],
            ids["net"],
            ids["user"],
            foreign,
            foreign is not None and "pid" in foreign.split(),
        )

    def _loginuid(self, dir_fd: int) -> int | None:
        raw = _read_small(b"loginuid", dir_fd, _TEXT_MAX_BYTES)
        if raw is None:
            return None
        found = self._loginuids.get(raw, _MISSING)
        if found is _MISSING:
            found = parse_loginuid(raw)
            if len(raw) <= _SHARED_TEXT_MAX:
                keep(self._loginuids, raw, found, _SESSIONS_MAX)
        return cast("int | None", found)

    def _share(self, value: _V) -> _V:
        """One object for equal values: thousands of processes share a cgroup, namespaces,
        stdio and environment, and the daemon keeps every live record (a few hundred bytes each
        at 10,000 processes). Bounded in entries and in size: a long value (a hostile 128 KiB
        LD_PRELOAD) is never kept here, so ended processes cannot pin memory through it."""
        if value is None or (type(value) is str and len(value) > _SHARED_TEXT_MAX):
            return value
        shared = self._shared
        if len(shared) >= _SHARED_MAX:
            shared.clear()
        return cast("_V", shared.setdefault(value, value))

    def _environment(self, dir_fd: int) -> dict[str, str] | None:
        if not self.environment:
            return {}
        raw = _read_small(b"environ", dir_fd, ENVIRON_MAX_BYTES)
        return None if raw is None else _pick_environment(raw, self._needles)

    def _session_ssh_client(self, session_id: int, start_ticks: int, dir_fd: int) -> str | None:
        """SSH_CONNECTION of the session leader (pid = session id): the login shell sshd
        started holds it even when a process in its session was started without it."""
        cached = self._sessions.get(session_id)
        if cached is not None and cached[0] <= start_ticks:
            return cached[1]
        try:
            leader = os.open(
                self._root + b"/" + str(session_id).encode(),
                os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
            )
        except OSError:
            return None
        try:
            raw_stat = _read_bounded(b"stat", leader, 4096)
            if not raw_stat:
                return None
            try:
                leader_start = int(raw_stat[raw_stat.rfind(b")") + 2 :].split()[19])
            except (IndexError, ValueError):
                return None
            if leader_start > start_ticks:
                return None  # the pid was reused by a process younger than this one
            raw = _read_bounded(b"environ", leader, ENVIRON_MAX_BYTES)
        finally:
            os.close(leader)
        client = None
        if raw is not None:
            client = ssh_client(allowed_environment(raw, ("SSH_CONNECTION",)).get("SSH_CONNECTION"))
        keep(self._sessions, session_id, (leader_start, client), _SESSIONS_MAX)
        return client

    def _stdio(self, dir_fd: int, fd_name: bytes, net_ns: int | None) -> str | None:
        try:
            raw = os.readlink(fd_name, dir_fd=dir_fd)
        except PermissionError:
            return None
        except VANISHED_ERRORS:
            return "closed"
        except OSError:
            return None
        return self._kind_of(raw, dir_fd, net_ns)

    def _kind_of(self, raw: bytes, dir_fd: int, net_ns: int | None) -> str | None:
        """What a stdio link's text says it is (a socket described from the tables)."""
        known = self._stdio_kinds.get(raw)
        if known is not None:
            return known
        target = decode(raw)
        inode = socket_inode(target)
        if inode is None:  # a tty, a file, a pipe: what it is follows from the link alone
            kind = cast("str", self._share(stdio_kind(target)))
            if len(raw) <= _SHARED_TEXT_MAX:
                keep(self._stdio_kinds, raw, kind, _SHARED_MAX)
            return kind
        description = self._socket(dir_fd, net_ns, inode)
        return self._share(f"socket:{description}" if description is not None else target)

    def _socket(self, dir_fd: int, net_ns: int | None, inode: int) -> str | None:
        for table in _SOCKET_TABLES:
            found = self._table(dir_fd, net_ns, table, fresh=False).get(inode)
            if found is not None:
                return found
        # a socket made after the cached tables were read: read them again, once per scan
        for table in _SOCKET_TABLES:
            found = self._table(dir_fd, net_ns, table, fresh=True).get(inode)
            if found is not None:
                return found
        return None

    def _table(self, dir_fd: int, net_ns: int | None, table: str, *, fresh: bool) -> dict[int, str]:
        """A socket table of the namespace, parsed; cached across processes and scans. `fresh`
        (a socket was not found) reads it again unless that already happened in this scan: each
        table is read at most twice per scan whatever the processes hold."""
        key = (net_ns, table)
        cached = self._tables.get(key)
        if cached is not None and (not fresh or (cached[0] == self._generation and cached[1])):
            return cached[2]
        # /proc/<pid>/net is the process's network namespace at the read, which it may have
        # left since the namespace id was taken (an unshare after its exec): a table read while
        # the process was elsewhere is neither kept as that namespace's nor used for it
        raw = _read_bounded(b"net/" + table.encode(), dir_fd, None, records=True)
        if net_ns is not None and _net_namespace(dir_fd) != net_ns:
            return {}
        if raw is None:
            parsed: dict[int, str] = {}
        elif table == "unix":
            parsed = parse_unix_table(raw)
        else:
            parsed = parse_inet_table(raw, table.rstrip("6"))
        if net_ns is not None:  # without a namespace id the table cannot be shared
            self._tables[key] = (self._generation, fresh, parsed)
        return parsed


_NS_LINK_PATHS = tuple(b"ns/" + name.encode() for name in NAMESPACES)


def _net_namespace(dir_fd: int) -> int | None:
    try:
        return parse_ns_link(os.readlink(b"ns/net", dir_fd=dir_fd))
    except OSError:
        return None


def _kernel_dev(dev: int) -> int:
    """A dev_t as stat gives it, in the kernel's own encoding (major << 20 | minor)."""
    return os.major(dev) << 20 | os.minor(dev)


def _still_open_on(dir_fd: int, fd_name: bytes, fd: KernelFd) -> bool:
    """Whether the fd still names the inode the kernel saw at the exec. A device is compared by
    `stat` through its link (inode and device number; devices live on the kernel's own
    filesystems: a user's mounts are nodev). Anything else by the inode its `fdinfo` gives,
    which no filesystem answers: a `stat` through the link would ask the file's filesystem,
    and a user's FUSE mount can take as long as it likes to answer."""
    if fd.is_char_device:
        try:
            now = os.stat(fd_name, dir_fd=dir_fd)
        except OSError:
            return False
        return now.st_ino == fd.inode and _kernel_dev(now.st_rdev) == fd.rdev
    raw = _read_small(b"fdinfo/" + fd_name[3:], dir_fd, _TEXT_MAX_BYTES)
    if raw is None or _fdinfo_value(raw, b"ino") != str(fd.inode).encode():
        return False
    # an inode number is unique only within its filesystem: the mount, when the kernel read it
    return fd.mount_id is None or _fdinfo_value(raw, b"mnt_id") == str(fd.mount_id).encode()


def _open_name(dir_fd: int, fd_name: bytes, fd: KernelFd) -> bytes | None:
    """The link text of the file a process has on `fd_name`, when it is still the file the
    kernel saw (inode and mount): opened O_PATH through the process's link (which asks no
    filesystem, FUSE included), then checked and named through procmond's own descriptor, so
    a process that points its fd elsewhere and back cannot pair one file's check with another
    file's name. None: not that file now, gone, or refused."""
    try:
        own = os.open(fd_name, os.O_PATH | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        with open(b"/proc/self/fdinfo/%d" % own, "rb", buffering=0) as file:
            raw = file.read(_TEXT_MAX_BYTES)
        if _fdinfo_value(raw, b"ino") != str(fd.inode).encode():
            return None
        if _fdinfo_value(raw, b"mnt_id") != str(fd.mount_id).encode():
            return None
        return os.readlink(b"/proc/self/fd/%d" % own)
    except OSError:
        return None
    finally:
        os.close(own)


def _fdinfo_value(raw: bytes, key: bytes) -> bytes | None:
    """A `key:\tvalue` line's value in an fdinfo file, the first one after its first line: the
    kernel writes pos, flags, mnt_id and ino first, and a file's own lines (which a user may
    shape) only after them."""
    at = raw.find(b"\n" + key + b":")
    if at < 0:
        return None
    found = raw[at + len(key) + 2 :].split(None, 1)
    return found[0] if found else None


def _names_here(kind: str, fd: KernelFd) -> bool:
    """Whether a device's name ('file:/dev/null', 'tty:/dev/pts/3') names that same device in
    procmond's own mount namespace: a link read through /proc is the path in the process's
    namespace, where anyone with a user namespace can bind a device over any name. Only a
    name that holds here may stand for every process on that device, and only a short one."""
    path = kind.partition(":")[2]
    # under /dev only: devtmpfs and devpts are the kernel's, while a path elsewhere may cross a
    # user's FUSE mount, whose lookups can take as long as its owner likes
    if not path.startswith("/dev/") or len(path) > _SHARED_TEXT_MAX:
        return False
    try:
        here = os.stat(path, follow_symlinks=False)  # a link's target is a name of its own
    except (OSError, ValueError):
        return False
    return (
        _kernel_dev(here.st_dev) == fd.fs_dev
        and here.st_ino == fd.inode
        and _kernel_dev(here.st_rdev) == fd.rdev
    )


def _read_bounded(
    path: bytes, dir_fd: int, limit: int | None, *, records: bool = False
) -> bytes | None:
    """A /proc file up to `limit` bytes (None: whole); None when it cannot be read. A file
    generated whole (environ, cgroup, loginuid, stat) ends at a short first read; a table of
    `records` (net/tcp, net/unix) returns whole lines per read and is read to its end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        chunks = []
        size = 0
        want = 4096 if limit is None else min(4096, limit)
        while want > 0:
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if not records and len(chunk) < want and size < 4096:
                break  # generated whole: a short first read is all of it
            want = _READ_CHUNK if limit is None else min(_READ_CHUNK, limit - size)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_small(path: bytes, dir_fd: int, limit: int) -> bytes | None:
    """`_read_bounded` for a file generated whole (cgroup, loginuid, environ): one open, one
    read and one close when it is under a page, as nearly all are; else read on up to
    `limit` bytes. None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        first = os.read(fd, 4096)
        if len(first) < 4096:
            return first
        chunks = [first]
        size = len(first)
        while size < limit:
            chunk = os.read(fd, min(_READ_CHUNK, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_text(path: bytes, dir_fd: int, parse: Callable[[bytes], _T]) -> _T | None:
    raw = _read_small(path, dir_fd, _TEXT_MAX_BYTES)
    return None if raw is None else parse(raw)
