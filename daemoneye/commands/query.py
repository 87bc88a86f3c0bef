"""`daemoneye query SQL`: one read-only SELECT over the store (run by the daemon when one
runs, else on the store opened read-only here; the sandbox is the same)."""

from __future__ import annotations

import sys

from daemoneye.commands.common import Context, note, with_daemon_or_store
from daemoneye.ipc.client import QueryRows
from daemoneye.output import render
from daemoneye.store.readonly import ReadOnlyStore

DEFAULT_MAX_ROWS = 10_000


def run_query(ctx: Context, sql: str, max_rows: int = DEFAULT_MAX_ROWS) -> int:
    def locally(store: ReadOnlyStore) -> QueryRows:
        result = store.query(sql, max_rows=max_rows)
        rows = tuple(
            tuple(v.hex() if isinstance(v, bytes) else v for v in row) for row in result.rows
        )
        return QueryRows(columns=result.columns, rows=rows, truncated=result.truncated)

    result = with_daemon_or_store(ctx, lambda client: client.query_run(sql, max_rows), locally)
    render(result.columns, result.rows, ctx.output, sys.stdout)
    if result.truncated:
        if len(result.rows) >= max_rows:
            note(f"only the first {max_rows} rows are shown (--max-rows to change)")
        else:
            note(
                f"only the first {len(result.rows)} rows are shown: one answer from the daemon "
                "holds at most 1 MiB; select fewer columns or add a LIMIT"
            )
    return 0
