"""Shared, immutable records. These are also the IPC wire schema, so they import nothing of
daemoneye and hold only plain values (str, int, float, bool, None and tuples of them)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True, slots=True)
class ProcessKey:
    """A process instance: pids are reused, (pid, start_time) is not."""

    pid: int
    start_time: float  # wall-clock epoch seconds, boot time + stat field 22 / CLK_TCK


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """The cheap per-tick state of one process, all from one read of /proc/<pid>/stat."""

    pid: int
    start_ticks: int  # stat field 22, clock ticks since boot: identity within a boot
    ppid: int
    comm: str  # the kernel's 15-byte name; changes on execve
    state: str
    threads: int
    rss_bytes: int
    cpu_ticks: int  # utime + stime


@dataclass(frozen=True, slots=True)
class ProcessDetails:
    """What is read once per process instance (and again after an exec)."""

    exe: str | None  # None when unreadable (kernel threads, permission denied)
    exe_deleted: bool
    cmdline: tuple[str, ...]
    cwd: str | None
    uid: int | None
    gid: int | None
    user: str | None


# -- The process record, described once -------------------------------------------------------
# Every field of ProcessRecord says what it is in its metadata (a `FieldInfo`); the store's
# columns and statements, the collector's change detection, the CLI's fields and the detail
# pane's facts are derived from `PROCESS_FIELDS` in the layer that uses them. Adding a field
# touches this description, the reader that fills it, and the views that choose to show it
# (and a store migration that adds its column: tests/unit/test_process_fields.py says which).

FIELD_GROUPS = ("identity", "details", "dynamic", "lifecycle")


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """What one ProcessRecord field is, beyond its Python type.

    group: identity (names the instance, never changes), details (read once per instance and
    again after an exec: written with the exec), dynamic (may change during the instance's life
    without an exec: written by the per-tick update), lifecycle (when it was seen and ended).
    hostile: text the process controls (escaped before SQLite, rendered literally).
    unit: how a view formats a number: 'time' (epoch seconds), 'bytes', 'percent' or ''.
    columns: the `processes` columns that hold it; empty means one column named like the field.
    """

    group: str
    hostile: bool = False
    unit: str = ""
    columns: tuple[str, ...] = ()


def _describe(
    group: str, *, hostile: bool = False, unit: str = "", columns: tuple[str, ...] = ()
) -> dict[str, FieldInfo]:
    return {"process": FieldInfo(group, hostile, unit, columns)}


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """One process instance as the store and every client see it."""

    pid: int = field(metadata=_describe("identity"))
    ppid: int = field(metadata=_describe("dynamic"))  # reparenting when the parent dies
    start_time: float = field(metadata=_describe("identity", unit="time"))
    name: str = field(metadata=_describe("dynamic", hostile=True))  # prctl(PR_SET_NAME)
    exe: str | None = field(metadata=_describe("details", hostile=True))
    # argv joined by single spaces (for people and LIKE) and as an exact JSON list
    cmdline: tuple[str, ...] = field(
        metadata=_describe("details", hostile=True, columns=("cmdline", "argv"))
    )
    cwd: str | None = field(metadata=_describe("dynamic", hostile=True))
    uid: int | None = field(metadata=_describe("dynamic"))
    user: str | None = field(metadata=_describe("dynamic", hostile=True))
    gid: int | None = field(metadata=_describe("dynamic"))
    state: str = field(metadata=_describe("dynamic"))
    threads: int = field(metadata=_describe("dynamic"))
    rss: int = field(metadata=_describe("dynamic", unit="bytes"))
    # of one core, over the last interval
    cpu_percent: float = field(metadata=_describe("dynamic", unit="percent"))
    exe_sha256: str | None = field(metadata=_describe("details"))
    exe_deleted: bool = field(metadata=_describe("details"))
    first_seen: float = field(metadata=_describe("lifecycle", unit="time"))
    last_seen: float = field(metadata=_describe("lifecycle", unit="time"))
    ended_at: float | None = field(default=None, metadata=_describe("lifecycle", unit="time"))
    exit_code: int | None = field(default=None, metadata=_describe("lifecycle"))

    @property
    def key(self) -> ProcessKey:
        return ProcessKey(self.pid, self.start_time)


@dataclass(frozen=True, slots=True)
class RecordField:
    """One field of ProcessRecord with its description: `type` is the annotation as written
    ("int", "str | None", "tuple[str, ...]")."""

    name: str
    type: str
    info: FieldInfo

    @property
    def group(self) -> str:
        return self.info.group

    @property
    def hostile(self) -> bool:
        return self.info.hostile

    @property
    def unit(self) -> str:
        return self.info.unit

    @property
    def columns(self) -> tuple[str, ...]:
        return self.info.columns or (self.name,)

    @property
    def optional(self) -> bool:
        return self.type.endswith("| None")


def describe_fields(cls: type) -> tuple[RecordField, ...]:
    """The described fields of a record class, in declaration order; a field without a
    description is an error here, at import, not a silent gap in some consumer."""
    described = []
    for f in fields(cls):
        info = f.metadata.get("process")
        if not isinstance(info, FieldInfo) or info.group not in FIELD_GROUPS:
            raise TypeError(f"{cls.__name__}.{f.name} has no valid process-field description")
        described.append(RecordField(f.name, str(f.type), info))
    return tuple(described)


PROCESS_FIELDS: tuple[RecordField, ...] = describe_fields(ProcessRecord)


def field_names(*groups: str) -> tuple[str, ...]:
    """The names of ProcessRecord's fields in these groups, in record order."""
    unknown = set(groups) - set(FIELD_GROUPS)
    if unknown:
        raise ValueError(f"unknown field groups {sorted(unknown)}; expected {FIELD_GROUPS}")
    return tuple(f.name for f in PROCESS_FIELDS if f.group in groups)


@dataclass(frozen=True, slots=True)
class ProcessEvent:
    """An append-only lifecycle fact: kind is 'start' (first seen by the poller), 'fork',
    'exec' or 'exit'. `partial` marks a record whose process was gone before it was read."""

    ts: float
    kind: str
    pid: int
    start_time: float
    ppid: int | None = None
    exe: str | None = None
    cmdline: tuple[str, ...] | None = None
    exit_code: int | None = None
    source: str = "poll"  # 'poll' or 'netlink'
    partial: bool = False


@dataclass(frozen=True, slots=True)
class ScanStats:
    """Counters from one scan: what the collector saw and what it could not read."""

    duration_s: float
    processes: int
    new: int
    ended: int
    execs: int
    vanished: int  # disappeared between listing and reading (normal, skipped)
    denied: int  # exists but could not be read (permission), counted for `health`


@dataclass(frozen=True, slots=True)
class ScanDelta:
    """Everything one tick of the collector learned, ready for the store."""

    ts: float
    added: tuple[ProcessRecord, ...]
    updated: tuple[ProcessRecord, ...]  # a field of the dynamic group changed (state, cpu, cwd …)
    execed: tuple[ProcessRecord, ...]  # same instance, new exe/cmdline after execve
    ended: tuple[ProcessKey, ...]
    events: tuple[ProcessEvent, ...]
    stats: ScanStats


@dataclass(frozen=True, slots=True)
class ExeHash:
    """The SHA-256 of the executable behind one process instance, computed off the hot path."""

    key: ProcessKey
    sha256: str | None  # None when unreadable or larger than the cap
    reason: str | None = None  # why sha256 is None


# Linux capability names by number (include/uapi/linux/capability.h, up to Linux 6.x).
CAPABILITY_NAMES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)


@dataclass(frozen=True, slots=True)
class ProcessPrivileges:
    """One of the daemon's processes as /proc/PID/status describes its privileges."""

    role: str  # 'agent' or 'procmond'
    pid: int
    uid: int  # effective
    user: str  # the uid's name, or the number when it has none
    gid: int  # effective
    effective: tuple[str, ...]  # capability names (CAPABILITY_NAMES), lowest bit first
    permitted: tuple[str, ...]
    bounding: tuple[str, ...]
    ambient: tuple[str, ...]
    no_new_privs: bool


@dataclass(frozen=True, slots=True)
class HealthReport:
    """How the daemon is doing; written every tick and served by `daemoneye health`."""

    daemon_pid: int
    daemon_uid: int
    version: str
    mode: str  # 'system' or 'user'
    privileged: bool  # False: other users' exe/cwd/cmdline details are hidden
    event_source: str  # 'netlink' or 'polling-only: <reason>'
    started_at: float
    updated_at: float  # when this report was written (the end of the last tick)
    interval_s: float
    ticks: int
    last_scan_ms: float
    avg_scan_ms: float
    processes: int
    new_per_second: float
    denied_total: int
    vanished_total: int
    hash_dropped_total: int
    store_bytes: int
    daemon_cpu_percent: float
    daemon_rss_bytes: int
    events_total: int = 0  # kernel process events decoded (netlink mode)
    events_lost_total: int = 0  # lost by the kernel (socket buffer overrun)
    events_dropped_total: int = 0  # shed by the daemon under a fork storm
    rules_loaded: int = 0
    rules_enabled: int = 0
    rule_problems: int = 0  # rules refused at the last load
    rule_timeouts_total: int = 0  # rule queries aborted at their time budget
    sink_backlog: int = 0  # alerts waiting for delivery, all sinks
    sink_dead: int = 0  # alerts dead-lettered after the last attempt
    problems: tuple[str, ...] = ()  # each a sentence; empty when healthy
    store_writable: bool = True  # False while writes fail (disk full): alerts are held
    alerts_held: int = 0  # new alerts held in memory until the store can be written
    alerts_held_dropped: int = 0  # alerts that did not fit in memory meanwhile (lost)
    event_filter: str = ""  # netlink mode: the kernel's event mask and the socket filter in use
    procmond_pid: int = 0  # the collector process; 0 while it is not running
    procmond_rss_bytes: int = 0
    procmond_cpu_percent: float = 0.0  # of one core, over the last 5 s or more
    procmond_restarts: int = 0  # times the agent started a new procmond after one ended
    procmond_gap_s: float = 0.0  # seconds without a collector, all restarts together
    procmond_missed_upper: int = 0  # tasks created during those gaps: execs possibly missed
    agent_privileges: ProcessPrivileges | None = None  # None: not read (an older daemon)
    procmond_privileges: ProcessPrivileges | None = None  # None: procmond is not running


SEVERITIES = ("info", "low", "medium", "high", "critical")  # lowest first
ALERT_STATES = ("open", "acknowledged", "closed")


@dataclass(frozen=True, slots=True)
class Rule:
    """One detection rule as loaded from a TOML `[[rule]]` table or a Sigma rule."""

    id: str
    name: str
    description: str
    severity: str  # one of SEVERITIES
    enabled: bool
    tags: tuple[str, ...]
    query: str  # one SELECT; rows naming pid + start_time become alerts
    title: str | None  # template with {column} placeholders from the result row
    dedup_window_s: float | None  # a closed alert for the same instance reopens after this
    throttle_s: float | None  # at most one new alert of this rule per this many seconds
    source_file: str
    source_line: int
    overrides: str | None = None  # "file:line" of the rule with the same id this one replaced
    # Where the rule came from: "toml", or "sigma" (a converted Sigma rule, which keeps its
    # Sigma metadata below; `query` is the SQL it was converted to).
    source_format: str = "toml"
    sigma_id: str | None = None
    status: str | None = None  # Sigma's status: stable, test, experimental, deprecated, …
    references: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """Why a rule (or a whole file) was refused; `line` is 1-based, 0 when unknown."""

    file: str
    line: int
    rule_id: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        rule = f" rule {self.rule_id!r}:" if self.rule_id else ""
        return f"{where}:{rule} {self.message}"


@dataclass(frozen=True, slots=True)
class Detection:
    """One result row of one rule that names a process instance: the raw material of an alert."""

    rule_id: str
    severity: str
    title: str
    pid: int
    start_time: float
    ts: float
    row: tuple[tuple[str, str | int | float | None], ...]  # (column, value) pairs, in order


@dataclass(frozen=True, slots=True)
class Alert:
    """A deduplicated alert: one per (rule id, process instance); repeats raise `count`."""

    id: int
    rule_id: str
    severity: str
    title: str
    pid: int
    start_time: float
    first_seen: float
    last_seen: float
    count: int
    state: str  # one of ALERT_STATES
    state_changed_at: float | None
    state_changed_by: str | None  # "uid 0 pid 123" of the admin who changed it
    row: tuple[tuple[str, str | int | float | None], ...]
    # The host it came from when the dashboard watches several (`--host a --host b`): the
    # dashboard's own label; a daemon always sends "" (it is the host).
    host: str = ""


# -- IPC wire schema (ARCHITECTURE.md §5): what the daemon sends and clients receive ---------


@dataclass(frozen=True, slots=True)
class Hello:
    """The answer to `hello`, the first call on every connection."""

    protocol_version: int
    daemon_version: str
    host: str
    role: str  # 'admin' or 'reader'
    peer_uid: int
    peer_pid: int


@dataclass(frozen=True, slots=True)
class ProcessChange:
    """Changed fields of one live instance; only the fields that changed are in `fields`."""

    pid: int
    start_time: float
    fields: tuple[tuple[str, str | int | float | bool | None], ...]


@dataclass(frozen=True, slots=True)
class ProcessesDelta:
    """One tick's changes to the live process table, keyed by (pid, start_time)."""

    seq: int
    added: tuple[ProcessRecord, ...]
    changed: tuple[ProcessChange, ...]
    removed: tuple[ProcessKey, ...]


@dataclass(frozen=True, slots=True)
class RuleStatus:
    """A rule as `rules.list` shows it: the rule, its hits and its load problems."""

    rule: Rule
    hits: int
    last_hit: float | None
    problems: tuple[RuleProblem, ...]
    timeouts: int = 0  # evaluations aborted at the time budget since the daemon started
    suspended: bool = False  # not evaluated: it timed out repeatedly (until its query changes)


# -- IPC results that the engine also produces (daemon/service.py's DetectionEngine) ----------


@dataclass(frozen=True, slots=True)
class RulesReload:
    """The outcome of a rule reload. `accepted`: every rule validated; otherwise `problems`
    name the rules that kept their last good version or were not loaded."""

    accepted: bool
    active: int  # rules in the active set afterwards
    problems: tuple[RuleProblem, ...]


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """`audit verify`: whether the hash chain holds, and the first entry that does not."""

    ok: bool
    entries: int
    first_bad_id: int | None
    reason: str | None
    pruned: str | None = None  # what was pruned under a checkpoint, and whether it verified


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """The detection engine's part of `health`."""

    rules_active: int
    rules_rejected: int  # rules refused at the last load (their problems are in rules.list)
    last_reload_at: float | None
    last_reload_error: str | None  # the last reload was refused: the previous set is active
    alerts_open: int
    sink_backlog: int  # alerts waiting in the outbox for a sink
    problems: tuple[str, ...] = ()  # each a sentence; any makes `daemoneye health` fail
    rule_timeouts_total: int = 0  # rule evaluations aborted at their time budget since start
    rules_suspended: int = 0  # rules switched off after timing out repeatedly


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """The answer to `health` (and each `health.report`): the collector's report, the
    connected IPC clients, and the engine's status (None while no engine runs)."""

    report: HealthReport
    clients: int
    engine: EngineStatus | None


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One moment of history, newest first in a timeline: a process started (first seen by the
    scanner), forked, exec'd or exited, or an alert was raised for it. `seq` orders events
    with the same time (and pages through them)."""

    ts: float
    kind: str  # 'start', 'fork', 'exec', 'exit' or 'alert'
    pid: int
    start_time: float
    name: str | None  # the instance's name, when the store still holds it
    user: str | None
    ppid: int | None
    detail: str  # the command line (exec, start), the exit status (exit), the alert's title
    seq: tuple[int, int]  # (0 for process events, 1 for alerts; the row id)


@dataclass(frozen=True, slots=True)
class HistoryReach:
    """How far back the store's history really goes (retention deletes the oldest first)."""

    oldest: float | None  # the earliest moment any retained instance was seen
    newest: float | None  # the latest moment anything was seen
    instances: int
