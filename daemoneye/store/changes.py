"""An instance's changes after start, read back from `process_events` (for `processes show`,
`processes.get` and the dashboard)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemoneye.models import ProcessEvent, ProcessKey
from daemoneye.store.schema_v7 import V7_BASE_TABLES, V7_FIRST_CHANGE_CODE

if TYPE_CHECKING:
    from daemoneye.store.db import RowSource

MAX_CHANGES = 20  # the newest ones; a process renaming itself in a loop has thousands

# Read along the partial index of change events (schema v7): their kind codes come last.
_SELECT_CHANGES = f"""
SELECT ts, kind, ppid, exe, source, partial, old_value, new_value, exe_setid
FROM process_events
WHERE id IN (
    SELECT id FROM {V7_BASE_TABLES["process_events"]}
    WHERE pid = ? AND kind >= {V7_FIRST_CHANGE_CODE} AND start_time = ?
    ORDER BY id DESC LIMIT ?
)
ORDER BY id DESC
"""


def changes_of(
    source: RowSource, key: ProcessKey, limit: int = MAX_CHANGES
) -> tuple[ProcessEvent, ...]:
    """The newest `limit` change events of one instance, oldest first."""
    rows = source.fetch_rows(_SELECT_CHANGES, (key.pid, key.start_time, limit))
    events = [
        ProcessEvent(
            ts=float(ts),  # type: ignore[arg-type]
            kind=str(kind),
            pid=key.pid,
            start_time=key.start_time,
            ppid=None if ppid is None else int(ppid),
            exe=None if exe is None else str(exe),
            source=str(event_source),
            partial=bool(partial),
            old_value=None if old is None else str(old),
            new_value=None if new is None else str(new),
            exe_setid=None if setid is None else bool(setid),
        )
        for ts, kind, ppid, exe, event_source, partial, old, new, setid in rows
    ]
    return tuple(reversed(events))
