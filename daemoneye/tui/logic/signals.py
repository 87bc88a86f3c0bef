"""The signals the dialog offers: every one the kernel knows, by number and name.

The daemon accepts any of these (`process.signal` parses TERM, SIGTERM or 15); the dialog lists
them all so a user coming from htop or kill(1) finds the one they know, and the common ones
carry a word on what they do.
"""

from __future__ import annotations

import signal

DEFAULT_SIGNAL = "TERM"

MEANINGS: dict[str, str] = {
    "HUP": "hang up / reload",
    "INT": "interrupt",
    "QUIT": "quit with core dump",
    "KILL": "stop it now, no clean-up",
    "USR1": "user-defined 1",
    "USR2": "user-defined 2",
    "TERM": "ask it to stop",
    "CONT": "resume",
    "STOP": "pause",
    "TSTP": "pause (terminal)",
}


def signal_choices() -> tuple[tuple[int, str], ...]:
    """(number, name without SIG) for every signal, by number: (1, "HUP") … (9, "KILL") …"""
    return tuple(
        (int(sig), sig.name.removeprefix("SIG"))
        for sig in sorted(signal.Signals, key=int)
        if sig.name.startswith("SIG") and not sig.name.startswith("SIG_")
    )


def signal_label(number: int, name: str) -> str:
    """One line of the dialog: ` 9  SIGKILL  stop it now, no clean-up`."""
    return f"{number:>2}  SIG{name:<8} {MEANINGS.get(name, '')}".rstrip()
