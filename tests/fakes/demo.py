"""Run the dashboard against a FakeSource: `python -m tests.fakes.demo [--hostile]
[--processes N] [--reader] [--still | --churn-for SECONDS] [--theme NAME]`. For looking at
the dashboard without a daemon (development, screenshots, tmux checks, `test_terminal.py`),
run from the repository root; not part of the installed package or the command line."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator

from daemoneye.tui.app import DaemonEyeApp, follow_terminal_size
from daemoneye.tui.source import SourceEvent
from tests.fakes.dashboard_source import (
    FAKE_NOW,
    FakeSource,
    churn_delta,
    hostile_processes,
    many_processes,
    sample_hello,
)


class LiveFakeSource(FakeSource):
    """A FakeSource whose processes keep changing once a second."""

    def __init__(
        self, *args: object, churn: bool = True, churn_for: float | None = None, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.churn = churn
        self.churn_for = churn_for

    async def events(self) -> AsyncIterator[SourceEvent]:
        if self.churn:
            asyncio.get_running_loop().create_task(self._churn())
        async for event in super().events():
            yield event

    async def _churn(self) -> None:
        seq = 0
        until = None if self.churn_for is None else time.monotonic() + self.churn_for
        while until is None or time.monotonic() < until:
            await asyncio.sleep(1.0)
            seq += 1
            size = len(self.processes)
            self.push(
                churn_delta(
                    self.processes,
                    seq,
                    changed=max(1, size // 10),
                    added=1 + size // 1000,
                    removed=1 + size // 1000,
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.demo")
    parser.add_argument("--hostile", action="store_true", help="hostile process names")
    parser.add_argument("--processes", type=int, default=0, help="N generated processes")
    parser.add_argument("--reader", action="store_true", help="connect as a non-admin peer")
    parser.add_argument("--still", action="store_true", help="no live changes")
    parser.add_argument(
        "--churn-for",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop changing after this long",
    )
    parser.add_argument("--theme", default=None)
    args = parser.parse_args()
    processes = (
        hostile_processes()
        if args.hostile
        else many_processes(args.processes)
        if args.processes
        else None
    )
    source = LiveFakeSource(
        processes,
        hello=sample_hello("reader" if args.reader else "admin"),
        churn=not args.still,
        churn_for=args.churn_for,
    )
    started = time.time()
    follow_terminal_size()
    # The fake host's times are fixed around FAKE_NOW; let its clock run from there.
    DaemonEyeApp(source, clock=lambda: FAKE_NOW + time.time() - started, theme=args.theme).run()


if __name__ == "__main__":
    main()
