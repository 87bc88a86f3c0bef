"""Themes as data: the shipped ones are complete, a broken one is reported and skipped, and
the stylesheets take every colour from a theme variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import daemoneye.tui
from daemoneye.tui.themes import (
    SEMANTIC_VARIABLES,
    ThemeError,
    builtin_theme_dir,
    load_themes,
    parse_theme,
    semantic_defaults,
)

TUI_DIR = Path(daemoneye.tui.__file__).parent
STYLESHEETS = sorted(TUI_DIR.rglob("*.tcss"))
SHIPPED = ("daemoneye-dark", "daemoneye-light", "daemoneye-high-contrast")


def test_the_shipped_themes_load_and_define_every_semantic_variable() -> None:
    loaded = load_themes([builtin_theme_dir()])
    assert loaded.problems == ()
    themes = {theme.name: theme for theme in loaded.themes}
    assert set(SHIPPED) <= set(themes)
    assert not themes["daemoneye-light"].dark
    for name in SHIPPED:
        missing = set(SEMANTIC_VARIABLES) - set(themes[name].variables)
        assert not missing, f"{name} lacks {missing}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nprimary = "#fff"\ncolour = "#000"\n', "unknown key 'colour'"),
        ('name = "x"\nprimary = "not a colour"\n', "primary = 'not a colour' is not a colour"),
        (
            'name = "x"\nprimary = "#fff"\n[variables]\nseverity-high = 3\n',
            "variables.severity-high must be a colour",
        ),
        ('name = "Bad Name"\nprimary = "#fff"\n', "name must be lower-case"),
        ('name = "x"\n', "primary colour is missing"),
        ('name = "x"\nprimary = "#fff\n', "TOML syntax error"),
    ],
)
def test_a_broken_theme_names_its_file_and_problem(text: str, message: str) -> None:
    with pytest.raises(ThemeError) as error:
        parse_theme(Path("/t/bad.toml"), text)
    assert str(error.value).startswith("/t/bad.toml: ")
    assert message in str(error.value)


def test_a_broken_theme_is_skipped_and_the_others_load(tmp_path: Path) -> None:
    (tmp_path / "a-broken.toml").write_text('name = "a"\nprimary = "nope"\n')
    (tmp_path / "b-good.toml").write_text('name = "b"\nprimary = "#123456"\n')
    loaded = load_themes([tmp_path])
    assert [theme.name for theme in loaded.themes] == ["b"]
    assert len(loaded.problems) == 1 and "a-broken.toml" in loaded.problems[0]


def test_themes_without_semantic_variables_get_them_from_their_palette() -> None:
    from textual.theme import BUILTIN_THEMES

    colours = BUILTIN_THEMES["nord"].to_color_system().generate()
    defaults = semantic_defaults(colours)
    assert set(defaults) == set(SEMANTIC_VARIABLES)
    assert defaults["severity-critical"] == colours["error"]


_HEX = re.compile(r"#[0-9a-fA-F]{3,8}\b")
_COLOUR_PROPERTY = re.compile(
    r"^\s*(color|background|border[a-z-]*|outline[a-z-]*|scrollbar-(?!gutter|size)[a-z-]*|link[a-z-]*"
    r"|tint)\s*:\s*(?P<value>[^;]+);",
    re.MULTILINE,
)
_ALLOWED_WORDS = {
    "none",
    "hidden",
    "solid",
    "round",
    "tall",
    "thick",
    "heavy",
    "vkey",
    "hkey",
    "wide",
    "double",
    "dashed",
    "blank",
    "inner",
    "outer",
    "panel",
    "ascii",
    "transparent",
    "bold",
    "reverse",
    "strike",
    "underline",
    "italic",
}


@pytest.mark.parametrize("path", STYLESHEETS, ids=lambda p: p.name)
def test_stylesheets_take_colours_only_from_theme_variables(path: Path) -> None:
    text = path.read_text()
    assert not _HEX.search(text), f"{path.name} has a hex colour"
    for match in _COLOUR_PROPERTY.finditer(text):
        for word in match.group("value").split():
            if word.startswith("$") or word in _ALLOWED_WORDS or re.fullmatch(r"[\d%.]+", word):
                continue
            if match.group(1).startswith("scrollbar-size") or match.group(1) == "link-style":
                continue
            pytest.fail(
                f"{path.name}: {match.group(0).strip()!r} uses {word!r}, not a theme variable"
            )


def test_semantic_variables_are_used_by_the_stylesheets() -> None:
    used = set(re.findall(r"\$([a-z-]+)", "".join(p.read_text() for p in STYLESHEETS)))
    assert set(SEMANTIC_VARIABLES) <= used


def test_no_dashboard_code_parses_markup() -> None:
    """Hostile text is rendered with Text(), never through a markup parser."""
    for path in TUI_DIR.rglob("*.py"):
        text = path.read_text()
        assert "from_markup(" not in text, path
        assert "markup=True" not in text, path
