"""`daemoneye query SQL`: one read-only SELECT over the store."""

from __future__ import annotations

import sys

from daemoneye.commands.common import Context, note
from daemoneye.output import render

DEFAULT_MAX_ROWS = 10_000


def run_query(ctx: Context, sql: str, max_rows: int = DEFAULT_MAX_ROWS) -> int:
    with ctx.open_store() as store:
        result = store.query(sql, max_rows=max_rows)
    render(result.columns, result.rows, ctx.output, sys.stdout)
    if result.truncated:
        note(f"only the first {max_rows} rows are shown (--max-rows to change)")
    return 0
