"""The signal dialog's list: every signal by number and name, each one the daemon accepts."""

from __future__ import annotations

import signal

from daemoneye.daemon.process_signal import parse_signal
from daemoneye.tui.logic.signals import DEFAULT_SIGNAL, signal_choices, signal_label


def test_every_signal_is_offered_once_by_number() -> None:
    choices = signal_choices()
    numbers = [number for number, _ in choices]
    assert numbers == sorted(set(numbers))
    assert {number for number, _ in choices} == {int(sig) for sig in signal.Signals}
    assert (9, "KILL") in choices and (15, "TERM") in choices and (19, "STOP") in choices


def test_the_daemon_accepts_every_offered_name() -> None:
    for number, name in signal_choices():
        assert int(parse_signal(name)) == number
    assert DEFAULT_SIGNAL in {name for _, name in signal_choices()}


def test_a_label_shows_number_name_and_meaning() -> None:
    assert signal_label(9, "KILL") == " 9  SIGKILL     stop it now, no clean-up"
    assert signal_label(13, "PIPE") == "13  SIGPIPE"
