"""IPC answers built from the store or sized to fit one message: a process instance that is no
longer live (with its ancestry and children), `query.run`'s rows, a page of alerts. They run on
the IPC thread pool, never on the event loop."""

from __future__ import annotations

from collections.abc import Sequence

from daemoneye.ipc import protocol
from daemoneye.ipc.codec import to_wire
from daemoneye.ipc.methods import MethodError
from daemoneye.ipc.protocol import ErrorCode, ProcessDetail, ProcessesGetParams, fit_children
from daemoneye.models import Alert
from daemoneye.store.changes import changes_of
from daemoneye.store.readonly import ReadOnlyStore
from daemoneye.store.records import ancestry, children_of, records_for_pid


def detail_from_store(
    store: ReadOnlyStore, pid: int, start_time: float | None = None
) -> ProcessDetail | None:
    """The instance of `pid` that started at `start_time` (or the live one, else the newest),
    with its ancestry and children; None when the store has no such instance. Used by the
    daemon for instances no longer live and by the CLI when no daemon answers."""
    instances = records_for_pid(store, pid)
    if start_time is not None:
        instances_chosen = [r for r in instances if r.start_time == start_time]
    else:
        instances_chosen = instances[:1]
    if not instances_chosen:
        return None
    record = instances_chosen[0]
    children = children_of(store, record)
    return ProcessDetail(
        process=record,
        live=record.ended_at is None,
        ancestry=tuple(ancestry(store, record)),
        children=tuple(children),
        instances=len(instances),
        children_total=len(children),
        changes=changes_of(store, record.key),
    )


def stored_detail_answer(store: ReadOnlyStore, params: ProcessesGetParams) -> ProcessDetail:
    """`processes.get` for an instance that is not live: NOT_FOUND when the store has none,
    and as many children as fit in one message."""
    detail = detail_from_store(store, params.pid, params.start_time)
    if detail is None:
        which = f"pid {params.pid}" + (
            f" started at {params.start_time}" if params.start_time is not None else ""
        )
        raise MethodError(
            ErrorCode.NOT_FOUND, f"no process instance with {which} is running or in the store"
        )
    return fit_children(detail, [len(protocol.dumps(to_wire(c))) for c in detail.children])


def query_json(store: ReadOnlyStore, sql: str, max_rows: int) -> bytes:
    """A QueryRows result, encoded here (off the event loop) and cut to fit one message."""
    result = store.query(sql, max_rows=max_rows)
    rows: list[bytes] = []
    size = 0
    truncated = result.truncated
    for row in result.rows:
        encoded = protocol.dumps([v.hex() if isinstance(v, bytes) else v for v in row])
        if size + len(encoded) + 1 > protocol.CHUNK_BYTES:
            truncated = True
            break
        rows.append(encoded)
        size += len(encoded) + 1
    return (
        b'{"columns":'
        + protocol.dumps(list(result.columns))
        + b',"rows":'
        + protocol.json_list(rows)
        + b',"truncated":'
        + (b"true" if truncated else b"false")
        + b"}"
    )


def alerts_page(
    alerts: Sequence[Alert], limit: int, *, offset: int | None = None
) -> protocol.AlertsPage:
    """As many of `alerts` as fit in one message. The rest is asked for again from the last
    id sent (by id), or from `offset` plus what was sent (most recently seen first)."""
    kept: list[Alert] = []
    size = 0
    for alert in alerts[:limit]:
        size += len(protocol.dumps(to_wire(alert))) + 1
        if kept and size > protocol.CHUNK_BYTES:
            if offset is not None:
                return protocol.AlertsPage(
                    alerts=tuple(kept), next_before_id=None, next_offset=offset + len(kept)
                )
            return protocol.AlertsPage(alerts=tuple(kept), next_before_id=kept[-1].id)
        kept.append(alert)
    return protocol.AlertsPage(alerts=tuple(kept), next_before_id=None)
