"""The process set at a past moment as the processes screen takes a set: the same
`ProcessSet` the live feed makes, so list, tree, sort, filter and detail work unchanged."""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from daemoneye.models import ProcessRecord
from daemoneye.tui.logic.keys import record_key
from daemoneye.tui.logic.live import ProcessSet

PAST_GENERATION = -1  # never a live generation: a view takes it whole, nothing marked new


def past_set(records: Iterable[ProcessRecord]) -> ProcessSet:
    """The instances alive at the moment, keyed like the live set."""
    return ProcessSet(
        MappingProxyType({record_key(record): record for record in records}),
        PAST_GENERATION,
        0,
    )
