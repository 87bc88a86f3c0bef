"""Dashboard themes as data: `themes/*.toml` (shipped) and the user's own directory.

A theme file names the Textual base colours and the semantic variables the .tcss uses
(`severity-critical` … `severity-info`, `process-new`, `process-ended`). Each file is parsed and
validated whole; a broken one is reported with its path (and line, when TOML knows it) and
skipped, never fatal. Themes that do not set a semantic variable (Textual's own, or a partial
user theme) get one derived from their base colours by `semantic_defaults`.
"""

from __future__ import annotations

import difflib
import importlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.theme import Theme

DEFAULT_THEME = "daemoneye-dark"
SEMANTIC_VARIABLES = (
    "severity-critical",
    "severity-high",
    "severity-medium",
    "severity-low",
    "severity-info",
    "process-new",
    "process-ended",
)
_BASE_COLOURS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
_KEYS = {"name", "dark", "description", *_BASE_COLOURS, "variables"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
# Theme variables whose value is not a colour (Textual accepts styles for these).
_STYLE_VARIABLES = re.compile(r"-(text-style|style)$")


class ThemeError(ValueError):
    """A theme file that cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class LoadedThemes:
    themes: tuple[Theme, ...]
    problems: tuple[str, ...]  # one sentence per skipped file


def builtin_theme_dir() -> Path:
    """The `themes/` folder shipped with DaemonEye (a top-level package in the wheel)."""
    package = importlib.import_module("themes")
    if getattr(package, "__file__", None):
        return Path(str(package.__file__)).parent
    # A namespace package (an editable install made before themes/__init__.py existed).
    return next(Path(entry) for entry in package.__path__ if Path(entry).is_dir())


def _closest(name: str) -> str:
    match = difflib.get_close_matches(name, sorted(_KEYS), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _colour(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ThemeError(f'{path}: {key} must be a colour string such as "#1e90ff"')
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeError(f"{path}: {key} = {value!r} is not a colour") from None
    return value


def parse_theme(path: Path, text: str) -> Theme:
    """One theme from the text of `path`; raises ThemeError naming what is wrong."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ThemeError(f"{path}: TOML syntax error: {exc}") from None
    for key in document:
        if key not in _KEYS:
            raise ThemeError(f"{path}: unknown key {key!r}{_closest(key)}")
    name = document.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ThemeError(f"{path}: name must be lower-case letters, digits and dashes")
    dark = document.get("dark", True)
    if not isinstance(dark, bool):
        raise ThemeError(f"{path}: dark must be true or false")
    if "primary" not in document:
        raise ThemeError(f"{path}: primary colour is missing")
    colours: dict[str, Any] = {
        key: _colour(path, key, document[key]) for key in _BASE_COLOURS if key in document
    }
    variables = document.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeError(f"{path}: [variables] must be a table")
    checked: dict[str, str] = {}
    for key, value in variables.items():
        if _STYLE_VARIABLES.search(key):
            if not isinstance(value, str):
                raise ThemeError(f"{path}: variables.{key} must be a string")
            checked[key] = value
        else:
            checked[key] = _colour(path, f"variables.{key}", value)
    return Theme(name=name, dark=dark, variables=checked, **colours)


def load_theme_file(path: Path) -> Theme:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeError(f"{path}: cannot read: {exc}") from None
    return parse_theme(path, text)


def load_themes(directories: Iterable[Path]) -> LoadedThemes:
    """Every `*.toml` theme in `directories` (later ones override earlier ones by name)."""
    themes: dict[str, Theme] = {}
    problems: list[str] = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                theme = load_theme_file(path)
            except ThemeError as exc:
                problems.append(f"theme skipped: {exc}")
                continue
            themes[theme.name] = theme
    return LoadedThemes(tuple(themes.values()), tuple(problems))


def semantic_defaults(colours: Mapping[str, str]) -> dict[str, str]:
    """Semantic variables derived from a theme's generated colour system, for themes that do
    not set them. Values are references into that theme's own palette, never fixed colours."""
    return {
        "severity-critical": colours["error"],
        "severity-high": colours["error-lighten-2"],
        "severity-medium": colours["warning"],
        "severity-low": colours["primary-lighten-2"],
        "severity-info": colours["foreground-muted"],
        "process-new": colours["success"],
        "process-ended": colours["foreground-disabled"],
    }
