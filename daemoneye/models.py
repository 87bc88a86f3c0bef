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
    # what the process runs in (collector/context.py): the same names as ProcessRecord's
    cgroup: str | None = None
    container_runtime: str | None = None
    container_id: str | None = None
    unit: str | None = None
    pid_ns: int | None = None
    mnt_ns: int | None = None
    net_ns: int | None = None
    user_ns: int | None = None
    ns_foreign: str | None = None
    session_id: int | None = None
    tty: str | None = None
    loginuid: int | None = None
    ssh_client: str | None = None
    ssh_source: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    environment: str | None = None


# The environment variables stored for each process by default ([collector] environment):
# nothing else from a process's environment is read into a record.
DEFAULT_ENVIRONMENT: tuple[str, ...] = (
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "HISTFILE",
    "SSH_CONNECTION",
    "SUDO_USER",
    "container",
)


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
    # set after start too, when the binary is deleted under the running process (the scan)
    exe_deleted: bool = field(metadata=_describe("dynamic"))
    first_seen: float = field(metadata=_describe("lifecycle", unit="time"))
    last_seen: float = field(metadata=_describe("lifecycle", unit="time"))
    ended_at: float | None = field(default=None, metadata=_describe("lifecycle", unit="time"))
    exit_code: int | None = field(default=None, metadata=_describe("lifecycle"))
    # -- context: what the process runs in, read with the details (docs/process-fields.md) --
    # the cgroup path, and the container (runtime, id) or systemd unit it names
    cgroup: str | None = field(default=None, metadata=_describe("details", hostile=True))
    # docker, podman, containerd, cri-o, kubernetes, lxc; 'unknown': a foreign pid namespace
    container_runtime: str | None = field(default=None, metadata=_describe("details"))
    container_id: str | None = field(default=None, metadata=_describe("details", hostile=True))
    unit: str | None = field(default=None, metadata=_describe("details", hostile=True))
    # namespace inode numbers, and which of pid/mnt/net/user differ from PID 1's
    pid_ns: int | None = field(default=None, metadata=_describe("details"))
    mnt_ns: int | None = field(default=None, metadata=_describe("details"))
    net_ns: int | None = field(default=None, metadata=_describe("details"))
    user_ns: int | None = field(default=None, metadata=_describe("details"))
    ns_foreign: str | None = field(default=None, metadata=_describe("details"))
    # the login session: session id, controlling terminal, audit login uid, SSH client
    session_id: int | None = field(default=None, metadata=_describe("details"))
    tty: str | None = field(default=None, metadata=_describe("details"))
    loginuid: int | None = field(default=None, metadata=_describe("details"))
    ssh_client: str | None = field(default=None, metadata=_describe("details"))
    ssh_source: str | None = field(default=None, metadata=_describe("details"))
    # fds 0-2 as '<kind>:<what>': tty:/dev/pts/3, pipe:[12], file:/x, socket:tcp a->b state
    stdin: str | None = field(default=None, metadata=_describe("details", hostile=True))
    stdout: str | None = field(default=None, metadata=_describe("details", hostile=True))
    stderr: str | None = field(default=None, metadata=_describe("details", hostile=True))
    # the allow-listed variables only ([collector] environment), a JSON object
    environment: str | None = field(default=None, metadata=_describe("details", hostile=True))

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


# Changes of a running process (no exec): each is a ProcessEvent of its own kind whose
# `old_value` and `new_value` say what changed (as text; ids as decimal). The kernel's
# connector reports renames, id changes and ptrace attaches; the scan finds the rest.
CHANGE_KINDS = (
    "rename",  # comm changed by prctl(PR_SET_NAME) or /proc/PID/comm: old and new name
    "uid",  # the real uid changed (setuid, setresuid): old and new uid
    "gid",  # the real gid changed: old and new gid
    "ptrace",  # a tracer attached: new_value is the tracer's pid
    "cwd",  # the working directory changed (found by the scan): old and new path
    "exe_deleted",  # the executable was deleted after start: old_value is its path
    "exe_replaced",  # ... and another file now has its path (an upgrade, or a swap)
)
LIFECYCLE_KINDS = ("start", "fork", "exec", "exit")
EVENT_KINDS = LIFECYCLE_KINDS + CHANGE_KINDS
# What a timeline lists and `event:` filters on: every process event kind, and alerts.
TIMELINE_KINDS = (*EVENT_KINDS, "alert")


@dataclass(frozen=True, slots=True)
class ProcessEvent:
    """An append-only fact about one instance: kind is 'start' (first seen by the poller),
    'fork', 'exec', 'exit', or a change after start (CHANGE_KINDS). `partial` marks a record
    whose process was gone before it was read. For a uid or gid change `exe_setid` says whether
    the executable carries the set-user-ID (set-group-ID) bit: a setuid program's own
    setuid(0) is expected, anything else becoming root is not."""

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
    old_value: str | None = None  # a change: the value before (CHANGE_KINDS)
    new_value: str | None = None  # a change: the value after
    exe_setid: bool | None = None  # uid/gid changes: the exe is set-user-ID/set-group-ID


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


STARTUP_EVALUATION_STATES = ("running", "done", "stopped")


@dataclass(frozen=True, slots=True)
class StartupEvaluation:
    """The daemon start's run of every rule over the whole stored history, one rule at a time
    after the rules went live. While it runs, alerts about past processes may still come and
    retention waits."""

    state: str  # one of STARTUP_EVALUATION_STATES; 'stopped': the daemon stopped before the end
    rules_total: int
    # rules whose run has ended: evaluated, failed, or skipped because an edit or a switch
    # meanwhile made the rule's own evaluation (or none) the one that counts
    rules_done: int
    rules_failed: int  # runs that ended in an error (the daemon's log names the rule)
    started_at: float  # epoch seconds
    elapsed_s: float  # so far while running; the whole run once it ended
    ended_at: float | None = None  # epoch seconds; None while running


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
    # [stream]: process events sent to sinks beside the alerts (all of its sinks together)
    stream_sinks: tuple[str, ...] = ()  # empty: no stream
    stream_sent_total: int = 0
    stream_queued: int = 0  # waiting for a slow or failing sink
    stream_dropped_rate_total: int = 0  # over [stream] rate
    stream_dropped_queue_total: int = 0  # a sink's queue was full
    stream_refused_total: int = 0  # a sink said it will never take them
    # the eBPF exec capture: 'eBPF' or 'off: <why>'; '' from a daemon without one
    exec_capture: str = ""
    exec_rescued_total: int = 0  # execs gone from /proc before the read, kept whole by it
    exec_uncaptured_total: int = 0  # exec events it had no record for (its ring was full)
    # procmond's BPF task passes (the first scan's context, the steady tick's stat): on,
    # resting or off and why; '' from a daemon without them
    task_passes: str = ""
    # the start's run of the rules over the whole store; None: there was nothing to run (no
    # rules), or a daemon without it
    startup_evaluation: StartupEvaluation | None = None


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


@dataclass(frozen=True, slots=True)
class AlertDelivery:
    """Where one alert stands with one sink (for `alerts show`)."""

    sink: str
    state: str  # pending | delivered | dead
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class AlertDetail:
    """One alert with its occurrence (how often it was reopened, plus one) and where each sink
    stands with it: what `alerts show` prints."""

    alert: Alert
    occurrence: int
    deliveries: tuple[AlertDelivery, ...]


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
class HostMeters:
    """The host as htop shows it above its table, sampled by the daemon (so a dashboard on
    another machine, over ssh, shows the monitored host): CPU use per core over the last
    sample interval, memory and swap in bytes, load averages and the time since boot."""

    cpu_percent: tuple[float, ...]  # per core, 0-100
    memory_total: int
    memory_used: int  # total minus available
    swap_total: int
    swap_used: int
    load: tuple[float, float, float]  # 1, 5 and 15 minutes
    boot_time: float  # epoch seconds
    sampled_at: float


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """The answer to `health` (and each `health.report`): the collector's report, the
    connected IPC clients, the engine's status (None while no engine runs) and the host's
    meters (None when they could not be read)."""

    report: HealthReport
    clients: int
    engine: EngineStatus | None
    host: HostMeters | None = None
    history: HistoryReach | None = None  # how far back the store reaches (`health` only)


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One moment of history, newest first in a timeline: a process started (first seen by the
    scanner), forked, exec'd or exited, or an alert was raised for it. `seq` orders events
    with the same time (and pages through them)."""

    ts: float
    kind: str  # one of TIMELINE_KINDS: a process event's kind, or 'alert'
    pid: int
    start_time: float
    name: str | None  # the instance's name, when the store still holds it
    user: str | None
    ppid: int | None
    # the command line (exec, start), the exit status (exit), what changed (old → new), the
    # alert's title
    detail: str
    seq: tuple[int, int]  # (0 for process events, 1 for alerts; the row id)


@dataclass(frozen=True, slots=True)
class HistoryReach:
    """How far back the store's history really goes (retention deletes the oldest first)."""

    oldest: float | None  # the earliest moment any retained instance was seen
    newest: float | None  # the latest moment anything was seen
    instances: int


@dataclass(frozen=True, slots=True)
class TableColumn:
    """One column of a readable table: its name and declared type ("" when none)."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A table or view user SQL may read (`query.tables`), with its columns in order."""

    name: str
    kind: str  # 'table' or 'view'
    columns: tuple[TableColumn, ...]


# -- Sockets per process instance (issue 14 item 4; collector/connections.py fills them) ------

CONNECTION_PROTOCOLS = ("tcp", "tcp6", "udp", "udp6", "unix")


@dataclass(frozen=True, slots=True)
class Connection:
    """One socket held by one process instance, as the `connections` table has it.

    Addresses are text: IPv4 dotted, IPv6 compressed (an IPv4-mapped IPv6 address is shown as
    its IPv4 address; `protocol` still says tcp6/udp6), a unix socket's path (hostile text: any
    bytes a process chose, '@' starts an abstract name) or None. `direction`: 'listen',
    'inbound' (accepted on a listening port), 'outbound', or None when not known (udp, unix).
    `remote_scope`: 'loopback', 'private', 'link-local', 'multicast', 'public' or None.
    """

    pid: int
    start_time: float
    protocol: str  # one of CONNECTION_PROTOCOLS
    local_address: str | None
    local_port: int | None
    remote_address: str | None
    remote_port: int | None
    state: str  # LISTEN, ESTABLISHED, SYN_SENT …; UNCONNECTED/CONNECTED for udp and unix
    inode: int  # the socket's inode: unique while it lives, shared by the holders of one socket
    netns: int | None  # the inode of the network namespace it was found in
    direction: str | None
    remote_scope: str | None
    first_seen: float
    last_seen: float  # the last refresh that found it, or its state, changed
    ended_at: float | None = None  # NULL while the process still holds it

    @property
    def key(self) -> ProcessKey:
        return ProcessKey(self.pid, self.start_time)


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """The cost of one connections refresh, for `health` and the benchmark."""

    duration_s: float
    sockets: int  # sockets in the tables read (all namespaces)
    namespaces: int  # network namespaces read
    processes_walked: int  # processes whose fd directory was listed this refresh
    links_read: int  # readlink calls on /proc/PID/fd/N this refresh
    unresolved: int  # sockets no walked process was found holding
    denied: int  # fd directories that could not be read (permission)
    vanished: int  # processes or fds that went away between two reads


@dataclass(frozen=True, slots=True)
class ConnectionsDelta:
    """What one connections refresh changed: new sockets per instance, sockets whose state or
    addresses changed, and sockets an instance no longer holds (ended at `ts`)."""

    ts: float
    opened: tuple[Connection, ...]
    changed: tuple[Connection, ...]
    closed: tuple[Connection, ...]
    stats: ConnectionStats


@dataclass(frozen=True, slots=True)
class HistoryActivity:
    """How busy the past was (`history.activity`): new process instances and alerts in each of
    equal buckets from `since`, oldest first, and how far the store's history reaches."""

    since: float
    bucket_s: float
    started: tuple[int, ...]  # new process instances per bucket
    alerts: tuple[int, ...]  # alerts raised per bucket
    reach: HistoryReach
