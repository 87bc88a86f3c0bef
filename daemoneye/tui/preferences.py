"""The dashboard's remembered choices (`[tui] theme`, `hide_kernel_threads`, `show_meters`), written
into the user's config file.

The file is edited with tomlkit so the user's comments, order and formatting survive; the new
text is written to a temporary file and renamed over the old one, keeping its permissions.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError

from daemoneye.config.schema import LoadedConfig
from daemoneye.errors import ConfigError
from daemoneye.paths import Mode, resolve_paths


def preference_file(loaded: LoadedConfig) -> Path:
    """The user's config file; in system mode (root) the XDG one, since /etc is not a place
    for one person's colours."""
    if loaded.paths.user_config_file is not None:
        return loaded.paths.user_config_file
    user_file = resolve_paths(Mode.USER).user_config_file
    assert user_file is not None
    return user_file


def _configured(loaded: LoadedConfig, key: str) -> object:
    """The value of `[tui] key` that the configuration sets, None when nothing set it."""
    for setting in loaded.settings:
        if setting.key == f"tui.{key}" and setting.origin != "default":
            return setting.value
    # System mode does not read the user's file; the remembered choice is still theirs.
    if loaded.paths.user_config_file is None:
        try:
            document = tomllib.loads(preference_file(loaded).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None
        table = document.get("tui")
        return table.get(key) if isinstance(table, dict) else None
    return None


def configured_theme(loaded: LoadedConfig) -> str | None:
    """The theme the configuration asks for, None when nothing set it."""
    value = _configured(loaded, "theme")
    return value if isinstance(value, str) and value else None


def configured_hide_kernel_threads(loaded: LoadedConfig) -> bool:
    """Whether the processes screen starts with kernel threads hidden."""
    return _configured(loaded, "hide_kernel_threads") is True


def configured_show_container(loaded: LoadedConfig) -> bool:
    """Whether the processes screen starts with the CONTAINER column."""
    return _configured(loaded, "show_container") is True


def remember_show_container(path: Path, show: bool) -> None:
    """Set `[tui] show_container = true|false` in `path` (see `remember`)."""
    remember(path, "show_container", show, "the container column choice")


def configured_show_meters(loaded: LoadedConfig) -> bool:
    """Whether the processes screen starts with the host meters shown (the default)."""
    return _configured(loaded, "show_meters") is not False


def remember_show_meters(path: Path, show: bool) -> None:
    """Set `[tui] show_meters = true|false` in `path` (see `remember`)."""
    remember(path, "show_meters", show, "the host meters choice")


def remember_theme(path: Path, theme: str) -> None:
    """Set `[tui] theme = "<theme>"` in `path` (see `remember`)."""
    remember(path, "theme", theme, "the theme")


def remember_hide_kernel_threads(path: Path, hide: bool) -> None:
    """Set `[tui] hide_kernel_threads = true|false` in `path` (see `remember`)."""
    remember(path, "hide_kernel_threads", hide, "the kernel threads choice")


def remember(path: Path, key: str, value: str | bool, what: str) -> None:
    """Set `[tui] key = value` in `path`, creating it if needed, keeping everything else as
    it was. Raises ConfigError when the file cannot be read, parsed or written."""
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        document = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except TOMLKitError as exc:
        raise ConfigError(f"{path}: not saving {what}, the file is not valid TOML: {exc}") from None
    table = document.get("tui")
    if table is None:
        table = tomlkit.table()
        document.add("tui", table)
    elif not isinstance(table, dict):
        raise ConfigError(f"{path}: not saving {what}, 'tui' is not a table")
    table[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config.", suffix=".toml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(tomlkit.dumps(document))
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"{path}: cannot save {what}: {exc.strerror}") from None
