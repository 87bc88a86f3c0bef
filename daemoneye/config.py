"""Layered, typed configuration (ARCHITECTURE.md §6).

Precedence, lowest first: built-in defaults < system file < user file < environment < flags.
Every value remembers the layer it came from, so `daemoneye config show` can say why a setting
has the value it has. Every problem names its file (and line) or variable, the key, and the
closest valid key.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from daemoneye.errors import ConfigError
from daemoneye.paths import MODE_ENV, Mode, Paths, default_mode, parse_mode, resolve_paths

CONFIG_ENV = "DAEMONEYE_CONFIG"
_RESERVED_ENV = {MODE_ENV, CONFIG_ENV}
# The seed's component prefixes: each names the section its variables set.
_COMPONENT_PREFIXES = (
    ("DAEMONEYE_AGENT_", "daemon"),
    ("DAEMONEYE_CLI_", "cli"),
    ("PROCMOND_", "collector"),
)

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
}
_NUMBER_WITH_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def _spec(kind: str, doc: str, *, lo: float | None = None, hi: float | None = None,
          choices: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"kind": kind, "doc": doc, "lo": lo, "hi": hi, "choices": choices}


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """How processes are observed."""

    interval: float = field(default=1.0, metadata=_spec(
        "duration", "Seconds between two /proc scans.", lo=0.1, hi=3600.0))
    update_interval: float = field(default=10.0, metadata=_spec(
        "duration", "How often changed rss/cpu/state values are written to the store.",
        lo=1.0, hi=3600.0))
    hash_executables: bool = field(default=True, metadata=_spec(
        "bool", "Compute the SHA-256 of every executable (in a worker thread, cached)."))
    hash_max_bytes: int = field(default=64 * 1024**2, metadata=_spec(
        "size", "Executables larger than this are not hashed.", lo=0, hi=16 * 1024**3))
    events: bool = field(default=True, metadata=_spec(
        "bool", "Use the kernel's process-event connector when permitted (root)."))


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where history is kept and for how long."""

    path: str = field(default="", metadata=_spec(
        "path", "Database file; empty means the mode's default path."))
    retention: float = field(default=7 * 86400.0, metadata=_spec(
        "duration", "Ended processes and events older than this are deleted.",
        lo=60.0, hi=3650 * 86400.0))
    max_bytes: int = field(default=1024**3, metadata=_spec(
        "size", "The oldest history is deleted when the database grows past this.",
        lo=1024**2, hi=1024**4))
    retention_check_interval: float = field(default=300.0, metadata=_spec(
        "duration", "How often retention runs.", lo=1.0, hi=86400.0))


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The daemon process itself."""

    log_level: str = field(default="info", metadata=_spec(
        "enum", "Logging threshold on stderr.", choices=("debug", "info", "warning", "error")))
    socket: str = field(default="", metadata=_spec(
        "path", "The IPC socket; empty means the mode's default path."))


@dataclass(frozen=True, slots=True)
class CliConfig:
    """Defaults of the command-line client."""

    output: str = field(default="table", metadata=_spec(
        "enum", "Output format of list commands.", choices=("table", "json", "ndjson", "csv")))


@dataclass(frozen=True, slots=True)
class Config:
    collector: CollectorConfig = CollectorConfig()
    store: StoreConfig = StoreConfig()
    daemon: DaemonConfig = DaemonConfig()
    cli: CliConfig = CliConfig()


@dataclass(frozen=True, slots=True)
class Setting:
    """One effective value and the layer it came from."""

    key: str  # "section.key"
    value: Any
    origin: str
    doc: str


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    paths: Paths  # with store.path / daemon.socket overrides applied
    settings: tuple[Setting, ...]
    files_read: tuple[Path, ...]


SECTIONS: dict[str, type[Any]] = {f.name: type(getattr(Config(), f.name)) for f in fields(Config)}
KEYS: dict[str, dict[str, Any]] = {
    f"{section}.{f.name}": dict(f.metadata)
    for section, cls in SECTIONS.items() for f in fields(cls)
}


def _closest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_key_message(dotted: str) -> str:
    section, _, key = dotted.partition(".")
    if section not in SECTIONS:
        return f"unknown section {section!r}{_closest(section, list(SECTIONS))}"
    return f"unknown key {dotted!r}{_closest(dotted, list(KEYS))}"


def _parse_unit(raw: str, units: Mapping[str, float]) -> float | None:
    match = _NUMBER_WITH_UNIT.match(raw)
    if not match or match.group(2).lower() not in units:
        return None
    return float(match.group(1)) * units[match.group(2).lower()]


def coerce(dotted: str, raw: Any, *, from_text: bool) -> Any:
    """Turn a TOML value (or, when from_text, an environment/flag string) into the key's type.
    Raises ValueError with a message that names what is wrong with the value."""
    spec = KEYS[dotted]
    kind = spec["kind"]
    value: Any
    if kind == "bool":
        if isinstance(raw, bool):
            value = raw
        elif from_text and str(raw).strip().lower() in ("1", "true", "yes", "on"):
            value = True
        elif from_text and str(raw).strip().lower() in ("0", "false", "no", "off"):
            value = False
        else:
            raise ValueError(f"expected true or false, got {raw!r}")
        return value
    if kind in ("duration", "size"):
        units = _DURATION_UNITS if kind == "duration" else _SIZE_UNITS
        if isinstance(raw, bool):
            raise ValueError(f"expected a {kind}, got {raw!r}")
        if isinstance(raw, int | float):
            number: float | None = float(raw)
        elif isinstance(raw, str):
            number = _parse_unit(raw, {**units, "": 1.0} if kind == "duration" else units)
        else:
            number = None
        if number is None or not math.isfinite(number):
            example = "'500ms', '10s', '5m', '7d'" if kind == "duration" else "'64MiB', '1GiB'"
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
        raise ValueError(f"{raw!r} is out of range ({_fmt_bound(kind, lo)} to "
                         f"{_fmt_bound(kind, hi)})")
    return value


def _fmt_bound(kind: str, bound: float | None) -> str:
    if bound is None:
        return "unbounded"
    if kind == "duration":
        return f"{bound:g} s"
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
        elif in_section and key is not None and re.match(
                r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=", line):
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
        where = _line_of(text, section, None)
        prefix = f"{path}:{where}" if where else str(path)
        if section not in SECTIONS:
            raise ConfigError(f"{prefix}: {unknown_key_message(section + '.')}")
        if not isinstance(table, dict):
            raise ConfigError(f"{prefix}: {section!r} must be a table ([{section}])")
        for key, raw in table.items():
            dotted = f"{section}.{key}"
            line = _line_of(text, section, key)
            prefix = f"{path}:{line}" if line else str(path)
            if dotted not in KEYS:
                raise ConfigError(f"{prefix}: {unknown_key_message(dotted)}")
            try:
                values[dotted] = coerce(dotted, raw, from_text=False)
            except ValueError as exc:
                raise ConfigError(f"{prefix}: {dotted}: {exc}") from None
    return values


def env_key(name: str) -> str | None:
    """The dotted key an environment variable sets, None if it is not a config variable.
    Raises ConfigError for a variable that looks like ours but names no key."""
    if name in _RESERVED_ENV:
        return None
    for prefix, section in _COMPONENT_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix):].lower()
            dotted = rest.replace("__", ".", 1) if "__" in rest else f"{section}.{rest}"
            break
    else:
        if not name.startswith("DAEMONEYE_"):
            return None
        rest = name[len("DAEMONEYE_"):].lower()
        if "__" not in rest:
            raise ConfigError(f"environment variable {name}: expected DAEMONEYE_<SECTION>__<KEY>"
                              f"{_closest(rest.replace('_', '.', 1), list(KEYS))}")
        dotted = rest.replace("__", ".", 1)
    if dotted not in KEYS:
        raise ConfigError(f"environment variable {name}: {unknown_key_message(dotted)}")
    return dotted


def read_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """{"section.key": (value, variable name)}; generic DAEMONEYE_S__K beats component prefixes."""
    found: dict[str, tuple[Any, str]] = {}
    generic: dict[str, tuple[Any, str]] = {}
    for name in sorted(env):
        dotted = env_key(name)
        if dotted is None:
            continue
        try:
            value = coerce(dotted, env[name], from_text=True)
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}: {dotted}: {exc}") from None
        target = generic if name.startswith("DAEMONEYE_") and "__" in name and not any(
            name.startswith(p) for p, _ in _COMPONENT_PREFIXES) else found
        target[dotted] = (value, name)
    return {**found, **generic}


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
            if not path.exists():
                raise ConfigError(f"{path}: config file not found")
        if not path.exists():
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


def _merge(layers: list[tuple[str, dict[str, Any]]], env_values: Mapping[str, tuple[Any, str]],
           paths: Paths, files_read: tuple[Path, ...]) -> LoadedConfig:
    effective: dict[str, tuple[Any, str]] = {}
    defaults = Config()
    for dotted in KEYS:
        section, key = dotted.split(".")
        effective[dotted] = (getattr(getattr(defaults, section), key), "default")
    for label, values in layers:
        for dotted, value in values.items():
            origin = f"env {env_values[dotted][1]}" if label == "env" else label
            effective[dotted] = (value, origin)
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        kwargs = {f.name: effective[f"{section}.{f.name}"][0] for f in fields(cls)}
        sections[section] = cls(**kwargs)
    config = Config(**sections)
    if config.store.path:
        paths = replace(paths, db=Path(config.store.path))
    if config.daemon.socket:
        paths = replace(paths, socket=Path(config.daemon.socket))
    settings = tuple(Setting(k, v, o, KEYS[k]["doc"]) for k, (v, o) in effective.items())
    return LoadedConfig(config=config, paths=paths, settings=settings, files_read=files_read)


def mode_from_flag(value: str | None) -> Mode | None:
    return None if value is None else parse_mode(value, "--mode")

