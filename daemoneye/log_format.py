"""How the daemon's and the CLI's log lines are written: hostile text made visible, each line
bounded.

Log messages carry process-supplied text (alert titles are built from process names and
command lines) to stderr and the journal, where whoever tails the log reads them in a terminal.
`SafeFormatter` escapes the final message and any traceback with `daemoneye.text.visible`, so a
process name cannot set the window title, clear the screen, reorder text with bidi overrides or
forge a log line with a newline, and it bounds every line so one message cannot flood the log.

Under systemd, stderr is a stream to journald (`$JOURNAL_STREAM` names its device and inode):
the journal stamps each line itself and reads a leading `<N>` as its syslog priority
(sd-daemon(3)), so there the lines carry that prefix and no timestamp of their own.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TextIO

from daemoneye.text import visible_bounded

MAX_LOG_LINE_CHARS = 4096
# A traceback keeps its first and last lines; the middle of a very deep one is left out.
_TRACE_HEAD_LINES = 10
_TRACE_TAIL_LINES = 60
# sd-daemon(3)'s SD_CRIT, SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG.
_SYSLOG_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_SYSLOG_DEBUG = 7


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald should file a record of this logging level under."""
    for threshold, priority in _SYSLOG_PRIORITIES:
        if levelno >= threshold:
            return priority
    return _SYSLOG_DEBUG


def stream_is_journal(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """True when `stream` is the journald stream systemd connected (its `dev:ino` is in
    `$JOURNAL_STREAM`); a stream redirected elsewhere by the service keeps plain lines."""
    env = os.environ if env is None else env
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no descriptor (a capture object) or a closed one
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


class SafeFormatter(logging.Formatter):
    """A `logging.Formatter` whose output holds no raw control or bidi characters: the message
    becomes one line of at most `max_chars` characters (plus a "…(N more chars)" marker), and
    each line of a traceback or stack is escaped and bounded the same way. With
    `syslog_prefix` every line starts with the record's `<N>` priority for journald."""

    def __init__(
        self, fmt: str, *, max_chars: int = MAX_LOG_LINE_CHARS, syslog_prefix: bool = False
    ) -> None:
        super().__init__(fmt)
        self.max_chars = max_chars
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        parts = [visible_bounded(self.formatMessage(record), self.max_chars)]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            parts.append(self._block(record.exc_text))
        if record.stack_info:
            parts.append(self._block(self.formatStack(record.stack_info)))
        text = "\n".join(parts)
        if self.syslog_prefix:
            # Every line: journald reads each one as its own entry.
            prefix = f"<{syslog_priority(record.levelno)}>"
            text = "\n".join(prefix + line for line in text.split("\n"))
        return text

    def _block(self, text: str) -> str:
        """A multi-line block (traceback, stack): each line escaped and bounded, at most
        head + tail lines kept."""
        lines = text.rstrip("\n").split("\n")  # not splitlines(): it also splits on \x1c, \x85…
        if len(lines) > _TRACE_HEAD_LINES + _TRACE_TAIL_LINES:
            left_out = len(lines) - _TRACE_HEAD_LINES - _TRACE_TAIL_LINES
            lines = [
                *lines[:_TRACE_HEAD_LINES],
                f"…({left_out} more lines)",
                *lines[-_TRACE_TAIL_LINES:],
            ]
        return "\n".join(visible_bounded(line, self.max_chars) for line in lines)


def log_uncaught_exceptions(logger: logging.Logger) -> None:
    """Send exceptions nothing caught (in the main thread or any other) through `logger`, so
    their text is escaped and bounded like every other log line instead of printed raw by the
    interpreter. Ctrl-C keeps its default handling."""
    default_hook = sys.excepthook

    def main_thread_hook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            default_hook(kind, value, tb)
            return
        logger.critical("uncaught exception", exc_info=(kind, value, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "?"
        logger.critical(
            "uncaught exception in thread %s",
            name,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = main_thread_hook
    threading.excepthook = thread_hook
