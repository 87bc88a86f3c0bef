"""Run a function in a forked child and get its JSON-able result back: for tests that change
what cannot be changed back (uid, capabilities, no_new_privs) without touching the test process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

CHILD_TIMEOUT_S = 60


def in_child(function: Callable[[], Any]) -> Any:
    """`function()`'s value, computed in a forked child. An exception in the child is raised
    here as an AssertionError carrying its type and message."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(read_end)
        try:
            outcome = {"value": function()}
        except BaseException as exc:  # reported to the parent, which fails the test
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            os.write(write_end, json.dumps(outcome, default=str).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child died: status {status}"
    outcome = json.loads(data)
    if "error" in outcome:
        raise AssertionError(f"in the child: {outcome['error']}")
    return outcome["value"]
