"""Kernel process events against the poller: of N processes that each live 1-5 ms, how many
does each see? The event source (`daemoneye.collector.events.ProcEventSource`) and a
`ProcScanner` polling every second run side by side in the same rounds, on the same processes.

Children are reaped the moment they exit (a reaper thread blocked in waitpid), as a shell
reaps its jobs: a zombie left in /proc would be "seen" by the poller long after it exited.

Captured means: for events, an exec event for the pid, and "with details" when that event also
carries the executable (not partial); for the poller, the pid appeared as a new process.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks.availability import missing
from benchmarks.model import NOT_BUILT, SKIPPED, Row, status_row
from benchmarks.spawn import SLEEP, ProcessGroup, assert_none_marked, new_token
from benchmarks.stats import paired_ratios, summarize

SECTION = "events"
_POLL_INTERVAL_S = 1.0


class _Poller:
    """A ProcScanner scanning every second on its own thread, remembering every new pid."""

    def __init__(self) -> None:
        from daemoneye.collector.procfs import read_boot_time
        from daemoneye.collector.scanner import ProcScanner

        self._scanner = ProcScanner("/proc", boot_time=read_boot_time())
        self._scanner.scan()
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="benchmark-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic() + _POLL_INTERVAL_S
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.seen.update(record.pid for record in self._scanner.scan().added)
            next_at += _POLL_INTERVAL_S

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)
        self._scanner.close()


def _round(count: int, spread_s: float) -> dict[str, Any]:
    from daemoneye.collector.events import ProcEventSource
    from daemoneye.collector.procfs import read_boot_time

    source = ProcEventSource(read_boot_time())
    source.start()  # raises (EventsUnavailable) when the kernel will not talk to us
    events = []
    poller: _Poller | None = None
    token = new_token("events")
    group = ProcessGroup(token, lifetime_s=60)
    reaper = threading.Thread(target=group.reap_until_empty, name="benchmark-reaper", daemon=True)
    reaper.start()
    try:
        poller = _Poller()
        spawned = []
        started = time.monotonic()
        for index in range(count):
            delay = started + index * spread_s / count - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            lives = f"0.00{1 + index % 5}"  # 1-5 ms of sleep, plus the exec itself
            spawned.append(group.spawn(SLEEP, [f"blink-{index}", lives]))
            if index % 64 == 0:
                events += source.drain()
        time.sleep(_POLL_INTERVAL_S * 1.5)  # the last ones exit; one more poll
        poller.stop()
        events += source.drain()
        stats = source.stats()
    finally:
        if poller is not None:
            poller.stop()
        source.stop()
        group.kill_all()
        reaper.join(5.0)
        assert_none_marked(token, "short-lived event-bench processes")
    ours = set(spawned)
    execs = [event for event in events if event.kind == "exec" and event.pid in ours]
    return {
        "spawned": len(ours),
        "exec_seen": len({event.pid for event in execs}),
        "exec_with_exe": len({event.pid for event in execs if event.exe and not event.partial}),
        "exit_seen": len({e.pid for e in events if e.kind == "exit" and e.pid in ours}),
        "poller_seen": len(ours & poller.seen),
        "exit_codes_nonzero": sum(1 for code in group.exit_statuses if code != 0),
        "source_stats": {"lost_total": stats.lost_total, "dropped_total": stats.dropped_total,
                         "partial_total": stats.partial_total},
    }


def run(*, count: int, rounds: int, spread_s: float) -> tuple[list[Row], dict[str, Any]]:
    reason = missing("daemoneye.collector.events", "ProcEventSource") or missing(
        "daemoneye.collector.scanner", "ProcScanner")
    if reason is not None:
        return [status_row(SECTION, "capture of 1-5 ms processes", NOT_BUILT, reason)], {}
    results = []
    for _ in range(rounds):
        try:
            results.append(_round(count, spread_s))
        except Exception as error:  # EventsUnavailable and friends become a row
            return [status_row(SECTION, "capture of 1-5 ms processes",
                               SKIPPED, f"{type(error).__name__}: {error}")], {"rounds": results}
    def rate(key: str) -> list[float]:
        return [100.0 * result[key] / result["spawned"] for result in results]
    poller = rate("poller_seen")
    exec_seen = rate("exec_seen")
    ratios = paired_ratios(exec_seen, poller)  # rounds where the poller saw none drop out
    ratio = summarize(ratios) if ratios else None
    ratio_note = ("" if len(ratios) == len(results) else
                  f"; ratio over the {len(ratios)} of {len(results)} rounds where the poller "
                  "saw any")
    label = f"{count} processes living 1-5 ms"
    rows = [
        Row(SECTION, f"{label}: poller alone (1 s)", None, summarize(poller), "% seen"),
        Row(SECTION, f"{label}: events, exec seen", None, summarize(exec_seen), "% seen",
            "poller alone", ratio,
            note=f"exit seen: {summarize(rate('exit_seen')).median:.1f} %{ratio_note}"),
        Row(SECTION, f"{label}: events, exec with exe", None, summarize(rate("exec_with_exe")),
            "% seen", note="exec event carrying the executable (read before the process exited)"),
    ]
    return rows, {"count": count, "spread_s": spread_s, "rounds": results}
