"""Jumping a day back in the dashboard over a store that holds a week (issue 16's figure), and
the live processes screen's key latency in the same run.

    .venv/bin/python -m benchmarks.history_dashboard_bench [--per-second 0.2] [--days 7]

A store is built synthetically: `--per-second` new process instances a second over `--days`
(each with an exec and an exit event, living 30 s) plus 300 long-lived ones, and an alert an
hour. The dashboard runs over a FakeSource whose history methods answer from that store through
the daemon's own answer functions (daemon/history_answers.py) on a worker thread, as the IPC
server's thread pool does — the IPC encoding and the socket are left out. Measured, wall and
CPU ms from the key to the first frame painted after the screen took the answer in:

- timeline `g -1d` Enter: the timeline's first page a day back in the table (the activity
  strip, a second request, is painted after it and not counted);
- past view `p -1d` Enter: the processes screen as it was a day ago;
- cursor keys on the live processes screen before and after the jumps (the reference:
  history must leave them unchanged).

Target: jumping a day back painted ≤ 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import cleanup
from benchmarks.dashboard_bench import TimedApp, frame_after, note_work, timed_key
from daemoneye.daemon.history_answers import activity_answer, timeline_page
from daemoneye.daemon.history_answers import processes_at as processes_at_answer
from daemoneye.filters import parse_filter
from daemoneye.ipc.protocol import ActivityParams, ProcessesAtParams, TimelineParams
from daemoneye.models import HistoryActivity, ProcessRecord
from daemoneye.store import Store, open_readonly
from daemoneye.store.readonly import ReadOnlyStore
from daemoneye.store.rows import PROCESS_COLUMNS, process_row
from daemoneye.tui.screens.processes import ProcessesScreen
from daemoneye.tui.screens.timeline import TimelineScreen
from daemoneye.tui.source import TimelineCursor, TimelineSlice
from daemoneye.tui.widgets.live_table import LiveTable
from tests.fakes.dashboard_source import FAKE_NOW, FakeSource, FrozenClock, many_processes

TARGET_JUMP_MS = 300.0
LIFETIME_S = 30.0


def build_store(path: Path, per_second: float, days: float) -> int:
    """Fill a store with `days` of history ending at FAKE_NOW; the instances written."""
    rng = random.Random(16)
    template = many_processes(1)[0]
    store = Store.open(path)
    columns = ", ".join(PROCESS_COLUMNS)
    marks = ", ".join("?" * len(PROCESS_COLUMNS))
    count = int(per_second * days * 86400)
    since = FAKE_NOW - days * 86400
    written = 0
    try:
        batch: list[ProcessRecord] = []
        for index in range(count + 300):
            long_lived = index >= count
            start = since - 60 if long_lived else since + index / per_second
            end = None if long_lived or start + LIFETIME_S >= FAKE_NOW else start + LIFETIME_S
            name = rng.choice(("sh", "curl", "python3", "git", "make", "cc1", "ssh", "cron"))
            batch.append(
                dataclasses.replace(
                    template,
                    pid=1000 + index % 4_000_000,
                    ppid=1,
                    start_time=start,
                    name=name,
                    cmdline=(f"/usr/bin/{name}", f"--job={index}"),
                    exe=f"/usr/bin/{name}",
                    first_seen=start,
                    last_seen=start if end is None else end,
                    ended_at=end,
                    exit_code=None if end is None else (0 if index % 7 else -9),
                )
            )
            if len(batch) == 20_000 or index == count + 299:
                with store.transaction("bench history") as conn:
                    conn.executemany(
                        f"INSERT INTO processes ({columns}) VALUES ({marks})",
                        [process_row(r) for r in batch],
                    )
                    conn.executemany(
                        "INSERT INTO process_events (ts, kind, pid, start_time, ppid, cmdline,"
                        " exit_code, source) VALUES (?, ?, ?, ?, ?, ?, ?, 'netlink')",
                        [
                            row
                            for r in batch
                            for row in (
                                (
                                    r.start_time,
                                    "exec",
                                    r.pid,
                                    r.start_time,
                                    r.ppid,
                                    " ".join(r.cmdline),
                                    None,
                                ),
                                *(
                                    (
                                        (
                                            r.ended_at,
                                            "exit",
                                            r.pid,
                                            r.start_time,
                                            r.ppid,
                                            None,
                                            r.exit_code,
                                        ),
                                    )
                                    if r.ended_at is not None
                                    else ()
                                ),
                            )
                        ],
                    )
                written += len(batch)
                batch = []
    finally:
        store.close()
    return written


class StoreHistorySource(FakeSource):
    """The fake live host, with its history read from a real store as the daemon does."""

    def __init__(self, path: Path, records: tuple[ProcessRecord, ...]) -> None:
        super().__init__(records)
        self.path = path
        # One reading thread holding one connection, as the daemon's store thread does.
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.reader: ReadOnlyStore | None = None
        self.store_ms: dict[str, list[float]] = {}  # per request kind, the store's own time

    def _read(self, kind: str, answer: Any) -> Any:
        if self.reader is None:
            self.reader = open_readonly(self.path)
        started = time.perf_counter()
        result = answer(self.reader)
        self.store_ms.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
        return result

    async def _in_store(self, kind: str, answer: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._read, kind, answer)

    async def timeline(
        self,
        *,
        until: float | None,
        before: TimelineCursor | None = None,
        filter_text: str = "",
        limit: int = 200,
    ) -> TimelineSlice:
        params = TimelineParams(
            since=0.0, until=until, before=before, limit=limit, filter=filter_text
        )
        page = await self._in_store("timeline page", lambda s: timeline_page(s, params))
        return TimelineSlice(page.events, page.next, page.reach)

    async def processes_at(self, at: float) -> tuple[ProcessRecord, ...]:
        params = ProcessesAtParams(at=at, limit=100_000)
        page = await self._in_store(
            "processes at", lambda s: processes_at_answer(s, params, parse_filter(""), FAKE_NOW)
        )
        return tuple(page.processes)

    async def activity(self, since: float, until: float, buckets: int) -> HistoryActivity:
        params = ActivityParams(since=since, until=until, buckets=buckets)
        answer: HistoryActivity = await self._in_store(
            "activity", lambda s: activity_answer(s, params)
        )
        return answer


async def timed_jump(
    pilot: Any, keys: list[str], done: Any, count_before: int
) -> tuple[float, float]:
    """(wall, CPU) ms from Enter after `keys` to the first frame after `done()` grew."""
    app = pilot.app
    await pilot.press(*keys)
    started, cpu_started = time.perf_counter(), time.process_time()
    await pilot.press("enter")
    deadline = time.monotonic() + 30
    while done() == count_before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer to {''.join(keys)!r} (outside the store's history?)")
        await asyncio.sleep(0.001)
    await pilot.pause()
    await pilot.pause()
    return frame_after(app, started, cpu_started, app.work_done)


async def run(per_second: float, days: float) -> dict[str, Any]:
    note_work(ProcessesScreen, "_refresh_rows")
    note_work(ProcessesScreen, "_show_detail")
    note_work(LiveTable, "_move")
    note_work(TimelineScreen, "_show")  # the table with the page; the strip follows
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "daemoneye.db"
        started = time.perf_counter()
        figures["instances"] = build_store(path, per_second, days)
        figures["build_s"] = time.perf_counter() - started
        figures["store_mb"] = path.stat().st_size / 1e6
        source = StoreHistorySource(path, many_processes(300))
        app = TimedApp(source, clock=FrozenClock())
        async with app.run_test(size=(160, 48)) as pilot:
            screen = app.screen
            assert isinstance(screen, ProcessesScreen)
            while len(screen.table.shown_keys) < 300:
                await asyncio.sleep(0.005)
            figures["live keys before"] = [
                (await timed_key(pilot, key))[0] for key in ("down", "up") * 10
            ]
            await pilot.press("6")
            timeline = app.screen
            assert isinstance(timeline, TimelineScreen)
            while timeline.loads == 0:
                await asyncio.sleep(0.005)
            jumps = []
            for hours in range(24, 30):
                jumps.append(
                    await timed_jump(
                        pilot, ["g", *f"-{hours}h"], lambda: timeline.loads, timeline.loads
                    )
                )
            figures["timeline jump a day back"] = [wall for wall, _ in jumps]
            figures["timeline jump a day back (cpu)"] = [cpu for _, cpu in jumps]
            await pilot.press("1")
            await pilot.pause()
            past_jumps = []
            for hours in range(24, 30):
                past_jumps.append(
                    await timed_jump(
                        pilot, ["p", *f"-{hours}h"], lambda: screen.past_loads, screen.past_loads
                    )
                )
                await pilot.press("l")
                await pilot.pause()
            figures["past view a day back"] = [wall for wall, _ in past_jumps]
            figures["past view a day back (cpu)"] = [cpu for _, cpu in past_jumps]
            figures["live keys after"] = [
                (await timed_key(pilot, key))[0] for key in ("down", "up") * 10
            ]
        for kind, values in source.store_ms.items():
            figures[f"  of which the store: {kind}"] = values[1:]  # the first opens the file
    return figures


def main() -> None:
    cleanup.install()  # SIGTERM/SIGHUP unwind the with-blocks: no daemon or sleeper left
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-second", type=float, default=0.2)
    parser.add_argument("--days", type=float, default=7.0)
    args = parser.parse_args()
    figures = asyncio.run(run(args.per_second, args.days))
    print(
        f"store: {figures['instances']} instances over {args.days:g} days "
        f"({args.per_second:g}/s + 300 long-lived), {figures['store_mb']:.0f} MB, "
        f"built in {figures['build_s']:.0f} s"
    )
    for name, values in figures.items():
        if isinstance(values, list) and values:
            kept = [v for v in values if v > 0] or values
            worst = max(kept)
            verdict = "met" if worst <= TARGET_JUMP_MS else "MISSED"
            target = (
                f"  (target ≤ {TARGET_JUMP_MS:.0f} ms: {verdict})"
                if "back" in name and "cpu" not in name
                else ""
            )
            print(
                f"{name:34s} median {statistics.median(kept):7.1f} ms  max {worst:7.1f} ms"
                f"  (n={len(kept)}){target}"
            )


if __name__ == "__main__":
    main()
