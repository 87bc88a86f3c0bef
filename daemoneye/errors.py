"""One base error and a subclass per layer; each carries a message meant for a person."""

from __future__ import annotations


class DaemonEyeError(Exception):
    """Base of every error DaemonEye raises on purpose. `exit_code` is what the CLI returns."""

    exit_code = 1


class ConfigError(DaemonEyeError):
    """A configuration file, variable or flag is malformed or names an unknown key."""

    exit_code = 2


class CollectorError(DaemonEyeError):
    """The process collector cannot run at all (e.g. /proc is not mounted)."""


class StoreError(DaemonEyeError):
    """The store cannot be opened, migrated, read or written."""


class QueryError(DaemonEyeError):
    """A user-supplied SQL statement was refused or failed."""

    exit_code = 2


class DaemonError(DaemonEyeError):
    """The daemon cannot start or keep running (e.g. another daemon owns the store)."""


class StoreUnwritable(StoreError):
    """A write to the store failed because the disk is full or the device fails writes
    (SQLITE_FULL, SQLITE_IOERR); reads still work, and a later write may succeed."""
