"""Where sub-millisecond processes are lost: a diagnostic, not a figure of the suite.

`python -m benchmarks.shortlived_probe [COUNT] [ROUNDS]` (root) runs a loop of COUNT
`/bin/sh -c : MARK-i` (each lives well under a millisecond) against a bare event reader
(`ProcEventSource`, as procmond runs it), once per scheduling variant in each round, the
variants interleaved so that they share the machine's load:

- `plain`: nice 0, what procmond gets without CAP_SYS_NICE or RLIMIT_RTPRIO;
- `nice`: the reader thread at nice -10 (`priority_boost`, root only);
- `fifo`: the reader thread SCHED_FIFO 1 (procmond's with `LimitRTPRIO=1`).

For each exec it times the wait from the kernel's event timestamp to the start of the /proc
read, and whether the process was already gone. It prints, per variant, how many of the loop
were read whole (exe and exact argv), and the wait's p50/p95 for those read whole and for
those missed; plus the shells' lifetimes (exec event to exit event).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import cleanup
from daemoneye.collector.events import ProcEventSource
from daemoneye.collector.exec_capture import CapturedExec
from daemoneye.collector.procfs import StatFields, read_boot_time
from daemoneye.models import ProcessDetails

SHELL = "/bin/sh"
VARIANTS = ("plain", "nice", "fifo")

_ExecRead = tuple[StatFields | None, ProcessDetails, bool, CapturedExec | None]


def _quantile_us(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def one(variant: str, count: int) -> dict[str, Any]:
    source = ProcEventSource(
        read_boot_time(),
        realtime=variant == "fifo",
        priority_boost=10 if variant == "nice" else 0,
    )
    waits: dict[int, int] = {}  # pid -> ns from the event to the start of its read
    read_exec: Callable[[int, int], _ExecRead] = source._read_exec

    def timed(pid: int, event_ns: int) -> _ExecRead:
        waits[pid] = time.monotonic_ns() - event_ns
        return read_exec(pid, event_ns)

    source._read_exec = timed  # type: ignore[method-assign]
    source.start()
    marker = f"MARK{os.getpid()}-{variant}-{time.monotonic_ns()}"
    pids = []
    try:
        time.sleep(0.3)
        for index in range(count):
            pid = os.posix_spawn(SHELL, [SHELL, "-c", f": {marker}-{index}"], {})
            os.waitpid(pid, 0)
            pids.append(pid)
        time.sleep(0.5)
    finally:
        source.stop()
    observed = source.drain_observed()
    execs = {o.event.pid: o for o in observed if o.event.kind == "exec"}
    exits = {o.event.pid: o.event.ts for o in observed if o.event.kind == "exit"}
    whole_waits: list[int] = []
    missed_waits: list[int] = []
    lifetimes: list[int] = []
    for index, pid in enumerate(pids):
        item = execs.get(pid)
        if item is None or pid not in waits:
            continue
        details = item.details
        whole = (
            details is not None
            and bool(details.exe)
            and details.cmdline == (SHELL, "-c", f": {marker}-{index}")
        )
        (whole_waits if whole else missed_waits).append(waits[pid])
        if pid in exits:
            lifetimes.append(int((exits[pid] - item.event.ts) * 1e9))
    return {
        "variant": variant,
        "count": count,
        "whole": len(whole_waits),
        "missed": len(missed_waits),
        "unseen": count - len(whole_waits) - len(missed_waits),
        "wait_us_whole_p50_p95": [_quantile_us(whole_waits, 0.5), _quantile_us(whole_waits, 0.95)],
        "wait_us_missed_p50_p95": [
            _quantile_us(missed_waits, 0.5),
            _quantile_us(missed_waits, 0.95),
        ],
        "lifetime_us_p50_p95": [_quantile_us(lifetimes, 0.5), _quantile_us(lifetimes, 0.95)],
        "loadavg": os.getloadavg()[0],
    }


def main(argv: list[str]) -> int:
    cleanup.install()  # SIGTERM/SIGHUP unwind the with-blocks: no daemon or sleeper left
    if os.geteuid() != 0:
        print("shortlived_probe: needs root (kernel process events)", file=sys.stderr)
        return 2
    count = int(argv[0]) if argv else 300
    rounds = int(argv[1]) if len(argv) > 1 else 2
    for _ in range(rounds):
        for variant in VARIANTS:
            print(json.dumps(one(variant, count)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
