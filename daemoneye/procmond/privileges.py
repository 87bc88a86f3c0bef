"""Who holds which privilege: procmond keeps four capabilities under the daemon's user, the
agent keeps none, and both can be read back from /proc/PID/status.

Started as root, the agent spawns procmond and then calls `drop_agent` (the configured user,
no capabilities, an empty bounding set, no_new_privs). procmond calls `drop_procmond` at its
start: it switches to the same user but keeps, through PR_SET_KEEPCAPS, exactly
`PROCMOND_CAPABILITIES`. It does not stay uid 0: a uid-0 process without capabilities still
owns every root-owned file (it could rewrite /usr/bin or /etc/passwd through their owner
bits), while the daemon's user owns nothing but the daemon's state.

The kernel clears the parent-death signal on any change of credentials; the drops set it
again, so a process that asked to die with the agent still does.

Capabilities are per thread in the kernel (capset, the bounding set and no_new_privs act on
the calling thread only), so both drops refuse to run once a second thread exists. Stdlib and
ctypes only: procmond may not load asyncio, ssl or SQLite.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import resource
from collections.abc import Iterable
from dataclasses import dataclass

from daemoneye.collector.bpf import BPF_ITER_CREATE
from daemoneye.errors import DaemonEyeError
from daemoneye.models import CAPABILITY_NAMES, ProcessPrivileges
from daemoneye.procmond.seccomp import deny_bpf

log = logging.getLogger(__name__)

# What each kept capability is for; measured in tests/integration/test_privileges.py.
PROCMOND_CAPABILITIES = frozenset(
    {
        "CAP_NET_ADMIN",  # joining the process connector's multicast group (kernel events)
        "CAP_SYS_PTRACE",  # other users' /proc/PID/exe, cwd, root, fd/N links and environ
        "CAP_DAC_READ_SEARCH",  # listing other users' /proc/PID/fd (0500) and reading their
        # environ (0400); hashing executables that are not world-readable
        "CAP_KILL",  # signalling other users' processes on an admin's request
    }
)
# Held only while procmond starts: loading the eBPF exec capture (collector/exec_capture.py).
# procmond gives them up before its first thread starts (`shed_start_capabilities`).
EXEC_CAPTURE_CAPABILITIES = frozenset({"CAP_BPF", "CAP_PERFMON"})
PROCMOND_START_CAPABILITIES = PROCMOND_CAPABILITIES | EXEC_CAPTURE_CAPABILITIES
USER_KEY = "[daemon] user"

_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2
_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(DaemonEyeError):
    """Privileges could not be dropped as asked; the process must not go on."""


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class Account:
    """The user the daemon's processes run as, with its groups."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, the primary one included


def lookup_account(name: str) -> Account:
    """`name` from the user database; a PrivilegeError naming the config key and how to create
    the user when it does not exist."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(
            f"{USER_KEY} is {name!r}, but no such user exists: create it with "
            "`systemd-sysusers` (install packaging/systemd/daemoneye.sysusers as "
            "/etc/sysusers.d/daemoneye.conf first) or `useradd --system --no-create-home "
            f"--shell /usr/sbin/nologin {name}`, or set {USER_KEY} to an existing user"
        ) from None
    groups = {entry.pw_gid, *os.getgrouplist(name, entry.pw_gid)}
    return Account(name, entry.pw_uid, entry.pw_gid, tuple(sorted(groups)))


def capability_mask(names: Iterable[str]) -> int:
    """The bit mask of capability `names` (CAP_*); ValueError for an unknown name."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_NAMES.index(name)
    return mask


def capability_names(mask: int) -> tuple[str, ...]:
    """The names of the bits set in `mask`, lowest first; unknown bits as CAP_<n>."""
    found = []
    bit = 0
    while mask >> bit:
        if mask >> bit & 1:
            found.append(CAPABILITY_NAMES[bit] if bit < len(CAPABILITY_NAMES) else f"CAP_{bit}")
        bit += 1
    return tuple(found)


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as file:
            return int(file.read())
    except (OSError, ValueError):
        return len(CAPABILITY_NAMES) - 1


def _fail(what: str) -> PrivilegeError:
    errno = ctypes.get_errno()
    return PrivilegeError(f"cannot drop privileges: {what} failed: {os.strerror(errno)}")


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    result: int = _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0)
    return result


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for index in range(2):
        shift = 32 * index
        data[index].effective = (effective >> shift) & 0xFFFFFFFF
        data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise _fail("capset")


def _single_threaded() -> None:
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise PrivilegeError(
            f"cannot drop privileges with {threads} threads running: capabilities belong to "
            "each thread, so the others would keep them; drop before starting any thread"
        )


def _trim_bounding_set(keep: int) -> None:
    for bit in range(_last_capability() + 1):
        if keep >> bit & 1 or _prctl(_PR_CAPBSET_READ, bit) != 1:
            continue
        if _prctl(_PR_CAPBSET_DROP, bit) != 0:
            raise _fail(f"dropping {capability_names(1 << bit)[0]} from the bounding set")


def _switch_user(account: Account, *, keep_capabilities: bool) -> None:
    """setgroups, setresgid, setresuid; the parent-death signal, which the kernel clears on
    any change of credentials, is set again (procmond and the launcher die with the agent)."""
    death_signal = ctypes.c_int(0)
    if _libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(death_signal), 0, 0, 0) != 0:
        raise _fail("PR_GET_PDEATHSIG")
    if keep_capabilities and _prctl(_PR_SET_KEEPCAPS, 1) != 0:
        raise _fail("PR_SET_KEEPCAPS")
    try:
        os.setgroups(list(account.groups))
        os.setresgid(account.gid, account.gid, account.gid)
        os.setresuid(account.uid, account.uid, account.uid)
    except OSError as exc:
        raise PrivilegeError(
            f"cannot switch to user {account.name} (uid {account.uid}): {exc.strerror}"
        ) from None
    if keep_capabilities and _prctl(_PR_SET_KEEPCAPS, 0) != 0:
        raise _fail("clearing PR_SET_KEEPCAPS")
    if death_signal.value and _prctl(_PR_SET_PDEATHSIG, death_signal.value) != 0:
        raise _fail("setting the parent-death signal again")


def _finish(keep: int) -> None:
    """Exactly `keep` in the permitted and effective sets, nothing inheritable or ambient,
    no_new_privs; then read the result back from the kernel."""
    _capset(keep, keep, 0)
    if _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL) != 0:
        raise _fail("clearing the ambient capabilities")
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1) != 0:
        raise _fail("PR_SET_NO_NEW_PRIVS")
    held = read_privileges(os.getpid(), "self")
    if capability_mask(held.effective) != keep or capability_mask(held.permitted) != keep:
        raise PrivilegeError(
            f"after dropping privileges this process still holds {held.permitted} "
            f"(wanted {capability_names(keep)})"
        )


def allow_realtime_priority(priority: int) -> bool:
    """Let this process's threads take SCHED_FIFO up to `priority` without CAP_SYS_NICE, through
    RLIMIT_RTPRIO (the event reader's real-time priority; its own threads only, unlike the
    capability, which reaches every process). Raising the hard limit needs CAP_SYS_RESOURCE,
    so it is done before the drop; under systemd the unit's LimitRTPRIO= sets it. Whether
    the limit now allows `priority`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_RTPRIO)
    if soft >= priority:
        return True
    for wanted in ((priority, max(hard, priority)), (min(priority, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_RTPRIO, wanted)
            break
        except (OSError, ValueError):
            continue
    return resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= priority


def drop_procmond(
    account: Account,
    keep: frozenset[str] = PROCMOND_START_CAPABILITIES,
    *,
    realtime_priority: int = 1,
) -> None:
    """procmond's drop, at its start: run as `account` holding only `keep` (permitted and
    effective; bounding set `keep` too), nothing inheritable or ambient, no_new_privs, and
    RLIMIT_RTPRIO raised to `realtime_priority` where root may. Not root (an ordinary user's
    private daemon): only what this process already holds of `keep` stays, usually nothing."""
    _single_threaded()
    wanted = capability_mask(keep)
    held = capability_mask(read_privileges(os.getpid(), "self").permitted)
    if os.geteuid() != 0 or not held >> CAPABILITY_NAMES.index("CAP_SETPCAP") & 1:
        # Not root, or root that already gave its capabilities up (started again by an agent
        # that dropped): keep what is held of `keep`, usually nothing.
        _finish(held & wanted)
        return
    if realtime_priority:
        allow_realtime_priority(realtime_priority)
    _trim_bounding_set(wanted & ~capability_mask(EXEC_CAPTURE_CAPABILITIES))
    _switch_user(account, keep_capabilities=True)
    _finish(wanted)


def shed_start_capabilities() -> None:
    """Give up what only procmond's start needed (EXEC_CAPTURE_CAPABILITIES): the loaded
    program and its ring keep working without them; and bpf(2) is refused from here on.
    Before any thread starts."""
    _single_threaded()
    held = capability_mask(read_privileges(os.getpid(), "self").permitted)
    _finish(held & ~capability_mask(EXEC_CAPTURE_CAPABILITIES))
    _refuse_bpf(allowed=(BPF_ITER_CREATE,))  # a pass of the task iterator loaded at start


def _refuse_bpf(allowed: tuple[int, ...] = ()) -> None:
    """bpf(2) refused from here on, but the commands `allowed` (procmond/seccomp.py); if it
    cannot be, say why."""
    reason = deny_bpf(allowed)
    if reason is not None:
        log.warning("bpf(2) stays allowed to this process: %s", reason)


def drop_launcher(account: Account, keep: frozenset[str] = PROCMOND_START_CAPABILITIES) -> None:
    """For a process whose only job is to exec procmond, again after a crash, once the agent
    has dropped (a child the agent forks before its own drop): run as `account` holding `keep`
    as ambient capabilities, which survive an exec as a non-root user, none of them effective
    (the launcher itself uses none), and nothing else. The
    procmond it execs starts with exactly `keep` and calls `drop_procmond`, which clears the
    inheritable and ambient sets again. The bounding set holds `keep` without the
    start-only EXEC_CAPTURE_CAPABILITIES: ambient capabilities cross an exec without passing
    the bounding set, and once procmond sheds them nothing can bring them back."""
    _single_threaded()
    wanted = capability_mask(keep)
    setpcap = capability_mask({"CAP_SETPCAP"})
    if os.geteuid() != 0:
        raise PrivilegeError("a procmond launcher must start as root")
    _trim_bounding_set(wanted)
    _switch_user(account, keep_capabilities=True)
    _capset(wanted | setpcap, wanted | setpcap, wanted)  # SETPCAP: the bounding set, below
    for name in sorted(keep):
        if _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, CAPABILITY_NAMES.index(name)) != 0:
            raise _fail(f"raising {name} as ambient")
    _trim_bounding_set(wanted & ~capability_mask(EXEC_CAPTURE_CAPABILITIES))
    _capset(0, wanted, wanted)  # nothing effective: ambient needs permitted and inheritable
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1) != 0:
        raise _fail("PR_SET_NO_NEW_PRIVS")


def drop_agent(account: Account | None) -> None:
    """The agent's drop, once procmond is running: run as `account` with its groups, no
    capabilities in any set (the bounding set included), no_new_privs, and bpf(2) refused
    (procmond/seccomp.py). Not root: there is nothing to give up but the right to gain
    privileges by exec, so `account` may be None and only no_new_privs is set (and bpf(2)
    refused)."""
    _single_threaded()
    if os.geteuid() == 0:
        if account is None:
            raise PrivilegeError("cannot drop privileges: running as root and no user to become")
        _trim_bounding_set(0)
        _switch_user(account, keep_capabilities=False)
    _finish(0)
    _refuse_bpf()


def _status_mask(fields: dict[str, str], key: str) -> int:
    return int(fields.get(key, "0"), 16)


def parse_status(text: str, pid: int, role: str) -> ProcessPrivileges:
    """The privileges in the text of /proc/PID/status. ValueError when a field is garbled."""
    fields: dict[str, str] = {}
    # Lines end at "\n" only, the one character the kernel escapes in the process's own name
    # (splitlines would also break at \x0b, \x1c or \x85, which a name may hold).
    for line in text.split("\n"):
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    uids = fields.get("Uid", "").split()
    gids = fields.get("Gid", "").split()
    if len(uids) < 2 or len(gids) < 2:
        raise ValueError("no Uid/Gid lines")
    uid, gid = int(uids[1]), int(gids[1])  # effective ids
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return ProcessPrivileges(
        role=role,
        pid=pid,
        uid=uid,
        user=user,
        gid=gid,
        effective=capability_names(_status_mask(fields, "CapEff")),
        permitted=capability_names(_status_mask(fields, "CapPrm")),
        bounding=capability_names(_status_mask(fields, "CapBnd")),
        ambient=capability_names(_status_mask(fields, "CapAmb")),
        no_new_privs=fields.get("NoNewPrivs", "0") == "1",
    )


def read_privileges(pid: int, role: str, proc_root: str = "/proc") -> ProcessPrivileges:
    """Process `pid`'s ids and capability sets from /proc/PID/status. OSError when it cannot be
    read (gone, hidden); PrivilegeError when the file does not say."""
    with open(f"{proc_root}/{pid}/status", encoding="utf-8", errors="replace") as file:
        text = file.read(64 * 1024)
    try:
        return parse_status(text, pid, role)
    except ValueError as exc:
        raise PrivilegeError(f"{proc_root}/{pid}/status: {exc}") from None
