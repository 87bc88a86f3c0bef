"""`process.signal` on the agent's side: the signal named by a client, checked here; procmond
sends it (procmond/signals.py), the only process that may signal another."""

from __future__ import annotations

import signal


def parse_signal(value: str | int) -> signal.Signals:
    """TERM, SIGTERM, term or 15 → signal.SIGTERM; ValueError naming the value otherwise."""
    if isinstance(value, int):
        try:
            return signal.Signals(value)
        except ValueError:
            raise ValueError(f"{value} is not a signal number") from None
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(
            f"{value!r} is not a signal name (e.g. TERM, KILL, HUP, INT, STOP, CONT, USR1)"
        ) from None
