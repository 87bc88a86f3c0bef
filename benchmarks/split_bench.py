"""The collector split's point: short-lived processes stored whole while the agent is busy.

A loop of `count` `/bin/sh -c : MARKER-i` runs (each lives well under a millisecond: `:` is a
shell builtin), one after the other, against the real daemon (agent + procmond). Then the
store is read: how many of them have a row with the executable and the full argv. Twice in the
same run: on an otherwise idle daemon, and while the daemon is loaded — `population` sleepers
for it to scan, and a rule file rewritten every second, each save swapping the rule set, which
evaluates the changed rules in full over every live process.

The reference in the same run is a bare event reader (`ProcEventSource`) in this process with
nothing else to do: the share of the loop it sees with exe and argv is what reading at exec
time can give on this machine at this moment.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import apsw

from benchmarks.daemon_runner import DaemonFailed, DaemonProcess
from benchmarks.model import FAILED, MET, MISSED, Row, status_row
from benchmarks.population import Population
from benchmarks.procstat import collector_of, rss_bytes
from benchmarks.spawn import ProcessGroup, assert_none_marked, new_token
from benchmarks.stats import summarize

SECTION = "split"
SHELL = "/bin/sh"
TARGET_PERCENT = 99.0
_SETTLE_S = 3.0
_CHURN_RULES = 40


def _churn_rules(generation: int) -> str:
    """`_CHURN_RULES` rules whose text changes with `generation`: each save changes them all."""
    blocks = []
    for index in range(_CHURN_RULES):
        blocks.append(
            f"""[[rule]]
id = "bench-churn-{index}"
name = "churn {index}"
description = "benchmark load, generation {generation}"
severity = "info"
query = '''SELECT pid, start_time, name FROM live_processes
  WHERE cmdline LIKE '%no-such-{generation}-{index}%' '''
"""
        )
    return "\n".join(blocks)


class _RuleChurn:
    """Rewrites a rule file every second until stopped; counts the saves."""

    def __init__(self, rules_dir: Path) -> None:
        rules_dir.mkdir(parents=True, exist_ok=True)
        self.path = rules_dir / "bench-churn.toml"
        self.saves = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rule-churn", daemon=True)

    def __enter__(self) -> _RuleChurn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.path.write_text(_churn_rules(self.saves))
            self.saves += 1
            self._stop.wait(1.0)


class _Reference:
    """A bare kernel event reader in this process: the loop's execs it saw with details."""

    def __init__(self) -> None:
        from daemoneye.collector.events import ProcEventSource
        from daemoneye.collector.procfs import read_boot_time

        self.source = ProcEventSource(read_boot_time())
        self.source.start()

    def whole(self, marker: str, count: int) -> int:
        self.source.stop()
        wanted = {(SHELL, "-c", f": {marker}-{i}") for i in range(count)}
        seen = set()
        for item in self.source.drain_observed():
            details = item.details
            exec_ = item.event.kind == "exec" and details is not None and bool(details.exe)
            if exec_ and details is not None and details.cmdline in wanted:
                seen.add(details.cmdline)
        return len(seen)


def _loop(marker: str, count: int) -> None:
    token = new_token("split")
    group = ProcessGroup(token, lifetime_s=300)
    try:
        for index in range(count):  # one after the other, as a shell loop runs them
            pid = group.spawn(SHELL, [SHELL, "-c", f": {marker}-{index}"])
            os.waitpid(pid, 0)
            group.live.discard(pid)
    finally:
        group.kill_all()
        assert_none_marked(token, "short-lived shells")


def _stored_whole(db: Path, marker: str, count: int) -> tuple[int, int]:
    """(rows with the exe and the exact argv, rows at all) of the loop's shells."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        rows = conn.execute(
            "SELECT exe, argv FROM processes WHERE cmdline LIKE ?", (f"%: {marker}-%",)
        ).fetchall()
    finally:
        conn.close()
    wanted = {json.dumps([SHELL, "-c", f": {marker}-{i}"]) for i in range(count)}
    whole = {
        str(argv)
        for exe, argv in rows
        if exe and isinstance(argv, str) and json.dumps(json.loads(argv)) in wanted
    }
    return len(whole), len(rows)


def _one(daemon: DaemonProcess, label: str, count: int, churn: bool) -> dict[str, Any]:
    marker = new_token("MARKER")
    reference = _Reference()
    saves = 0
    if churn:
        with _RuleChurn(daemon.root / "config" / "daemoneye" / "rules.d") as load:
            time.sleep(2.0)  # the first swaps are under way
            _loop(marker, count)
            saves = load.saves
    else:
        _loop(marker, count)
    seen = reference.whole(marker, count)
    time.sleep(_SETTLE_S)
    daemon.check_alive()
    whole, rows = _stored_whole(daemon.db, marker, count)
    return {
        "label": label,
        "count": count,
        "whole": whole,
        "rows": rows,
        "reference": seen,
        "rule_saves": saves,
    }


def run(count: int, population: int) -> tuple[list[Row], dict[str, Any]]:
    results: list[dict[str, Any]] = []
    rss: dict[str, float] = {}
    try:
        with DaemonProcess(interval=1.0) as daemon:
            daemon.wait_ready()
            results.append(_one(daemon, "idle", count, churn=False))
        with Population(population), DaemonProcess(interval=1.0) as daemon:
            daemon.wait_ready()
            time.sleep(_SETTLE_S)
            collector = collector_of(daemon.pid)
            rss["agent"] = rss_bytes(daemon.pid) / 2**20
            rss["procmond"] = rss_bytes(collector) / 2**20 if collector else 0.0
            results.append(_one(daemon, f"{population} processes + rule swaps", count, churn=True))
    except DaemonFailed as failed:
        return [status_row(SECTION, f"{count} short-lived shells", FAILED, str(failed))], {}
    rows = []
    for result in results:
        share = 100.0 * result["whole"] / result["count"]
        reference = 100.0 * result["reference"] / result["count"]
        rows.append(
            Row(
                SECTION,
                f"{count} `sh -c :` stored with exe and argv ({result['label']})",
                None,
                summarize([share]),
                "%",
                "bare event reader",
                summarize([share / reference if reference else 0.0]),
                f"≥ {TARGET_PERCENT:g} %",
                MET if share >= TARGET_PERCENT else MISSED,
                note=f"{result['whole']} of {result['count']} whole, {result['rows']} rows; "
                f"the bare reader saw {result['reference']} whole; "
                f"{result['rule_saves']} rule-set swaps during the loop",
            )
        )
    rows.append(
        Row(
            SECTION,
            f"RSS at {population} processes: procmond",
            population,
            summarize([rss.get("procmond", 0.0)]),
            "MiB",
            target="≤ 20 MiB",
            verdict=MET if rss.get("procmond", 99.0) <= 20.0 else MISSED,
            note=f"agent {rss.get('agent', 0.0):.1f} MiB; together ≤ 72 MiB is the target: "
            f"{rss.get('agent', 0.0) + rss.get('procmond', 0.0):.1f} MiB",
        )
    )
    return rows, {"results": results, "rss_mib": rss}
