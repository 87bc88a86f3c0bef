"""The daemon's log is read in terminals: process-supplied text in it is escaped and bounded."""

from __future__ import annotations

import logging
import re
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemoneye import cli
from daemoneye.log_format import MAX_LOG_LINE_CHARS, SafeFormatter
from daemoneye.text import visible_bounded

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\u202e\x9b"
# Raw characters a terminal or log viewer acts on; none may reach the log.
RAW = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)


def _record(msg: str, *args: object, exc_info: bool = False) -> logging.LogRecord:
    info = sys.exc_info() if exc_info else None
    return logging.LogRecord("daemoneye.engine", logging.WARNING, __file__, 1, msg, args, info)


def test_hostile_arguments_are_escaped_in_the_log_line() -> None:
    line = SafeFormatter("%(levelname)s %(name)s: %(message)s").format(
        _record("alert %s: %s", 7, "title " + HOSTILE + "\nFAKE 12:00 INFO root: all good")
    )
    assert not RAW.search(line), line
    assert "\n" not in line  # a newline in a title cannot forge a second log line
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x9b" in line
    assert line.startswith("WARNING daemoneye.engine: alert 7: title ")


def test_exception_text_is_escaped_line_by_line() -> None:
    formatter = SafeFormatter("%(message)s")
    try:
        raise ValueError("bad name " + HOSTILE + "\u2028x\x85y")
    except ValueError:
        text = formatter.format(_record("failed: %s", HOSTILE, exc_info=True))
    assert not RAW.search(text), text
    lines = text.split("\n")
    assert lines[0] == "failed: \\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x9b"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad name \\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x9b\\u2028x\\x85y"


def test_one_log_line_is_bounded_with_a_marker() -> None:
    long_title = "A" * 100_000
    line = SafeFormatter("%(message)s").format(_record("title %s", long_title))
    assert len(line) <= MAX_LOG_LINE_CHARS + len("…(100000 more chars)")
    assert line.startswith("title AAAA")
    assert line.endswith(f"…({len('title ') + 100_000 - MAX_LOG_LINE_CHARS} more chars)")


def test_escapes_count_towards_the_bound() -> None:
    line = SafeFormatter("%(message)s").format(_record("%s", "\x1b" * 10_000))
    assert line.startswith("\\x1b\\x1b")
    assert len(line) <= MAX_LOG_LINE_CHARS + len("…(10000 more chars)")
    assert line.endswith(f"…({10_000 - MAX_LOG_LINE_CHARS // 4} more chars)")


def test_a_deep_traceback_keeps_its_head_and_tail() -> None:
    # Two functions in turn: Python folds runs of one identical frame, not alternating ones.
    def deep(n: int) -> None:
        if n == 0:
            raise RuntimeError("bottom")
        deeper(n - 1)

    def deeper(n: int) -> None:
        deep(n)

    try:
        deep(200)
    except RuntimeError:
        text = SafeFormatter("%(message)s").format(_record("boom", exc_info=True))
    lines = text.split("\n")
    assert len(lines) <= 1 + 10 + 1 + 60
    assert any(re.fullmatch(r"…\(\d+ more lines\)", line) for line in lines)
    assert lines[-1] == "RuntimeError: bottom"


def test_the_entry_point_configures_the_safe_formatter(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    # Handlers other tests' cli.main() calls left behind write to their closed capture streams.
    monkeypatch.setattr(root, "handlers", [])
    before = list(root.handlers)
    level = root.level
    cli._configure_logging(daemon=True)
    try:
        logging.getLogger("daemoneye.engine.alerts").warning("alert: %s", HOSTILE)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "alert: \\x1b]0;pwned" in err
    assert not RAW.search(err), err


@given(st.text(), st.integers(min_value=1, max_value=200))
def test_visible_bounded_never_lets_a_raw_character_through(text: str, limit: int) -> None:
    shown = visible_bounded(text, limit)
    assert not RAW.search(shown) and "\n" not in shown
    marker = re.search(r"…\((\d+) more chars\)$", shown)
    if marker is None:
        assert len(shown) <= limit
    else:
        assert len(shown) - len(marker.group()) <= limit
        assert 0 < int(marker.group(1)) <= len(text)


def test_uncaught_exceptions_in_threads_are_logged_escaped(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # see above: no stale handlers of other tests
    before = list(root.handlers)
    level = root.level
    cli._configure_logging(daemon=True)

    def crash() -> None:
        raise ValueError("bad " + HOSTILE)

    try:
        worker = threading.Thread(target=crash, name="sink-" + HOSTILE)
        worker.start()
        worker.join()
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "uncaught exception in thread sink-\\x1b]0;pwned" in err
    assert "ValueError: bad \\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x9b" in err
    assert not RAW.search(err), err
