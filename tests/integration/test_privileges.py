"""The privilege drops for real, as root, each in a forked child that reads its own
/proc/self/status afterwards: procmond keeps exactly its four capabilities (and each one is
needed for a read it does), the agent keeps none, cannot open /proc/1/environ and can still
use its store. The user is `nobody` (uid 65534) through `[daemon] user`."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemoneye.config.loading import load_config
from daemoneye.config.schema import LoadedConfig
from daemoneye.daemon import privilege_drop
from daemoneye.daemon.lock import PidLock
from daemoneye.daemon.privilege_drop import drop_agent_privileges, hand_over, needs_of
from daemoneye.paths import Mode
from daemoneye.procmond.privileges import (
    PROCMOND_CAPABILITIES,
    PROCMOND_START_CAPABILITIES,
    PrivilegeError,
    allow_realtime_priority,
    capability_mask,
    drop_launcher,
    drop_procmond,
    lookup_account,
    shed_start_capabilities,
)
from daemoneye.store.db import Store
from tests.forked import in_child

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")

USER = "nobody"
NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1


def _status() -> dict[str, str]:
    with open("/proc/self/status") as status:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in status)}


def _mask(status: dict[str, str], key: str) -> int:
    return int(status[key], 16)


# Each kept capability and a read procmond does that fails without it (root's own pid as
# the target: another user's process, like nearly every process procmond looks at).
def _join_connector(_: int) -> None:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as sock:
        sock.bind((0, CN_IDX_PROC))


def _read_exe_link(target: int) -> None:
    os.readlink(f"/proc/{target}/exe")


def _list_fds(target: int) -> None:
    os.listdir(f"/proc/{target}/fd")


def _signal_probe(target: int) -> None:
    os.kill(target, 0)


READS = {
    "CAP_NET_ADMIN": _join_connector,
    "CAP_SYS_PTRACE": _read_exe_link,
    "CAP_DAC_READ_SEARCH": _list_fds,
    "CAP_KILL": _signal_probe,
}


def _try_reads(target: int) -> dict[str, str]:
    outcome = {}
    for capability, read in READS.items():
        try:
            read(target)
            outcome[capability] = "ok"
        except OSError as exc:
            outcome[capability] = exc.strerror or str(exc)
    return outcome


def test_the_reads_cover_exactly_the_kept_capabilities() -> None:
    assert set(READS) == PROCMOND_CAPABILITIES


def test_procmond_keeps_exactly_its_capabilities_as_the_daemon_user() -> None:
    target = os.getpid()

    def child() -> dict[str, Any]:
        drop_procmond(lookup_account(USER))
        at_start = _status()  # what loading the exec capture takes, until it is shed
        shed_start_capabilities()
        return {"at_start": at_start, "status": _status(), "reads": _try_reads(target)}

    found = in_child(child)
    at_start = found["at_start"]
    start = capability_mask(PROCMOND_START_CAPABILITIES)
    assert _mask(at_start, "CapEff") == _mask(at_start, "CapPrm") == start
    status = found["status"]
    kept = capability_mask(PROCMOND_CAPABILITIES)
    assert _mask(at_start, "CapBnd") == kept  # CAP_BPF/CAP_PERFMON can never come back
    assert status["Uid"].split() == ["65534"] * 4
    assert status["Gid"].split() == ["65534"] * 4
    assert _mask(status, "CapEff") == _mask(status, "CapPrm") == kept
    assert _mask(status, "CapBnd") == kept
    assert _mask(status, "CapInh") == _mask(status, "CapAmb") == 0
    assert status["NoNewPrivs"] == "1"
    assert found["reads"] == dict.fromkeys(READS, "ok")


@pytest.mark.parametrize("capability", sorted(PROCMOND_CAPABILITIES))
def test_each_kept_capability_is_needed(capability: str) -> None:
    """Without it, the read it is kept for fails; the others still work."""
    target = os.getpid()

    def child() -> dict[str, str]:
        drop_procmond(lookup_account(USER), PROCMOND_CAPABILITIES - {capability})
        return _try_reads(target)

    reads = in_child(child)
    assert reads[capability] != "ok"
    assert all(reads[other] == "ok" for other in READS if other != capability)


@pytest.fixture
def daemon_dir() -> Iterator[Path]:
    """A directory the dropped user can reach (pytest's tmp_path is under a 0700 root dir)."""
    with tempfile.TemporaryDirectory(prefix="daemoneye-privs-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


REAL_INTERPRETER_CHECK = privilege_drop.check_interpreter_readable


@pytest.fixture(autouse=True)
def interpreter_check(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Where this Python lives (pyenv under /root, 0700) the dropped user cannot import more
    modules; these tests import nothing after the drop, so the check is recorded, not run."""
    checked: list[str] = []
    monkeypatch.setattr(
        privilege_drop, "check_interpreter_readable", lambda account: checked.append(account.name)
    )
    return checked


@pytest.fixture
def own_dirs(daemon_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`daemon_dir`/state and /run play /var/lib/daemoneye and /run/daemoneye."""
    own = {daemon_dir / "state": 0o750, daemon_dir / "run": 0o755}
    monkeypatch.setattr(privilege_drop, "OWN_DIRECTORIES", own)


def _loaded(root: Path, **flags: str) -> LoadedConfig:
    return load_config(
        mode=Mode.SYSTEM,
        env={},
        flags={
            "store.path": str(root / "state" / "d.db"),
            "daemon.socket": str(root / "run" / "d.sock"),
            "daemon.user": USER,
            **flags,
        },
    )


@pytest.mark.usefixtures("own_dirs")
def test_the_agent_drops_everything_and_still_uses_its_store(
    daemon_dir: Path, interpreter_check: list[str]
) -> None:
    loaded = _loaded(daemon_dir)
    db = loaded.paths.db
    # A store root made earlier (the one-process daemon, or a start before the drop).
    db.parent.mkdir(mode=0o700)
    Store.open(db).close()
    root_lock = PidLock(Path(str(db) + ".lock"))
    root_lock.acquire()
    root_lock.release()

    def child() -> dict[str, Any]:
        account = drop_agent_privileges(loaded)
        assert account is not None
        try:
            os.close(os.open("/proc/1/environ", os.O_RDONLY))  # opened, never read
            environ = "opened"
        except PermissionError:
            environ = "PermissionError"
        lock = PidLock(Path(str(db) + ".lock"))
        lock.acquire()
        store = Store.open(db)
        store.put_meta("privileges-test", "written after the drop")
        kept = store.get_meta("privileges-test")
        store.close()
        lock.release()
        return {"status": _status(), "environ": environ, "kept": kept}

    found = in_child(child)
    status = found["status"]
    assert status["Uid"].split() == ["65534"] * 4
    assert status["Groups"].split() == ["65534"]
    assert interpreter_check == []  # in the child, before its drop
    for key in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert _mask(status, key) == 0, key
    assert status["NoNewPrivs"] == "1"
    assert found["environ"] == "PermissionError"
    assert found["kept"] == "written after the drop"
    assert db.stat().st_uid == 65534
    assert (daemon_dir / "run").stat().st_uid == 65534  # the socket's directory, created


def test_not_root_only_no_new_privs_is_set(daemon_dir: Path) -> None:
    """An ordinary user's daemon: nothing to give up, no user looked up."""
    loaded = _loaded(daemon_dir, **{"daemon.user": "no-such-user-daemoneye-test"})

    def child() -> dict[str, Any]:
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        account = drop_agent_privileges(loaded)
        return {"account": account, "status": _status()}

    found = in_child(child)
    assert found["account"] is None
    assert found["status"]["NoNewPrivs"] == "1"
    assert found["status"]["Uid"].split() == ["65534"] * 4


def test_a_missing_user_stops_the_drop_with_the_key_to_set(daemon_dir: Path) -> None:
    loaded = _loaded(daemon_dir, **{"daemon.user": "no-such-user-daemoneye-test"})
    with pytest.raises(PrivilegeError, match=r"\[daemon\] user.*systemd-sysusers"):
        drop_agent_privileges(loaded)


def test_an_unreachable_store_directory_is_named_before_the_drop(daemon_dir: Path) -> None:
    os.chmod(daemon_dir, 0o700)
    loaded = _loaded(daemon_dir)
    with pytest.raises(PrivilegeError, match=f"{daemon_dir} is not searchable by user nobody"):
        hand_over(needs_of(loaded), lookup_account(USER))


def test_a_foreign_directory_is_checked_never_given_away(daemon_dir: Path) -> None:
    """--db in a directory the user cannot write: an error, not a chown of that directory."""
    foreign = daemon_dir / "srv"
    foreign.mkdir(mode=0o755)
    loaded = _loaded(daemon_dir, **{"store.path": str(foreign / "d.db")})
    with pytest.raises(PrivilegeError, match=f"{foreign} is not writable by user nobody"):
        hand_over(needs_of(loaded), lookup_account(USER))
    assert foreign.stat().st_uid == 0


@pytest.mark.usefixtures("own_dirs")
def test_the_daemons_own_directories_are_created_and_given(daemon_dir: Path) -> None:
    (daemon_dir / "run").mkdir(mode=0o700)  # left by an earlier root daemon: given too
    old_umask = os.umask(0o077)  # systemd's UMask= must not narrow what is created
    try:
        hand_over(needs_of(_loaded(daemon_dir)), lookup_account(USER))
    finally:
        os.umask(old_umask)
    for name, mode in (("state", 0o750), ("run", 0o700)):
        assert (daemon_dir / name).stat().st_uid == 65534, name
        assert (daemon_dir / name).stat().st_mode & 0o777 == mode, name


@pytest.mark.usefixtures("own_dirs")
@pytest.mark.parametrize("plant", ["symlink", "hardlink"])
def test_a_planted_link_cannot_make_root_give_away_another_file(
    daemon_dir: Path, plant: str
) -> None:
    """The user owns the store's directory, so it could leave a link where the lock file goes;
    root must not chown what the link points at."""
    loaded = _loaded(daemon_dir)
    account = lookup_account(USER)
    hand_over(needs_of(loaded), account)  # the directories are the user's now
    precious = daemon_dir / "precious"
    precious.write_text("root's file")
    lock = Path(str(loaded.paths.db) + ".lock")
    if plant == "symlink":
        lock.symlink_to(precious)
    else:
        os.link(precious, lock)
    with pytest.raises(PrivilegeError, match="cannot hand"):
        hand_over(needs_of(loaded), account)
    assert precious.stat().st_uid == 0


@pytest.mark.usefixtures("own_dirs")
def test_the_kept_rule_copies_are_handed_over_without_following_links(daemon_dir: Path) -> None:
    loaded = _loaded(daemon_dir)
    account = lookup_account(USER)
    kept = loaded.paths.db.parent / "rules-last-good"
    kept.mkdir(parents=True)
    (kept / "a.json").write_text("{}")
    outside = daemon_dir / "outside"
    outside.mkdir()
    (kept / "link").symlink_to(outside)
    with pytest.raises(PrivilegeError, match="symlink"):
        hand_over(needs_of(loaded), account)
    assert outside.stat().st_uid == 0
    (kept / "link").unlink()
    hand_over(needs_of(loaded), account)
    assert (kept / "a.json").stat().st_uid == 65534


PRINT_STATUS_AFTER_PROCMOND_DROP = """
import json, os
from daemoneye.procmond.privileges import drop_procmond, lookup_account, shed_start_capabilities
before = open("/proc/self/status").read()
drop_procmond(lookup_account("nobody"))
shed_start_capabilities()
print(json.dumps([before, open("/proc/self/status").read()]))
"""


def _fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def test_a_launcher_execs_procmond_with_exactly_its_capabilities(tmp_path: Path) -> None:
    """After the agent dropped, a launcher holding only procmond's capabilities (ambient) can
    start procmond again: the new one holds exactly those, as the daemon's user."""
    output = tmp_path / "status.json"

    def child() -> None:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        drop_launcher(lookup_account(USER))
        # as the launcher does: through /proc/self/exe, with no path to search (its effective
        # set is empty; the interpreter may live under root's 0700 home)
        os.execv("/proc/self/exe", [sys.executable, "-c", PRINT_STATUS_AFTER_PROCMOND_DROP])

    pid = os.fork()
    if pid == 0:
        try:
            child()
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output.read_text()
    before, after = (_fields(text) for text in json.loads(output.read_text()))
    kept = capability_mask(PROCMOND_CAPABILITIES)
    start = capability_mask(PROCMOND_START_CAPABILITIES)
    # As exec'd: the four and the exec capture's two, ambient (that is how they crossed the
    # exec), under nobody; the bounding set already without the start-only two.
    assert before["Uid"].split() == ["65534"] * 4
    assert _mask(before, "CapEff") == _mask(before, "CapAmb") == start
    assert _mask(before, "CapBnd") == kept
    # After procmond's own drop and the shed: the four, and nothing inheritable or ambient.
    assert _mask(after, "CapEff") == _mask(after, "CapPrm") == _mask(after, "CapBnd") == kept
    assert _mask(after, "CapInh") == _mask(after, "CapAmb") == 0
    assert after["NoNewPrivs"] == "1"


def test_an_unreadable_python_is_refused_before_the_drop(tmp_path: Path) -> None:
    """A user that cannot read the standard library fails at start, not at its next import."""
    hidden = tmp_path / "lib"  # under pytest's 0700 root directory: not searchable
    hidden.mkdir()
    readable = Path(privilege_drop.__file__).parents[2]  # this checkout: /work is 0755
    account = lookup_account(USER)
    with pytest.raises(PrivilegeError, match=r"Python's modules in .* out of reach for user"):
        REAL_INTERPRETER_CHECK(account, (readable, hidden))
    REAL_INTERPRETER_CHECK(account, (readable,))
    assert readable in privilege_drop.code_directories()[1].parents


def test_procmond_threads_may_still_run_sched_fifo_without_cap_sys_nice() -> None:
    """The event reader's real-time priority survives the drop through RLIMIT_RTPRIO (its own
    threads only), not through CAP_SYS_NICE (every process on the host)."""

    def child() -> dict[str, Any]:
        if not allow_realtime_priority(1):
            return {"skip": resource.getrlimit(resource.RLIMIT_RTPRIO)}
        drop_procmond(lookup_account(USER))
        outcome: dict[str, Any] = {"status": _status()}

        def reader() -> None:
            try:
                os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(1))
                outcome["fifo"] = "ok"
            except OSError as exc:
                outcome["fifo"] = exc.strerror

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join()
        return outcome

    found = in_child(child)
    if "skip" in found:
        pytest.skip(
            f"root here cannot raise RLIMIT_RTPRIO (limits {found['skip']}; no CAP_SYS_RESOURCE "
            "in this container): the unit's LimitRTPRIO=1 does it under systemd"
        )
    assert _mask(found["status"], "CapEff") == capability_mask(PROCMOND_CAPABILITIES)
    assert found["fifo"] == "ok"


def test_the_parent_death_signal_survives_the_drops() -> None:
    """The kernel clears it on a change of credentials; procmond asks for it before it drops
    and must still die with its agent after."""

    def child() -> list[int]:
        libc = ctypes.CDLL(None, use_errno=True)
        found = []
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        drop_procmond(lookup_account(USER))
        value = ctypes.c_int(0)
        libc.prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
        found.append(value.value)
        return found

    assert in_child(child) == [signal.SIGKILL]


def test_a_store_directory_the_root_agent_made_before_its_drop_is_the_users(
    daemon_dir: Path,
) -> None:
    """--db in a directory that does not exist yet, inside one the user may write: the root
    agent makes it (for its lock) between preparing and dropping; the drop gives it."""
    users = daemon_dir / "users"
    users.mkdir()
    os.chown(users, 65534, 65534)
    loaded = _loaded(daemon_dir, **{"store.path": str(users / "srv" / "db" / "d.db")})
    prepared = privilege_drop.prepare_agent_drop(loaded)
    assert prepared is not None
    assert not (users / "srv").exists()  # the user could make it: not made yet
    PidLock(Path(str(loaded.paths.db) + ".lock")).acquire()  # as the root agent does
    hand_over(needs_of(loaded), prepared.account, prepared.missing)
    for made in (users / "srv", users / "srv" / "db"):
        assert made.stat().st_uid == 65534, made


def test_a_missing_directory_the_user_could_not_make_is_made_and_given(daemon_dir: Path) -> None:
    loaded = _loaded(daemon_dir, **{"daemon.socket": str(daemon_dir / "sock" / "d.sock")})
    hand_over(needs_of(loaded), lookup_account(USER))
    assert (daemon_dir / "sock").stat().st_uid == 65534
    assert daemon_dir.stat().st_uid == 0
