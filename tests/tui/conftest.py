"""Dashboard test fixtures: a UTC clock, apps over a FakeSource, and snapshots stored in the
top-level `snapshots/` folder.

pytest-textual-snapshot stores SVGs through syrupy's single-file extension, which puts them in
`__snapshots__/<test module>/` next to the test and has no option for another directory. The
`snapshot` fixture below swaps in a subclass of the plugin's SVG extension whose `dirname` is
`snapshots/<test module>/` at the top of the repository; everything else (normalisation,
`--snapshot-update`, the HTML report, unused-snapshot detection by module name) is unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_textual_snapshot import SVGImageExtension  # type: ignore[import-untyped]
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.base import AbstractSyrupyExtension
from syrupy.location import PyTestLocation

from daemoneye.tui.app import DaemonEyeApp
from tests.fakes.dashboard_source import FakeSource, FrozenClock

SNAPSHOTS_DIR = Path(__file__).resolve().parents[2] / "snapshots"


class TopLevelSVGExtension(SVGImageExtension):  # type: ignore[misc]
    """The plugin's SVG extension, storing under the repository's `snapshots/` folder."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(SNAPSHOTS_DIR / test_location.basename)


class TopLevelSnapshotAssertion(SnapshotAssertion):
    """`snap_compare` calls `use_extension(SVGImageExtension)`; keep our subclass instead."""

    def use_extension(
        self, extension_class: type[AbstractSyrupyExtension] | None = None
    ) -> SnapshotAssertion:
        if extension_class is SVGImageExtension:
            extension_class = TopLevelSVGExtension
        return super().use_extension(extension_class)


@pytest.fixture
def snapshot(request: pytest.FixtureRequest) -> SnapshotAssertion:
    return TopLevelSnapshotAssertion(
        update_snapshots=request.config.option.update_snapshots,
        extension_class=TopLevelSVGExtension,
        test_location=PyTestLocation(request.node),
        session=request.session.config._syrupy,  # type: ignore[attr-defined]
    )


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times on screen are local times: pin the zone so snapshots do not depend on the host."""
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("NO_COLOR", raising=False)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(autouse=True)
def no_user_themes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the tester's own config and editor out of the dashboard."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("EDITOR", "true")
    monkeypatch.delenv("VISUAL", raising=False)


AppFactory = Callable[..., DaemonEyeApp]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def make_app(clock: FrozenClock) -> AppFactory:
    """`make_app(source=None, **app_kwargs)`: a dashboard over a FakeSource with a frozen
    clock (the source defaults to the sample host)."""

    def make(source: FakeSource | None = None, **kwargs: Any) -> DaemonEyeApp:
        kwargs.setdefault("clock", clock)
        return DaemonEyeApp(source if source is not None else FakeSource(), **kwargs)

    return make
