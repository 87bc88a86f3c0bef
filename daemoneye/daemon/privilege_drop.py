"""The agent's side of the privilege split: before it gives up root, the files and directories
it will need are handed to the daemon's user; then it drops (procmond/privileges.py).

Only the daemon's own system directories (/var/lib/daemoneye, /run/daemoneye,
/var/log/daemoneye) are created and given away whole. Anywhere else (`--db /srv/x.db`), the
directory must already let the user in: it is checked, never chowned, so a store path can
never make the daemon give /srv or /tmp away. Files are changed through a descriptor opened
without following symlinks, and a file with a second hard link is refused: a planted link in
the user's directory cannot make root chown /etc/shadow.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from daemoneye.config.schema import LoadedConfig
from daemoneye.engine import last_good
from daemoneye.engine.audit_checkpoint import key_path_for
from daemoneye.models import ProcessPrivileges
from daemoneye.paths import SYSTEM_DB, SYSTEM_SOCKET, Mode
from daemoneye.procmond.privileges import (
    Account,
    PrivilegeError,
    drop_agent,
    lookup_account,
    read_privileges,
)
from daemoneye.store.files import side_files

log = logging.getLogger(__name__)

SYSTEM_LOG_DIR = Path("/var/log/daemoneye")
# The daemon's own directories in system mode (as packaging/systemd/daemoneye.tmpfiles makes
# them): created when missing and owned by the daemon's user.
OWN_DIRECTORIES = {SYSTEM_DB.parent: 0o750, SYSTEM_SOCKET.parent: 0o755, SYSTEM_LOG_DIR: 0o750}


@dataclass(frozen=True, slots=True)
class Needs:
    """What the agent writes once it is no longer root."""

    directories: tuple[Path, ...]  # it creates and replaces files in these
    files: tuple[Path, ...]  # existing ones are handed over (missing ones it creates)
    trees: tuple[Path, ...]  # directories of its own, handed over with what they hold


def needs_of(loaded: LoadedConfig) -> Needs:
    """The store with its lock, WAL, shm, audit key and kept rule copies, the socket's
    directory, and the file sink's file when it is on."""
    db = loaded.paths.db
    directories = [db.parent, loaded.paths.socket.parent]
    files = [db, *side_files(db), Path(str(db) + ".lock"), key_path_for(db)]
    sink = loaded.config.sinks.file
    if sink.enabled and sink.path:
        directories.append(Path(sink.path).parent)
        files.append(Path(sink.path))
    return Needs(tuple(dict.fromkeys(directories)), tuple(files), (last_good.directory_for(db),))


def _may(info: os.stat_result, account: Account, bits: int) -> bool:
    """Whether `account` has permission `bits` (rwx as 0o7) on a file with `info`."""
    if info.st_uid == account.uid:
        return info.st_mode >> 6 & bits == bits
    if info.st_gid in account.groups:
        return info.st_mode >> 3 & bits == bits
    return info.st_mode & bits == bits


def _blocker(directory: Path, account: Account, *, write: bool) -> str | None:
    """Why `account` cannot search every directory down to `directory` and (with `write`)
    create files in it; None when it can (or when the rest does not exist yet)."""
    for ancestor in reversed((directory, *directory.parents)):
        try:
            info = os.stat(ancestor)
        except FileNotFoundError:
            return None  # created below: as root, then handed over
        wants = 0o3 if write and ancestor == directory else 0o1
        if not _may(info, account, wants):
            what = "writable" if wants == 0o3 else "searchable"
            return (
                f"{ancestor} is not {what} by user {account.name} (owner uid {info.st_uid}, "
                f"group gid {info.st_gid}, mode {stat.S_IMODE(info.st_mode):04o})"
            )
    return None


def _check_reachable(directory: Path, account: Account, *, write: bool) -> None:
    blocker = _blocker(directory, account, write=write)
    if blocker is not None:
        raise PrivilegeError(
            f"{directory} is needed by the daemon once it runs as user {account.name}, but "
            f"{blocker}: change its owner or mode, or set [daemon] user"
        )


def _give(path: Path, account: Account, *, directory: bool) -> None:
    """chown `path` to `account` through a descriptor that did not follow a symlink; missing
    paths are skipped, links and multiply-linked files refused."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    if directory:
        flags |= os.O_DIRECTORY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise PrivilegeError(
            f"cannot hand {path} to user {account.name}: {exc.strerror} (a symlink is refused)"
        ) from None
    try:
        info = os.fstat(fd)
        if not directory and (not stat.S_ISREG(info.st_mode) or info.st_nlink != 1):
            raise PrivilegeError(
                f"cannot hand {path} to user {account.name}: not a regular file with a single "
                "link; remove it if the daemon did not make it"
            )
        if (info.st_uid, info.st_gid) != (account.uid, account.gid):
            os.fchown(fd, account.uid, account.gid)
    finally:
        os.close(fd)


def _give_tree(root: Path, account: Account) -> None:
    if not os.path.lexists(root):
        return
    _give(root, account, directory=True)
    for parent, subdirectories, names in os.walk(root, followlinks=False):
        for name in subdirectories:
            _give(Path(parent) / name, account, directory=True)
        for name in names:
            _give(Path(parent) / name, account, directory=False)


def _nearest_existing(directory: Path) -> Path:
    for candidate in (directory, *directory.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path("/")


def _missing_chain(directory: Path) -> tuple[Path, ...]:
    """`directory` and those of its parents that do not exist yet."""
    return tuple(d for d in (directory, *directory.parents) if not os.path.lexists(d))


def hand_over(
    needs: Needs, account: Account, made_since: tuple[Path, ...] = ()
) -> tuple[Path, ...]:
    """Make everything in `needs` usable by `account`; run as root, before dropping. Missing
    directories elsewhere than the daemon's own are only checked (the nearest existing one must
    let the user in) and returned: the root agent may make them before it drops (the store's
    directory for its lock), and the next call gives those in `made_since` to the user."""
    missing: list[Path] = []
    for directory in needs.directories:
        mode = OWN_DIRECTORIES.get(directory)
        if mode is None and not os.path.lexists(directory):
            # Someone else's place. Where the user may make it, it is made later (by the root
            # agent, then given on the next call, or by the user, who says what fails);
            # otherwise it is made here, as root, and given.
            nearest = _nearest_existing(directory)
            _check_reachable(nearest, account, write=False)
            chain = _missing_chain(directory)
            if _blocker(nearest, account, write=True) is None:
                missing.extend(chain)
                continue
            try:
                directory.mkdir(parents=True, mode=0o700)
            except OSError as exc:
                raise PrivilegeError(f"cannot create {directory}: {exc.strerror}") from None
            for made in chain:
                _give(made, account, directory=True)
        if mode is None and directory in made_since:
            for made in (d for d in made_since if d == directory or d in directory.parents):
                _give(made, account, directory=True)
        if mode is not None:
            _check_reachable(directory.parent, account, write=False)
            if not os.path.lexists(directory):
                try:
                    directory.mkdir(parents=True, mode=mode or 0o700)
                    os.chmod(directory, mode or 0o700)  # not the umask's (systemd's is 0077)
                except OSError as exc:
                    raise PrivilegeError(
                        f"cannot create {directory}: {exc.strerror}; under systemd it comes "
                        "from packaging/systemd/daemoneye.tmpfiles (`systemd-tmpfiles --create "
                        "daemoneye.conf`)"
                    ) from None
            _give(directory, account, directory=True)
        _check_reachable(directory, account, write=True)
    for path in needs.files:
        _give(path, account, directory=False)
    for tree in needs.trees:
        _give_tree(tree, account)
    return tuple(dict.fromkeys(missing))


def code_directories() -> tuple[Path, ...]:
    """Python's standard library and the directory DaemonEye is installed in."""
    return (Path(os.__file__).parent, Path(__file__).parents[1])


def check_interpreter_readable(
    account: Account, directories: tuple[Path, ...] | None = None
) -> None:
    """PrivilegeError unless `account` can read Python's standard library and DaemonEye's own
    code: modules are imported lazily long after the drop (watchfiles imports `platform` when
    the rule watcher starts), and each such import would fail, at a random time, as that user.
    A Python under /root (pyenv's default) is the usual cause."""
    for directory in code_directories() if directories is None else directories:
        blocker = _blocker(directory, account, write=False)
        if blocker is None and not _may(os.stat(directory), account, 0o5):
            blocker = f"{directory} is not readable by user {account.name}"
        if blocker is not None:
            raise PrivilegeError(
                f"Python's modules in {directory} are out of reach for user {account.name} "
                f"({blocker}): install Python and DaemonEye where that user can read them "
                "(/usr, /opt), or set [daemon] user"
            )


def _warn_unreadable_config(loaded: LoadedConfig, account: Account) -> None:
    for path in loaded.files_read:
        try:
            info = os.stat(path)
        except OSError:
            continue
        if not _may(info, account, 0o4):
            log.warning(
                "%s is not readable by user %s: SIGHUP cannot reload it once the daemon has "
                "dropped to that user (chgrp %s it and chmod 0640)",
                path,
                account.name,
                account.name,
            )


@dataclass(frozen=True, slots=True)
class Prepared:
    """What `prepare_agent_drop` did: the user, and the directories it found missing."""

    account: Account
    missing: tuple[Path, ...]


def effective_user(loaded: LoadedConfig) -> LoadedConfig:
    """`loaded` with the user a root daemon runs as. That is `[daemon] user` — except for a
    user-mode daemon (the dashboard's private one, a first try as root) whose user was left
    at the default while no such user exists: there it is root without capabilities (as
    `user = "root"`), said in the log, rather than a refusal to start. A system daemon, or a
    user named anywhere in the config, must exist."""
    name = loaded.config.daemon.user
    origin = next((s.origin for s in loaded.settings if s.key == "daemon.user"), "default")
    if os.geteuid() != 0 or loaded.paths.mode is not Mode.USER or origin != "default":
        return loaded
    try:
        pwd.getpwnam(name)
    except KeyError:
        log.warning(
            "no user %r: this user-mode daemon keeps uid 0 without capabilities "
            "(create the user, or set [daemon] user, to run it unprivileged)",
            name,
        )
        daemon = dataclasses.replace(loaded.config.daemon, user="root")
        return dataclasses.replace(loaded, config=dataclasses.replace(loaded.config, daemon=daemon))
    return loaded


def prepare_agent_drop(loaded: LoadedConfig) -> Prepared | None:
    """Started as root: check `[daemon] user` and hand it the daemon's directories and files,
    before the agent makes any. None when not root. `drop_agent_privileges` does it again for
    what was made in between (the lock, the store read for procmond's boot time)."""
    if os.geteuid() != 0:
        return None
    account = lookup_account(loaded.config.daemon.user)
    check_interpreter_readable(account)
    return Prepared(account, hand_over(needs_of(loaded), account))


def drop_agent_privileges(loaded: LoadedConfig, prepared: Prepared | None = None) -> Account | None:
    """The agent's one call, made once procmond is running and before any thread starts:
    started as root, hand the daemon's files to `[daemon] user` and become that user with no
    capabilities and no_new_privs (the account is returned); otherwise only no_new_privs
    (None: nothing to drop). PrivilegeError says what stands in the way."""
    if os.geteuid() != 0:
        drop_agent(None)
        return None
    if prepared is None:
        prepared = prepare_agent_drop(loaded)
        assert prepared is not None
    account = prepared.account
    hand_over(needs_of(loaded), account, prepared.missing)
    _warn_unreadable_config(loaded, account)
    drop_agent(account)
    log.info(
        "running as user %s (uid %d) with no capabilities; procmond keeps its own",
        account.name,
        account.uid,
    )
    return account


def privileges_of(pid: int | None, role: str) -> ProcessPrivileges | None:
    """`pid`'s privileges for health; None when there is no such process (not running)."""
    if pid is None:
        return None
    try:
        return read_privileges(pid, role)
    except (OSError, PrivilegeError):
        return None
