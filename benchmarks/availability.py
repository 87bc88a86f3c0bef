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
    if attribute is not None and not hasattr(loaded, attribute):
        return f"{module} has no {attribute}"
    return None


def not_built(reason: str) -> bool:
    """True when `missing` said the component is absent (as opposed to broken)."""
    return reason.endswith("does not exist") or " has no " in reason
