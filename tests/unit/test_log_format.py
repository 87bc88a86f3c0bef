"""The daemon's log is read in terminals: process-supplied text in it is escaped and bounded."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemoneye import cli
from daemoneye.log_format import MAX_LOG_LINE_CHARS, SafeFormatter, syslog_priority
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


def _log_through_entry_point(
    monkeypatch: pytest.MonkeyPatch, stderr: Path, journal_stream: str | None
) -> str:
    """Configure logging as the daemon does with `stderr` as its stderr, log a warning and an
    exception, and return what reached the file."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # see above: no stale handlers of other tests
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    if journal_stream is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream)
    level = root.level
    with stderr.open("w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        cli._configure_logging(daemon=True)
        try:
            logger = logging.getLogger("daemoneye.engine.alerts")
            logger.warning("alert: %s", HOSTILE)
            try:
                raise RuntimeError("bad\nsecond line")
            except RuntimeError:
                logger.exception("sink failed")
        finally:
            for handler in root.handlers[:]:
                root.removeHandler(handler)
            root.setLevel(level)
    return stderr.read_text()


def test_under_journald_lines_carry_a_priority_and_no_timestamp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stderr = tmp_path / "stderr"
    stderr.touch()
    status = os.stat(stderr)
    text = _log_through_entry_point(monkeypatch, stderr, f"{status.st_dev}:{status.st_ino}")
    lines = text.splitlines()
    assert lines[0] == "<4>WARNING daemoneye.engine.alerts: alert: " + visible_bounded(
        HOSTILE, MAX_LOG_LINE_CHARS
    )
    assert lines[1] == "<3>ERROR daemoneye.engine.alerts: sink failed"
    # The traceback's lines are entries of the same priority, still escaped.
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines[1:])
    assert not re.search(r"\d\d:\d\d:\d\d", text), text
    assert not RAW.search(text.replace("\n", "")), text


def test_a_journal_stream_that_is_not_stderr_keeps_timestamps(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.touch()
    status = os.stat(other)
    text = _log_through_entry_point(
        monkeypatch, tmp_path / "stderr", f"{status.st_dev}:{status.st_ino}"
    )
    assert "<4>" not in text
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ WARNING daemoneye", text), text


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6)],
)
def test_levels_map_to_sd_daemon_priorities(level: int, priority: int) -> None:
    assert syslog_priority(level) == priority
    assert syslog_priority(logging.DEBUG) == 7
