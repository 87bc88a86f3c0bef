"""Run the dashboard against a FakeSource: `python -m daemoneye.tui.demo [--hostile]
[--processes N] [--reader] [--theme NAME]`. For looking at the dashboard without a daemon
(development, screenshots, tmux checks); not part of the command-line surface."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator

from daemoneye.tui.app import DaemonEyeApp
from daemoneye.tui.fake_source import (
    FAKE_NOW,
    FakeSource,
    churn_delta,
    hostile_processes,
    many_processes,
    sample_hello,
)
from daemoneye.tui.source import SourceEvent


class LiveFakeSource(FakeSource):
    """A FakeSource whose processes keep changing once a second."""

    def __init__(self, *args: object, churn: bool = True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.churn = churn

    async def events(self) -> AsyncIterator[SourceEvent]:
        if self.churn:
            asyncio.get_running_loop().create_task(self._churn())
        async for event in super().events():
            yield event

    async def _churn(self) -> None:
        seq = 0
        while True:
            await asyncio.sleep(1.0)
            seq += 1
            size = len(self.processes)
            self.push(churn_delta(self.processes, seq, changed=max(1, size // 10),
                                  added=1 + size // 1000, removed=1 + size // 1000))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m daemoneye.tui.demo")
    parser.add_argument("--hostile", action="store_true", help="hostile process names")
    parser.add_argument("--processes", type=int, default=0, help="N generated processes")
    parser.add_argument("--reader", action="store_true", help="connect as a non-admin peer")
    parser.add_argument("--still", action="store_true", help="no live changes")
    parser.add_argument("--theme", default=None)
    args = parser.parse_args()
    processes = (hostile_processes() if args.hostile
                 else many_processes(args.processes) if args.processes else None)
    source = LiveFakeSource(processes, hello=sample_hello("reader" if args.reader else "admin"),
                            churn=not args.still)
    started = time.time()
    # The fake host's times are fixed around FAKE_NOW; let its clock run from there.
    DaemonEyeApp(source, clock=lambda: FAKE_NOW + time.time() - started, theme=args.theme).run()


if __name__ == "__main__":
    main()
