"""Is a component built yet? Decided by importing it, never by reading the source."""

from __future__ import annotations

import importlib


def missing(module: str, attribute: str | None = None) -> str | None:
    """None when `module` (and `attribute` in it) can be imported; else why not, in one line.
    A module that exists but fails to import is reported with its error, not as "not built"."""
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and module.startswith(error.name):
            return f"{error.name} does not exist"
        return f"{module} fails to import: {error}"
    except Exception as error:  # someone else's half-written module
        return f"{module} fails to import: {type(error).__name__}: {error}"
    if getattr(loaded, "__file__", None) is None:
        # A directory without __init__.py imports as a namespace package (e.g. a data
        # directory such as daemoneye/engine/rules/): that is no code, so not built.
        return f"{module} is a directory, not a module: does not exist"
    if attribute is not None and not hasattr(loaded, attribute):
        return f"{module} has no {attribute}"
    return None


def not_built(reason: str) -> bool:
    """True when `missing` said the component is absent (as opposed to broken)."""
    return reason.endswith("does not exist") or " has no " in reason
