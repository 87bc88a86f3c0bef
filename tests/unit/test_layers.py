"""The dependency direction of ARCHITECTURE.md §2, checked by importing in a fresh interpreter."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import daemoneye

HEADLESS_LAYERS = ("collector", "store", "engine", "ipc", "daemon")


def modules_loaded_by(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(result.stdout))


def package_modules(layer: str) -> list[str]:
    package = __import__(f"daemoneye.{layer}", fromlist=["_"])
    return [f"daemoneye.{layer}"] + [
        info.name for info in pkgutil.walk_packages(package.__path__, f"daemoneye.{layer}.")
    ]


@pytest.mark.parametrize("layer", HEADLESS_LAYERS)
def test_headless_layers_never_import_textual(layer: str) -> None:
    for module in package_modules(layer):
        loaded = modules_loaded_by(module)
        assert "textual" not in loaded, f"{module} pulls in textual"
        assert not any(m.startswith("daemoneye.tui") for m in loaded), f"{module} imports tui"


def test_models_import_nothing_of_daemoneye() -> None:
    loaded = modules_loaded_by("daemoneye.models")
    assert {m for m in loaded if m.startswith("daemoneye")} == {"daemoneye", "daemoneye.models"}


def test_collector_knows_nothing_of_store_or_engine() -> None:
    for module in package_modules("collector"):
        loaded = modules_loaded_by(module)
        leaked = {
            m
            for m in loaded
            if m.startswith(
                ("daemoneye.store", "daemoneye.engine", "daemoneye.ipc", "daemoneye.daemon")
            )
        }
        assert not leaked, f"{module} imports {sorted(leaked)}"


def test_version_is_exposed() -> None:
    assert daemoneye.__version__
