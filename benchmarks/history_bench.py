"""History at the scale of a week (issue 16): a synthetic busy host — 2 new processes a second
plus 300 long-lived ones, 1.2 M instances — written through the real writer (`Store.apply`,
one delta per simulated minute), then measured:

- store size, and bytes per instance, against a reference built in the same run from the very
  same records in the previous schema's layout (v6: every text kept in each row and event),
  written with the same row functions the old writer used;
- `processes_at` (the set at a past moment) and a timeline page (200 events, and filtered
  `event:exec`), p50/p95 over random moments of the week, on both stores.

    .venv/bin/python -m benchmarks.history_bench               # 1.2 M instances
    .venv/bin/python -m benchmarks.history_bench --instances 120000   # a tenth, extrapolated

The command lines are drawn from a pool the way a busy host repeats itself (cron jobs, health
checks, shells) with one in five carrying a unique argument (a request id, a temp file). Each
instance carries the context a real one does (cgroup, unit, namespaces, session, stdio — its
stdout and stderr a journal stream shared by its service or, one in three, a pipe of its own —
and the allow-listed environment).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw

from benchmarks import cleanup
from daemoneye.event_filter import parse_event_filter
from daemoneye.models import ProcessEvent, ProcessKey, ProcessRecord, ScanDelta, ScanStats
from daemoneye.store import Store, open_readonly
from daemoneye.store.history import TIMELINE_KINDS, processes_at, timeline, timeline_matching
from daemoneye.store.readonly import ReadOnlyStore
from daemoneye.store.rows import INSERT_EVENT, PROCESS_COLUMNS, event_row, process_row
from daemoneye.store.schema import MIGRATIONS

WEEK_S = 7 * 86400
LONG_LIVED = 300
TICK_S = 60.0
TARGET_BYTES = 500 * 1000 * 1000
SAMPLES = 60

_PROGRAMS = [f"/usr/bin/tool{n:03d}" for n in range(400)]
_CWDS = [f"/srv/app{n}" for n in range(40)] + ["/", "/root", "/tmp", "/var/lib/cron"]
_USERS = [("root", 0), *((f"svc{n}", 1000 + n) for n in range(9))]
_UNITS = [f"app{n}.service" for n in range(40)] + ["cron.service", "ssh.service"]
_ENVIRONMENTS = [None, '{"SSH_CONNECTION":"10.0.0.7 51234 10.0.0.1 22"}', '{"SUDO_USER":"ops"}']


def _argv_pool(rng: random.Random) -> list[tuple[str, ...]]:
    pool = []
    for n in range(2000):
        program = rng.choice(_PROGRAMS)
        args = [f"--option-{rng.randrange(50)}={rng.randrange(10_000)}" for _ in range(4)]
        pool.append((program, *args, f"/etc/app/config-{n % 300}.yaml"))
    return pool


def synthetic_week(instances: int, seed: int = 16) -> Iterator[ScanDelta]:
    """Deltas of one simulated minute each: the long-lived processes first, then `instances`
    short-lived ones at an even rate over a week (each lives 0.5 to 30 s)."""
    rng = random.Random(seed)
    pool = _argv_pool(rng)
    weights = [1.0 / (rank + 1) for rank in range(len(pool))]  # Zipf-like: a few dominate
    start = time.time() - WEEK_S - 3600
    rate = instances / WEEK_S

    def record(pid: int, started: float) -> ProcessRecord:
        argv = rng.choices(pool, weights)[0]
        if rng.random() < 0.2:
            argv = (*argv, f"--request-id={rng.getrandbits(64):016x}")
        user, uid = rng.choice(_USERS)
        unit = rng.choice(_UNITS)
        # A service's children write to its journal stream; one in three (cron jobs, pipes
        # in scripts) writes to a pipe of its own.
        if rng.random() < 1 / 3:
            output = f"pipe:[{rng.randrange(10**6, 10**8)}]"
        else:
            output = f"socket:[{_UNITS.index(unit) + 20_000}]"
        return ProcessRecord(
            pid=pid,
            ppid=rng.randrange(2, 2000),
            start_time=started,
            name=argv[0].rsplit("/", 1)[-1][:15],
            exe=argv[0],
            cmdline=argv,
            cwd=rng.choice(_CWDS),
            uid=uid,
            user=user,
            gid=uid,
            state="S",
            threads=1,
            rss=rng.randrange(1 << 20, 1 << 26),
            cpu_percent=0.0,
            exe_sha256=hashlib.sha256(argv[0].encode()).hexdigest(),
            exe_deleted=False,
            first_seen=started,
            last_seen=started,
            cgroup=f"/system.slice/{unit}",
            unit=unit,
            pid_ns=4026531836,
            mnt_ns=4026531841,
            net_ns=4026531840,
            user_ns=4026531837,
            session_id=rng.randrange(1, 50),
            loginuid=None if uid == 0 else uid,
            stdin="file:/dev/null",
            stdout=output,
            stderr=output,
            environment=rng.choice(_ENVIRONMENTS),
        )

    stats = ScanStats(0.0, 0, 0, 0, 0, 0, 0)
    long_lived = [record(100 + n, start - 86400) for n in range(LONG_LIVED)]
    yield ScanDelta(
        start,
        tuple(long_lived),
        (),
        (),
        (),
        tuple(
            ProcessEvent(start, "start", r.pid, r.start_time, r.ppid, r.exe, r.cmdline)
            for r in long_lived
        ),
        stats,
    )
    pending: list[tuple[float, ProcessRecord]] = []  # (ends at, record)
    made, pid, now = 0, 5000, start
    while made < instances or pending:
        now += TICK_S
        due = round(rate * (now - start)) - made
        added, events = [], []
        for _ in range(max(0, min(due, instances - made))):
            pid = pid + 1 if pid < 4_000_000 else 5000
            born = now - rng.random() * TICK_S
            fresh = record(pid, born)
            added.append(fresh)
            events.append(
                ProcessEvent(
                    born, "exec", fresh.pid, born, fresh.ppid, fresh.exe, fresh.cmdline, None,
                    "netlink",
                )
            )  # fmt: skip
            pending.append((born + 0.5 + rng.random() * 29.5, fresh))
            made += 1
        ended: list[ProcessKey] = []
        still = []
        for ends, gone in pending:
            if ends <= now:
                ended.append(gone.key)
                events.append(
                    ProcessEvent(
                        ends, "exit", gone.pid, gone.start_time, gone.ppid, None, None,
                        rng.choice((0, 0, 0, 1)), "netlink",
                    )
                )  # fmt: skip
            else:
                still.append((ends, gone))
        pending = still
        yield ScanDelta(now, tuple(added), (), (), tuple(ended), tuple(events), stats)


def build_current(path: Path, deltas: Iterator[ScanDelta]) -> float:
    """The week through the real writer; returns the last moment written."""
    last = 0.0
    with Store.open(path) as store:
        for delta in deltas:
            store.apply(delta)
            last = delta.ts
    return last


def build_reference(path: Path, deltas: Iterator[ScanDelta]) -> None:
    """The same week in schema v6's layout (what the store wrote before strings were kept
    once): rows and events with their texts, written with the row functions the writer used."""
    conn = apsw.Connection(str(path))
    conn.pragma("auto_vacuum", "INCREMENTAL")
    conn.pragma("journal_mode", "WAL")
    conn.pragma("synchronous", "OFF")
    for migration in MIGRATIONS[:6]:
        conn.execute(migration.sql)
    conn.pragma("user_version", 6)
    insert = (
        f"INSERT INTO processes ({', '.join(PROCESS_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(PROCESS_COLUMNS))})"
    )
    end = (
        "UPDATE processes SET ended_at = ?, last_seen = ?, exit_code = ? "
        "WHERE pid = ? AND start_time = ?"
    )
    for delta in deltas:
        codes = {(e.pid, e.start_time): e.exit_code for e in delta.events if e.kind == "exit"}
        ended = [
            (delta.ts, delta.ts, codes.get((k.pid, k.start_time)), k.pid, k.start_time)
            for k in delta.ended
        ]
        with conn:
            conn.executemany(insert, [process_row(r) for r in delta.added])
            conn.executemany(end, ended)
            conn.executemany(INSERT_EVENT, [event_row(e) for e in delta.events])
    conn.pragma("wal_checkpoint", "TRUNCATE")
    conn.close()


def store_bytes(path: Path) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        pages = int(conn.pragma("page_count")) - int(conn.pragma("freelist_count"))
        return pages * int(conn.pragma("page_size"))
    finally:
        conn.close()


def table_bytes(path: Path) -> dict[str, int]:
    """Bytes per table and index (SQLite's dbstat), largest first."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
    finally:
        conn.close()
    return {str(name): int(str(size)) for name, size in rows}


def _timed(call: Callable[[], object], samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000.0)
    return times


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


# The reference: the queries history used before this work, on the v6 layout.
_V6_TIMELINE = """
SELECT ts, kind, pid, start_time, name, user, ppid, detail, src, id FROM (
    SELECT e.ts AS ts, e.kind AS kind, e.pid AS pid, e.start_time AS start_time,
           p.name AS name, p.user AS user, e.ppid AS ppid,
           CASE e.kind WHEN 'exit' THEN coalesce('exit code ' || e.exit_code, 'exited')
                       ELSE coalesce(e.cmdline, '') END AS detail,
           0 AS src, e.id AS id
    FROM process_events e
    LEFT JOIN processes p ON p.pid = e.pid AND p.start_time = e.start_time
    UNION ALL
    SELECT a.first_seen, 'alert', a.pid, a.start_time, p.name, p.user, p.ppid,
           a.severity || ' ' || a.rule_id || ': ' || a.title, 1, a.id
    FROM alerts a
    LEFT JOIN processes p ON p.pid = a.pid AND p.start_time = a.start_time
)
WHERE ts >= ? AND (ts < ? OR (ts = ? AND (src < ? OR (src = ? AND id < ?))))
  AND kind IN ({kinds})
ORDER BY ts DESC, src DESC, id DESC
LIMIT ?
"""


def _v6_processes_at(reader: ReadOnlyStore, moment: float) -> object:
    return reader.fetch_processes(
        "start_time <= ? AND (ended_at IS NULL OR ended_at > ?)",
        (moment, moment),
        order_by="pid, start_time",
    )


def _v6_timeline(reader: ReadOnlyStore, until: float, kinds: tuple[str, ...]) -> object:
    sql = _V6_TIMELINE.format(kinds=", ".join("?" * len(kinds)))
    return reader.fetch_rows(sql, (0.0, until, until, 2, 2, 0, *kinds, 200))


def latencies(
    reader: ReadOnlyStore, first: float, last: float, seed: int, *, reference: bool
) -> dict[str, list[float]]:
    rng = random.Random(seed)
    moments = [first + rng.random() * (last - first) for _ in range(SAMPLES)]
    execs = parse_event_filter("event:exec")
    all_kinds = tuple(sorted(TIMELINE_KINDS))

    def set_at(moment: float) -> object:
        if reference:
            return _v6_processes_at(reader, moment)
        return processes_at(reader, moment)

    def page_at(moment: float, kinds: tuple[str, ...] = all_kinds) -> object:
        if reference:
            return _v6_timeline(reader, moment, kinds)
        if kinds == all_kinds:
            return timeline(reader, since=0.0, until=moment, limit=200)
        return timeline_matching(
            reader, execs.matches, since=0.0, until=moment, kinds=execs.kinds, limit=200
        )

    it = iter(moments)
    at = _timed(lambda: set_at(next(it)), SAMPLES)
    it = iter(moments)
    page = _timed(lambda: page_at(next(it)), SAMPLES)
    it = iter(moments)
    filtered = _timed(lambda: page_at(next(it), ("exec",)), SAMPLES)
    day_back = _timed(lambda: page_at(last - 86400), 20)
    return {
        "processes_at_ms": at,
        "timeline_page_ms": page,
        "timeline_exec_page_ms": filtered,
        "timeline_day_back_ms": day_back,
    }


def main(argv: list[str] | None = None) -> int:
    cleanup.install()  # SIGTERM/SIGHUP unwind the with-blocks: no daemon or sleeper left
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_200_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    scale = 1_200_000 / args.instances
    results: dict[str, object] = {"instances": args.instances, "long_lived": LONG_LIVED}
    with tempfile.TemporaryDirectory(prefix="daemoneye-history-") as tmp:
        current, reference = Path(tmp) / "v7.db", Path(tmp) / "v6.db"
        began = time.perf_counter()
        last = build_current(current, synthetic_week(args.instances))
        results["build_current_s"] = time.perf_counter() - began
        began = time.perf_counter()
        build_reference(reference, synthetic_week(args.instances))
        results["build_reference_s"] = time.perf_counter() - began
        sizes = {"current": store_bytes(current), "reference": store_bytes(reference)}
        total = args.instances + LONG_LIVED
        results["bytes"] = sizes
        results["bytes_by_table"] = {
            "current": table_bytes(current),
            "reference": table_bytes(reference),
        }
        results["bytes_per_instance"] = {k: v / total for k, v in sizes.items()}
        results["week_bytes_at_1_2M"] = {k: v * scale for k, v in sizes.items()}
        results["size_ratio_current_to_reference"] = sizes["current"] / sizes["reference"]
        with open_readonly(current) as now_reader, open_readonly(reference) as old_reader:
            first = last - WEEK_S
            measured = {
                "current": latencies(now_reader, first, last, 7, reference=False),
                "reference": latencies(old_reader, first, last, 7, reference=True),
            }
    results["latency_p50_p95_ms"] = {
        store: {name: (statistics.median(v), _p95(v)) for name, v in figures.items()}
        for store, figures in measured.items()
    }
    week = results["week_bytes_at_1_2M"]
    assert isinstance(week, dict)
    results["verdict"] = {
        "week_fits_500MB": week["current"] <= TARGET_BYTES,
        "processes_at_p95_le_200ms": _p95(measured["current"]["processes_at_ms"]) <= 200,
        "timeline_page_p95_le_50ms": _p95(measured["current"]["timeline_page_ms"]) <= 50,
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
