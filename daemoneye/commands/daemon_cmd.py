"""`daemoneye daemon`: the headless daemon in the foreground."""

from __future__ import annotations

from collections.abc import Callable

from daemoneye.config.schema import LoadedConfig
from daemoneye.daemon.lifecycle import Daemon


def run_daemon(loaded: LoadedConfig, reload_config: Callable[[], LoadedConfig]) -> int:
    return Daemon(loaded, reload_config).run()
