"""`daemoneye query SQL`: one read-only SELECT over the store (run by the daemon when one
runs, else on the store opened read-only here; the sandbox is the same)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from daemoneye.commands.common import Context, note, with_daemon_or_store
from daemoneye.ipc.client import QueryRows
from daemoneye.output import render
from daemoneye.store.readonly import ReadOnlyStore

DEFAULT_MAX_ROWS = 10_000
# Store columns that hold a JSON array (store/schema.py): the machine formats print them as the
# array, not as a string holding JSON (docs/cli.md).
JSON_LIST_COLUMNS = frozenset({"argv"})


def _as_list(value: object) -> object:
    """A JSON array's text as the list it holds; anything else (NULL, text that is not an
    array of strings, a column merely named argv) as it is."""
    if not isinstance(value, str) or not value.startswith("["):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    if isinstance(decoded, list) and all(isinstance(part, str) for part in decoded):
        return tuple(decoded)
    return value


def machine_rows(
    columns: Sequence[str], rows: Sequence[Sequence[object]]
) -> list[tuple[object, ...]]:
    """`rows` with the JSON array columns decoded."""
    listed = [i for i, name in enumerate(columns) if name in JSON_LIST_COLUMNS]
    if not listed:
        return [tuple(row) for row in rows]
    decoded = []
    for row in rows:
        values = list(row)
        for i in listed:
            values[i] = _as_list(values[i])
        decoded.append(tuple(values))
    return decoded


def run_query(ctx: Context, sql: str, max_rows: int = DEFAULT_MAX_ROWS) -> int:
    def locally(store: ReadOnlyStore) -> QueryRows:
        result = store.query(sql, max_rows=max_rows)
        rows = tuple(
            tuple(v.hex() if isinstance(v, bytes) else v for v in row) for row in result.rows
        )
        return QueryRows(columns=result.columns, rows=rows, truncated=result.truncated)

    result = with_daemon_or_store(ctx, lambda client: client.query_run(sql, max_rows), locally)
    rows = result.rows if ctx.output == "table" else machine_rows(result.columns, result.rows)
    render(result.columns, rows, ctx.output, sys.stdout)
    if result.truncated:
        if len(result.rows) >= max_rows:
            note(f"only the first {max_rows} rows are shown (--max-rows to change)")
        else:
            note(
                f"only the first {len(result.rows)} rows are shown: one answer from the daemon "
                "holds at most 1 MiB; select fewer columns or add a LIMIT"
            )
    return 0
