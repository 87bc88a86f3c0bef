"""How the daemon's and the CLI's log lines are written: hostile text made visible, each line
bounded.

Log messages carry process-supplied text (alert titles are built from process names and
command lines) to stderr and the journal, where whoever tails the log reads them in a terminal.
`SafeFormatter` escapes the final message and any traceback with `daemoneye.text.visible`, so a
process name cannot set the window title, clear the screen, reorder text with bidi overrides or
forge a log line with a newline, and it bounds every line so one message cannot flood the log.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType

from daemoneye.text import visible_bounded

MAX_LOG_LINE_CHARS = 4096
# A traceback keeps its first and last lines; the middle of a very deep one is left out.
_TRACE_HEAD_LINES = 10
_TRACE_TAIL_LINES = 60


class SafeFormatter(logging.Formatter):
    """A `logging.Formatter` whose output holds no raw control or bidi characters: the message
    becomes one line of at most `max_chars` characters (plus a "…(N more chars)" marker), and
    each line of a traceback or stack is escaped and bounded the same way."""

    def __init__(self, fmt: str, *, max_chars: int = MAX_LOG_LINE_CHARS) -> None:
        super().__init__(fmt)
        self.max_chars = max_chars

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
        return "\n".join(parts)

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
