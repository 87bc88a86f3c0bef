"""Where DaemonEye keeps its files, per mode (ARCHITECTURE.md §6).

System mode (the default for root) uses /etc, /var/lib and /run; user mode (the default for
everyone else) uses the XDG base directories, so an ordinary user can run a private daemon.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from daemoneye.errors import ConfigError

SYSTEM_CONFIG_FILE = Path("/etc/daemoneye/config.toml")
SYSTEM_RULES_DIR = Path("/etc/daemoneye/rules.d")
SYSTEM_DB = Path("/var/lib/daemoneye/daemoneye.db")
SYSTEM_SOCKET = Path("/run/daemoneye/daemoneye.sock")
BUILTIN_RULES_DIR = Path(__file__).parent / "engine" / "rules"

MODE_ENV = "DAEMONEYE_MODE"


class Mode(enum.Enum):
    SYSTEM = "system"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Paths:
    """Every path one mode uses. `config_file` is the file of the mode's own layer."""

    mode: Mode
    system_config_file: Path
    user_config_file: Path | None  # None in system mode: root's daemon reads /etc only
    rules_dirs: tuple[Path, ...]  # lowest precedence first
    db: Path
    socket: Path

    @property
    def config_files(self) -> tuple[Path, ...]:
        """Config files in precedence order, lowest first."""
        if self.user_config_file is None:
            return (self.system_config_file,)
        return (self.system_config_file, self.user_config_file)


def parse_mode(value: str, source: str) -> Mode:
    try:
        return Mode(value.strip().lower())
    except ValueError:
        raise ConfigError(f"{source}: mode must be 'system' or 'user', not {value!r}") from None


def default_mode(env: Mapping[str, str], euid: int) -> Mode:
    """System mode for root, user mode otherwise; $DAEMONEYE_MODE overrides."""
    if MODE_ENV in env:
        return parse_mode(env[MODE_ENV], MODE_ENV)
    return Mode.SYSTEM if euid == 0 else Mode.USER


def _xdg(env: Mapping[str, str], name: str, fallback: Path) -> Path:
    value = env.get(name, "")
    # The XDG spec says relative values are invalid and must be ignored.
    return Path(value) if value and os.path.isabs(value) else fallback


def runtime_dir(env: Mapping[str, str], uid: int) -> Path:
    """$XDG_RUNTIME_DIR, else /run/user/<uid> when it exists, else a private dir under /tmp."""
    value = env.get("XDG_RUNTIME_DIR", "")
    if value and os.path.isabs(value):
        return Path(value)
    run_user = Path(f"/run/user/{uid}")
    if run_user.is_dir():
        return run_user
    return Path(f"/tmp/daemoneye-{uid}")


def resolve_paths(mode: Mode, env: Mapping[str, str] | None = None) -> Paths:
    """The paths of `mode`; `env` defaults to os.environ (tests pass their own)."""
    env = os.environ if env is None else env
    if mode is Mode.SYSTEM:
        return Paths(
            mode=mode,
            system_config_file=SYSTEM_CONFIG_FILE,
            user_config_file=None,
            rules_dirs=(BUILTIN_RULES_DIR, SYSTEM_RULES_DIR),
            db=SYSTEM_DB,
            socket=SYSTEM_SOCKET,
        )
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    config_home = _xdg(env, "XDG_CONFIG_HOME", home / ".config") / "daemoneye"
    state_home = _xdg(env, "XDG_STATE_HOME", home / ".local" / "state") / "daemoneye"
    return Paths(
        mode=mode,
        system_config_file=SYSTEM_CONFIG_FILE,
        user_config_file=config_home / "config.toml",
        rules_dirs=(BUILTIN_RULES_DIR, SYSTEM_RULES_DIR, config_home / "rules.d"),
        db=state_home / "daemoneye.db",
        socket=runtime_dir(env, os.getuid()) / "daemoneye.sock",
    )
