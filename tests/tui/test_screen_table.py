"""The dashboard's screens are listed once (tui/screen_table.py): every place that lists them —
modes, number keys, palette, nav bar, help — shows each one, and each screen's help names every
key the screen binds."""

from __future__ import annotations

import pytest
from textual.binding import Binding

from daemoneye.tui.screen_table import SCREENS, ScreenEntry, help_sections
from daemoneye.tui.screens.help import help_text
from daemoneye.tui.widgets.nav_bar import NavBar
from tests.tui.conftest import AppFactory
from tests.tui.helpers import settle

pytestmark = pytest.mark.anyio

# How a binding's key is written in the help text.
KEY_NAMES = {
    "slash": "/",
    "escape": "Esc",
    "enter": "Enter",
    "question_mark": "?",
    "left_square_bracket": "[",
    "right_square_bracket": "]",
    "left_curly_bracket": "{",
    "right_curly_bracket": "}",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def help_words(entry: ScreenEntry) -> set[str]:
    words: set[str] = set()
    for keys, meaning in entry.screen.HELP_KEYS:
        words.update(keys.split())
        words.update(meaning.replace("(", " ").replace(")", " ").split())
    return words


@pytest.mark.parametrize("entry", SCREENS, ids=lambda entry: entry.mode)
def test_help_names_every_key_the_screen_binds(entry: ScreenEntry) -> None:
    words = help_words(entry)
    for binding in entry.screen.BINDINGS:
        assert isinstance(binding, Binding)
        for key in binding.key.split(","):
            assert KEY_NAMES.get(key, key) in words, (
                f"{entry.screen.__name__} binds {key!r} ({binding.action}) but its HELP_KEYS "
                "do not mention it"
            )


def test_every_screen_has_its_own_key_and_mode() -> None:
    assert len({entry.key for entry in SCREENS}) == len(SCREENS)
    assert len({entry.mode for entry in SCREENS}) == len(SCREENS)
    assert all(entry.mode for entry in SCREENS)


def test_help_has_a_section_per_screen_and_the_keys_to_reach_them() -> None:
    text = help_text(help_sections(), "processes").plain
    for entry in SCREENS:
        assert f"{entry.title}\n" in text
    assert f"{SCREENS[0].key} … {SCREENS[-1].key}" in text


async def test_every_screen_is_reachable_by_key_nav_bar_and_palette(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        nav = app.screen.query_one(NavBar)
        assert [item.title for item in nav.items] == [entry.title for entry in SCREENS]
        palette = {command.title for command in app.get_system_commands(app.screen)}
        for entry in SCREENS:
            assert f"Go to {entry.title}" in palette
            await pilot.press(entry.key)
            await settle(pilot)
            assert isinstance(app.screen, entry.screen)
            assert app.screen.query_one(NavBar).current == entry.mode
            assert f" {entry.key} {entry.title} " in str(app.screen.query_one(NavBar).render())
            await pilot.press("escape")  # leave a text field (Query's SQL line) for the next key
