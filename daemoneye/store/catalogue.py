"""The tables and views user SQL may read, with their columns: what `.tables` and `.schema`
show on the dashboard's query screen (IPC `query.tables`). Derived from the sandbox's own
list (sandbox.READABLE_TABLES), so a table another change makes readable shows up here."""

from __future__ import annotations

from daemoneye.models import TableColumn, TableSchema
from daemoneye.store.readonly import ReadOnlyStore
from daemoneye.store.sandbox import READABLE_TABLES

TABLE_FUNCTIONS = frozenset({"json_each", "json_tree"})  # readable, but not tables


def readable_schema(store: ReadOnlyStore) -> tuple[TableSchema, ...]:
    """Every readable table and view that exists in this store, by name, with its columns
    in order (a store from before a table was added simply lacks it)."""
    schemas = []
    for name in sorted(READABLE_TABLES - TABLE_FUNCTIONS):
        kinds = store.fetch_rows(
            "SELECT type FROM sqlite_schema WHERE name = ? "
            "UNION ALL SELECT type FROM sqlite_temp_schema WHERE name = ?",
            (name, name),
        )
        if not kinds:
            continue
        columns = store.fetch_rows("SELECT name, type FROM pragma_table_info(?)", (name,))
        schemas.append(
            TableSchema(
                name=name,
                kind=str(kinds[0][0]),
                columns=tuple(TableColumn(str(c), str(t or "")) for c, t in columns),
            )
        )
    return tuple(schemas)
