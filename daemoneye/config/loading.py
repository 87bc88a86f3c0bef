"""Layered loading (ARCHITECTURE.md §6).

Precedence, lowest first: built-in defaults < system file < user file < environment < flags.
Every value remembers the layer it came from, so `daemoneye config show` can say why a setting
has the value it has. Every problem names its file (and line) or variable, the key, and the
closest valid key.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from daemoneye.config.env_aliases import ENV_ALIASES
from daemoneye.config.schema import (
    GROUPS,
    KEYS,
    SECTIONS,
    Config,
    LoadedConfig,
    Setting,
    closest_hint,
    unknown_key_message,
)
from daemoneye.errors import ConfigError
from daemoneye.paths import MODE_ENV, Mode, Paths, default_mode, parse_mode, resolve_paths
from daemoneye.units import DURATION_EXAMPLES, parse_duration

log = logging.getLogger(__name__)

CONFIG_ENV = "DAEMONEYE_CONFIG"
_RESERVED_ENV = {MODE_ENV, CONFIG_ENV}
# The seed's component prefixes: each names the section its variables set.
_COMPONENT_PREFIXES = (
    ("DAEMONEYE_AGENT_", "daemon"),
    ("DAEMONEYE_CLI_", "cli"),
    ("PROCMOND_", "collector"),
)

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}
_NUMBER_WITH_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def _parse_unit(raw: str, units: Mapping[str, float]) -> float | None:
    match = _NUMBER_WITH_UNIT.match(raw)
    if not match or match.group(2).lower() not in units:
        return None
    return float(match.group(1)) * units[match.group(2).lower()]


def coerce(dotted: str, raw: Any, *, from_text: bool) -> Any:
    """Turn a TOML value (or, when from_text, an environment/flag string) into the key's type.
    Raises ValueError with a message that names what is wrong with the value."""
    value = _coerce_kind(dotted, raw, from_text=from_text)
    check = KEYS[dotted]["check"]
    if check is not None:
        check(value)
    return value


def _coerce_table(raw: Any, *, from_text: bool) -> tuple[tuple[str, str], ...]:
    """A table of strings: a TOML table, or (from text) a JSON object."""
    table = raw
    if from_text and isinstance(raw, str):
        try:
            table = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, RecursionError):
            raise ValueError(
                f'expected a JSON object such as \'{{"Authorization": "Bearer …"}}\', got {raw!r}'
            ) from None
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in table.items()
    ):
        raise ValueError(f'expected a table of strings such as {{ Name = "value" }}, got {raw!r}')
    return tuple(table.items())


def _coerce_names(raw: Any, *, from_text: bool) -> tuple[str, ...]:
    """A list of names: a TOML array of strings, or (from text) a comma-separated string."""
    if from_text and isinstance(raw, str):
        return tuple(name.strip() for name in raw.split(",") if name.strip())
    if not isinstance(raw, list | tuple) or not all(isinstance(name, str) for name in raw):
        raise ValueError(f'expected a list of names such as ["LD_PRELOAD", "PATH"], got {raw!r}')
    return tuple(raw)


def _coerce_kind(dotted: str, raw: Any, *, from_text: bool) -> Any:
    spec = KEYS[dotted]
    kind = spec["kind"]
    value: Any
    if kind == "table":
        return _coerce_table(raw, from_text=from_text)
    if kind == "names":
        return _coerce_names(raw, from_text=from_text)
    if kind == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif from_text and isinstance(raw, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", raw):
            value = int(raw)
        else:
            raise ValueError(f"expected a whole number, got {raw!r}")
    elif kind == "bool":
        if isinstance(raw, bool):
            value = raw
        elif from_text and str(raw).strip().lower() in ("1", "true", "yes", "on"):
            value = True
        elif from_text and str(raw).strip().lower() in ("0", "false", "no", "off"):
            value = False
        else:
            raise ValueError(f"expected true or false, got {raw!r}")
        return value
    elif kind in ("duration", "size"):
        if isinstance(raw, bool):
            raise ValueError(f"expected a {kind}, got {raw!r}")
        if isinstance(raw, int | float):
            number: float | None = float(raw)
        elif isinstance(raw, str):
            number = parse_duration(raw) if kind == "duration" else _parse_unit(raw, _SIZE_UNITS)
        else:
            number = None
        if number is None or not math.isfinite(number):
            example = DURATION_EXAMPLES if kind == "duration" else "'64MiB', '1GiB'"
            raise ValueError(f"expected a {kind} such as {example}, got {raw!r}")
        value = number if kind == "duration" else int(number)
    elif kind == "enum":
        if not isinstance(raw, str) or raw.strip().lower() not in spec["choices"]:
            raise ValueError(f"expected one of {', '.join(spec['choices'])}, got {raw!r}")
        return raw.strip().lower()
    elif kind in ("path", "str"):
        if not isinstance(raw, str):
            raise ValueError(f"expected a string, got {raw!r}")
        return os.path.expanduser(raw) if kind == "path" and raw else raw
    else:  # pragma: no cover - a schema error, caught by the tests over KEYS
        raise AssertionError(f"unknown kind {kind}")
    lo, hi = spec["lo"], spec["hi"]
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(
            f"{raw!r} is out of range ({_fmt_bound(kind, lo)} to {_fmt_bound(kind, hi)})"
        )
    return value


def _fmt_bound(kind: str, bound: float | None) -> str:
    if bound is None:
        return "unbounded"
    if kind == "duration":
        return f"{bound:g} s"
    if kind == "int":
        return str(int(bound))
    return f"{int(bound)} bytes"


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """Best-effort line number of `[section]` / `key =` in a TOML text, for error messages."""
    in_section = False
    header = re.compile(r"^\s*\[\s*" + re.escape(section) + r"\s*\]")
    for number, line in enumerate(text.splitlines(), start=1):
        if header.match(line):
            if key is None:
                return number
            in_section = True
        elif line.lstrip().startswith("["):
            in_section = False
        elif (
            in_section
            and key is not None
            and re.match(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=", line)
        ):
            return number
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse and validate one config file into {"section.key": value}."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    values: dict[str, Any] = {}
    for section, table in document.items():
        _read_table(path, text, section, table, values)
    return values


def _read_table(path: Path, text: str, section: str, table: Any, values: dict[str, Any]) -> None:
    """Validate `[section]` (or, for a group such as `[sinks]`, each section in it) into
    `values`."""
    where = _line_of(text, section, None)
    prefix = f"{path}:{where}" if where else str(path)
    if section not in SECTIONS and section not in GROUPS:
        parent = section.rpartition(".")[0]
        if parent in GROUPS and not isinstance(table, dict):
            raise ConfigError(f"{prefix}: {unknown_key_message(section)}")
        raise ConfigError(f"{prefix}: {unknown_key_message(section + '.')}")
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: {section!r} must be a table ([{section}])")
    if section in GROUPS:
        for name, sub in table.items():
            _read_table(path, text, f"{section}.{name}", sub, values)
        return
    for key, raw in table.items():
        dotted = f"{section}.{key}"
        line = _line_of(text, section, key) or _line_of(text, dotted, None)
        prefix = f"{path}:{line}" if line else str(path)
        if dotted not in KEYS:
            raise ConfigError(f"{prefix}: {unknown_key_message(dotted)}")
        try:
            values[dotted] = coerce(dotted, raw, from_text=False)
        except ValueError as exc:
            raise ConfigError(f"{prefix}: {dotted}: {exc}") from None


def env_key(name: str) -> str | None:
    """The dotted key an environment variable sets, None if it is not a config variable.
    Raises ConfigError for a variable that looks like ours but names no key."""
    if name in _RESERVED_ENV:
        return None
    for prefix, section in _COMPONENT_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix) :].lower()
            dotted = rest.replace("__", ".") if "__" in rest else f"{section}.{rest}"
            break
    else:
        if not name.startswith("DAEMONEYE_"):
            return None
        rest = name[len("DAEMONEYE_") :].lower()
        if "__" not in rest:
            raise ConfigError(
                f"environment variable {name}: expected DAEMONEYE_<SECTION>__<KEY>"
                f"{closest_hint(rest.replace('_', '.', 1), list(KEYS))}"
            )
        dotted = rest.replace("__", ".")
    if dotted not in KEYS:
        raise ConfigError(f"environment variable {name}: {unknown_key_message(dotted)}")
    return dotted


def read_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """{"section.key": (value, source)}; generic DAEMONEYE_S__K beats component prefixes, which
    beat the seed's aliases (config/env_aliases.py)."""
    found: dict[str, tuple[Any, str]] = {}
    generic: dict[str, tuple[Any, str]] = {}
    for name in sorted(env):
        if name in ENV_ALIASES:
            continue
        dotted = env_key(name)
        if dotted is None:
            continue
        try:
            value = coerce(dotted, env[name], from_text=True)
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}: {dotted}: {exc}") from None
        target = (
            generic
            if name.startswith("DAEMONEYE_")
            and "__" in name
            and not any(name.startswith(p) for p, _ in _COMPONENT_PREFIXES)
            else found
        )
        target[dotted] = (value, name)
    return {**_read_aliases(env), **found, **generic}


def _read_aliases(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """The seed's names that are set: each value checked and translated to our key, or a
    warning saying why it has no effect here."""
    aliased: dict[str, tuple[Any, str]] = {}
    for name in sorted(set(env) & set(ENV_ALIASES)):
        alias, raw = ENV_ALIASES[name], env[name]
        target = f" ({alias.key})" if alias.key is not None else ""
        try:
            text = alias.translate(name, raw)
            value = coerce(alias.key, text, from_text=True) if alias.key and text else None
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}{target}: {exc}") from None
        if alias.key is None or value is None:
            log.warning(
                "%s=%s is accepted for compatibility and has no effect here: %s",
                name,
                raw,
                alias.unused,
            )
            continue
        aliased[alias.key] = (value, f"{name}={raw} (alias)")
    return aliased


def _exists(path: Path) -> bool:
    """Whether a config file is there; a path we may not even look at is an error that says
    so, not a traceback (e.g. a home directory the user cannot traverse)."""
    try:
        return path.exists()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot access: {exc.strerror}") from None


def load_config(
    *,
    mode: Mode | None = None,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    euid: int | None = None,
) -> LoadedConfig:
    """Resolve the effective configuration. `flags` maps dotted keys to already-typed values
    (or strings, which are coerced like environment values)."""
    env = dict(os.environ) if env is None else dict(env)
    if mode is None:
        mode = default_mode(env, os.geteuid() if euid is None else euid)
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    paths = resolve_paths(mode, env)

    layers: list[tuple[str, dict[str, Any]]] = []
    files_read: list[Path] = []
    own_file = paths.user_config_file or paths.system_config_file
    for path in paths.config_files:
        label = "system file" if path == paths.system_config_file else "user file"
        if path == own_file and config_file is not None:
            path, label = config_file, "--config file"
            if not _exists(path):
                raise ConfigError(f"{path}: config file not found")
        if not _exists(path):
            continue
        layers.append((f"{label} {path}", read_config_file(path)))
        files_read.append(path)
    env_values = read_env(env)
    layers.append(("env", {k: v for k, (v, _) in env_values.items()}))
    flag_values: dict[str, Any] = {}
    for dotted, raw in (flags or {}).items():
        if dotted not in KEYS:
            raise ConfigError(f"flag: {unknown_key_message(dotted)}")
        try:
            flag_values[dotted] = coerce(dotted, raw, from_text=isinstance(raw, str))
        except ValueError as exc:
            raise ConfigError(f"flag for {dotted}: {exc}") from None
    layers.append(("flag", flag_values))
    return _merge(layers, env_values, paths, tuple(files_read))


def _merge(
    layers: list[tuple[str, dict[str, Any]]],
    env_values: Mapping[str, tuple[Any, str]],
    paths: Paths,
    files_read: tuple[Path, ...],
) -> LoadedConfig:
    effective: dict[str, tuple[Any, str]] = {}
    defaults = Config()
    for dotted in KEYS:
        value: Any = defaults
        for part in dotted.split("."):
            value = getattr(value, part)
        effective[dotted] = (value, "default")
    for label, values in layers:
        for dotted, value in values.items():
            origin = f"env {env_values[dotted][1]}" if label == "env" else label
            effective[dotted] = (value, origin)
    config = _build(Config, "", effective)
    _check_consistent(config)
    if config.store.path:
        paths = replace(paths, db=Path(config.store.path))
    if config.daemon.socket:
        paths = replace(paths, socket=Path(config.daemon.socket))
    settings = tuple(Setting(k, _shown(k, v), o, KEYS[k]["doc"]) for k, (v, o) in effective.items())
    return LoadedConfig(config=config, paths=paths, settings=settings, files_read=files_read)


def _build(cls: type[Any], prefix: str, effective: Mapping[str, tuple[Any, str]]) -> Any:
    """An instance of the section or group `cls` from the effective values."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        name = prefix + f.name
        if "kind" in f.metadata:
            kwargs[f.name] = effective[name][0]
        else:
            kwargs[f.name] = _build(type(getattr(cls(), f.name)), name + ".", effective)
    return cls(**kwargs)


def _shown(dotted: str, value: Any) -> Any:
    """The value as `config show` prints it: secrets hidden."""
    redact = KEYS[dotted]["redact"]
    return redact(value) if redact is not None else value


def _check_consistent(config: Config) -> None:
    """Problems no single key shows: an enabled sink without its destination."""
    daemon = config.daemon
    if daemon.admin_reserved_clients >= daemon.max_clients:
        raise ConfigError(
            f"daemon.admin_reserved_clients ({daemon.admin_reserved_clients}) must "
            f"be below daemon.max_clients ({daemon.max_clients}): readers need "
            "at least one slot"
        )
    sinks = config.sinks
    if sinks.file.enabled and not sinks.file.path:
        raise ConfigError(
            "sinks.file.enabled is true but sinks.file.path is empty: set the "
            "file alerts are appended to ([sinks.file] path = …)"
        )
    if sinks.webhook.enabled and not sinks.webhook.url:
        raise ConfigError(
            "sinks.webhook.enabled is true but sinks.webhook.url is empty: set "
            "the URL alerts are POSTed to ([sinks.webhook] url = …)"
        )


def mode_from_flag(value: str | None) -> Mode | None:
    return None if value is None else parse_mode(value, "--mode")
