"""The embedded SQLite store: schema and migrations, the writer, read-only access, retention."""

from __future__ import annotations

from daemoneye.store.db import Store
from daemoneye.store.readonly import QueryResult, ReadOnlyStore, open_readonly
from daemoneye.store.retention import RetentionResult
from daemoneye.store.schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "QueryResult",
    "ReadOnlyStore",
    "RetentionResult",
    "Store",
    "open_readonly",
]
