"""The store's schema and its forward migrations, versioned with `PRAGMA user_version`.

Each migration is one SQL script applied in its own `BEGIN IMMEDIATE` transaction together with
the bump of `user_version`, so a crash mid-migration leaves the previous version intact. To change
the schema, append a `Migration` whose version is the next integer; never edit a shipped one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import apsw

from daemoneye.errors import StoreError
from daemoneye.store.schema_v7 import V7_STRINGS

# Written to the SQLite header (`PRAGMA application_id`) so a DaemonEye store can be told apart
# from any other SQLite file: the ASCII bytes "DEye".
APPLICATION_ID = 0x44457965


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward step: the script that takes the schema from `version - 1` to `version`."""

    version: int
    description: str
    sql: str


_V1_PROCESSES = f"""
PRAGMA application_id = {APPLICATION_ID};

-- One row per process instance, keyed by (pid, start_time): pids are reused, instances are not.
CREATE TABLE processes (
    id          INTEGER PRIMARY KEY,
    pid         INTEGER NOT NULL,
    ppid        INTEGER NOT NULL,
    start_time  REAL    NOT NULL,            -- wall-clock epoch seconds
    name        TEXT    NOT NULL,
    exe         TEXT,
    cmdline     TEXT    NOT NULL,            -- argv joined by single spaces
    argv        TEXT    NOT NULL,            -- JSON array, exact
    cwd         TEXT,
    uid         INTEGER,
    user        TEXT,
    gid         INTEGER,
    state       TEXT    NOT NULL,
    threads     INTEGER NOT NULL,
    rss         INTEGER NOT NULL,            -- bytes
    cpu_percent REAL    NOT NULL,
    exe_sha256  TEXT,
    exe_deleted INTEGER NOT NULL DEFAULT 0 CHECK (exe_deleted IN (0, 1)),
    first_seen  REAL    NOT NULL,
    last_seen   REAL    NOT NULL,
    ended_at    REAL,                        -- NULL while alive
    exit_code   INTEGER,
    UNIQUE (pid, start_time)
) STRICT;

-- ended_at: the live view and retention; start_time: "started in the last N s" rules;
-- ppid: children and ancestry; exe: rules on a binary. last_seen changes on every update,
-- so it is deliberately not indexed.
CREATE INDEX processes_ended_at ON processes (ended_at);
CREATE INDEX processes_start_time ON processes (start_time);
CREATE INDEX processes_ppid ON processes (ppid);
CREATE INDEX processes_exe ON processes (exe);

CREATE VIEW live_processes AS SELECT * FROM processes WHERE ended_at IS NULL;

-- Append-only lifecycle facts. No foreign key to processes: an event may name an instance that
-- was never stored (gone before it could be read) or that retention has already removed.
CREATE TABLE process_events (
    id          INTEGER PRIMARY KEY,
    ts          REAL    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('start', 'fork', 'exec', 'exit')),
    pid         INTEGER NOT NULL,
    start_time  REAL    NOT NULL,
    ppid        INTEGER,
    exe         TEXT,
    cmdline     TEXT,
    argv        TEXT,
    exit_code   INTEGER,
    source      TEXT    NOT NULL CHECK (source IN ('poll', 'netlink')),
    partial     INTEGER NOT NULL DEFAULT 0 CHECK (partial IN (0, 1))
) STRICT;

CREATE INDEX process_events_ts ON process_events (ts);
CREATE INDEX process_events_instance ON process_events (pid, start_time);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
"""

_V2_ALERTS = """
-- One row per (rule, process instance): repeats raise `count`; a closed alert seen again after
-- its rule's dedup window is reopened in place as a new `occurrence`.
CREATE TABLE alerts (
    id               INTEGER PRIMARY KEY,
    rule_id          TEXT    NOT NULL,
    severity         TEXT    NOT NULL
                     CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    title            TEXT    NOT NULL,
    pid              INTEGER NOT NULL,
    start_time       REAL    NOT NULL,
    first_seen       REAL    NOT NULL,
    last_seen        REAL    NOT NULL,
    count            INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1),
    occurrence       INTEGER NOT NULL DEFAULT 1 CHECK (occurrence >= 1),
    state            TEXT    NOT NULL DEFAULT 'open'
                     CHECK (state IN ('open', 'acknowledged', 'closed')),
    state_changed_at REAL,
    state_changed_by TEXT,
    row              TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(row)),  -- [[column, value]]
    UNIQUE (rule_id, pid, start_time)
) STRICT;

-- Listing is newest first, optionally narrowed by state, severity or rule.
CREATE INDEX alerts_last_seen ON alerts (last_seen);
CREATE INDEX alerts_state ON alerts (state, last_seen);
CREATE INDEX alerts_severity ON alerts (severity, last_seen);
CREATE INDEX alerts_rule ON alerts (rule_id, last_seen);

-- Per-rule alerting counters; `last_raised_at` is the throttle's clock, so it survives restarts.
CREATE TABLE rule_stats (
    rule_id            TEXT PRIMARY KEY,
    alerts_raised      INTEGER NOT NULL DEFAULT 0,
    alerts_suppressed  INTEGER NOT NULL DEFAULT 0,  -- new alerts the throttle held back
    last_raised_at     REAL,
    last_suppressed_at REAL
) STRICT;

-- The tamper-evident ledger: each entry's hash covers its fields and the previous entry's hash.
-- seq is assigned by the writer (never reused); the head (seq, hash) is mirrored in meta so a
-- truncated tail is detectable. Nothing prunes this table.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    ts        REAL    NOT NULL,
    kind      TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    detail    TEXT    NOT NULL CHECK (json_valid(detail)),
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
) STRICT;

-- Guards against accidental rewrites by code; tampering by hand is what the hash chain catches.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

-- The persistent outbox: one row per (alert occurrence, sink), written in the same transaction
-- as the alert, removed from `pending` only once the sink has taken it (at-least-once).
CREATE TABLE sink_outbox (
    id              INTEGER PRIMARY KEY,
    alert_id        INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    sink            TEXT    NOT NULL,
    payload         TEXT    NOT NULL CHECK (json_valid(payload)),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    last_error      TEXT,
    created_at      REAL    NOT NULL,
    delivered_at    REAL
) STRICT;

CREATE INDEX sink_outbox_due ON sink_outbox (state, next_attempt_at);
CREATE INDEX sink_outbox_sink_due ON sink_outbox (sink, state, next_attempt_at);
CREATE INDEX sink_outbox_alert ON sink_outbox (alert_id);

-- Per-sink delivery counters, updated with the outbox rows, so `health` can read them from the
-- store even when no daemon runs.
CREATE TABLE sink_stats (
    sink                  TEXT PRIMARY KEY,
    delivered_total       INTEGER NOT NULL DEFAULT 0,
    failed_attempts_total INTEGER NOT NULL DEFAULT 0,
    dead_total            INTEGER NOT NULL DEFAULT 0,
    last_success_at       REAL,
    last_error            TEXT,
    last_error_at         REAL
) STRICT;
"""

_V3_AUDIT_CHECKPOINTS = """
-- Audit log retention: the pruned prefix of the chain is summed up by one signed checkpoint
-- (engine/audit_checkpoint.py; only the newest row is kept). The chain that remains continues
-- from its last_hash. signature is HMAC-SHA256 with the per-store key in `<db>.audit-key`.
CREATE TABLE audit_checkpoints (
    id          INTEGER PRIMARY KEY,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    first_ts    REAL    NOT NULL,
    last_ts     REAL    NOT NULL,
    last_hash   TEXT    NOT NULL,
    pruned_at   REAL    NOT NULL,
    problem_seq INTEGER,            -- the first pruned entry that did not verify, if any
    problem     TEXT,               -- and why: pruning never launders tampering
    key_id      TEXT    NOT NULL,
    signature   TEXT    NOT NULL
) STRICT;

-- Deleting audit entries is allowed only for entries a checkpoint covers (pruning writes the
-- checkpoint first, in the same transaction). Same name as the v2 guard it replaces.
DROP TRIGGER IF EXISTS audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.seq > coalesce((SELECT max(last_seq) FROM audit_checkpoints), 0)
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: only pruning under a checkpoint deletes');
END;
"""

_V4_PROCESS_CHANGES = """
-- Changes after start (models.py CHANGE_KINDS) are events too, with what changed. SQLite cannot
-- alter a CHECK constraint, so the table is rebuilt with the wider list of kinds; rows keep
-- their ids (rules and the evaluator page through events by id).
CREATE TABLE process_events_v4 (
    id          INTEGER PRIMARY KEY,
    ts          REAL    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('start', 'fork', 'exec', 'exit', 'rename',
                        'uid', 'gid', 'ptrace', 'cwd', 'exe_deleted', 'exe_replaced')),
    pid         INTEGER NOT NULL,
    start_time  REAL    NOT NULL,
    ppid        INTEGER,
    exe         TEXT,
    cmdline     TEXT,
    argv        TEXT,
    exit_code   INTEGER,
    source      TEXT    NOT NULL CHECK (source IN ('poll', 'netlink')),
    partial     INTEGER NOT NULL DEFAULT 0 CHECK (partial IN (0, 1)),
    old_value   TEXT,                        -- a change: the name, id or path before
    new_value   TEXT,                        -- a change: after (ptrace: the tracer's pid)
    exe_setid   INTEGER CHECK (exe_setid IN (0, 1))  -- uid/gid: the exe is setuid/setgid
) STRICT;
INSERT INTO process_events_v4 (id, ts, kind, pid, start_time, ppid, exe, cmdline, argv,
    exit_code, source, partial)
SELECT id, ts, kind, pid, start_time, ppid, exe, cmdline, argv, exit_code, source, partial
FROM process_events;
DROP TABLE process_events;
ALTER TABLE process_events_v4 RENAME TO process_events;
CREATE INDEX process_events_ts ON process_events (ts);
CREATE INDEX process_events_instance ON process_events (pid, start_time);
"""

_V5_PROCESS_CONTEXT = """
-- What a process runs in (issue 14), read with its details at start and exec. Columns on
-- processes, not a table of their own: one row per instance either way, rules read them without
-- a join, and the record that carries them travels as one (docs/process-fields.md).
ALTER TABLE processes ADD COLUMN cgroup TEXT;
ALTER TABLE processes ADD COLUMN container_runtime TEXT;
ALTER TABLE processes ADD COLUMN container_id TEXT;
ALTER TABLE processes ADD COLUMN unit TEXT;
ALTER TABLE processes ADD COLUMN pid_ns INTEGER;
ALTER TABLE processes ADD COLUMN mnt_ns INTEGER;
ALTER TABLE processes ADD COLUMN net_ns INTEGER;
ALTER TABLE processes ADD COLUMN user_ns INTEGER;
ALTER TABLE processes ADD COLUMN ns_foreign TEXT;       -- 'pid mnt net user' differing from PID 1's
ALTER TABLE processes ADD COLUMN session_id INTEGER;
ALTER TABLE processes ADD COLUMN tty TEXT;              -- 'pts/3', 'tty1', NULL: none
ALTER TABLE processes ADD COLUMN loginuid INTEGER;      -- NULL: unset
ALTER TABLE processes ADD COLUMN ssh_client TEXT;       -- 'ADDRESS PORT' from SSH_CONNECTION
ALTER TABLE processes ADD COLUMN ssh_source TEXT;       -- 'process' or 'session leader'
ALTER TABLE processes ADD COLUMN stdin TEXT;            -- '<kind>:<what>'
ALTER TABLE processes ADD COLUMN stdout TEXT;
ALTER TABLE processes ADD COLUMN stderr TEXT;
ALTER TABLE processes ADD COLUMN environment TEXT;      -- JSON object, allow-listed names only
CREATE INDEX processes_container_id ON processes (container_id);
"""

_V6_CONNECTIONS = """
-- The sockets each process instance holds (collector/connections.py, docs/connections.md):
-- one row per (instance, socket inode); ended_at is set when the instance no longer holds it.
-- No foreign key to processes: a socket can be seen before its process row is written.
CREATE TABLE connections (
    id             INTEGER PRIMARY KEY,
    pid            INTEGER NOT NULL,
    start_time     REAL    NOT NULL,
    protocol       TEXT    NOT NULL CHECK (protocol IN ('tcp', 'tcp6', 'udp', 'udp6', 'unix')),
    local_address  TEXT,                -- unix: the socket's path, hostile text
    local_port     INTEGER,
    remote_address TEXT,
    remote_port    INTEGER,
    state          TEXT    NOT NULL,
    inode          INTEGER NOT NULL,
    netns          INTEGER,
    direction      TEXT CHECK (direction IN ('listen', 'inbound', 'outbound')),
    remote_scope   TEXT,
    first_seen     REAL    NOT NULL,
    last_seen      REAL    NOT NULL,
    ended_at       REAL,                -- NULL while held
    UNIQUE (pid, start_time, inode)
) STRICT;

CREATE INDEX connections_ended_at ON connections (ended_at);
CREATE INDEX connections_remote ON connections (remote_address);
CREATE INDEX connections_local_port ON connections (local_port);

CREATE VIEW live_connections AS SELECT * FROM connections WHERE ended_at IS NULL;

-- A process row that retention deletes takes its connections with it.
CREATE TRIGGER processes_delete_connections AFTER DELETE ON processes
BEGIN
    DELETE FROM connections WHERE pid = OLD.pid AND start_time = OLD.start_time;
END;
"""

# The timeline pages alerts by first_seen, newest first; without this index each page sorted
# every alert in its window (148,000 alerts: ~1 s a page on a loaded host).
_V8_ALERTS_FIRST_SEEN = """
CREATE INDEX alerts_first_seen ON alerts (first_seen, id);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "processes, live_processes, process_events, meta", _V1_PROCESSES),
    Migration(2, "alerts, rule_stats, audit_log, sink_outbox, sink_stats", _V2_ALERTS),
    Migration(
        3, "audit log retention: audit_checkpoints, prune-only delete guard", _V3_AUDIT_CHECKPOINTS
    ),
    Migration(4, "process_events: changes after start, old/new values", _V4_PROCESS_CHANGES),
    Migration(5, "process context columns on processes", _V5_PROCESS_CONTEXT),
    Migration(6, "connections, live_connections", _V6_CONNECTIONS),
    Migration(7, "strings stored once: process_rows, event_rows, strings", V7_STRINGS),
    Migration(8, "alerts_first_seen: the timeline's alerts by time", _V8_ALERTS_FIRST_SEEN),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What the header and catalogue of an opened file say about it."""

    user_version: int
    application_id: int
    has_objects: bool

    @property
    def is_empty(self) -> bool:
        """A file with no schema yet: ours to initialise."""
        return self.user_version == 0 and self.application_id == 0 and not self.has_objects


def read_schema_state(conn: apsw.Connection) -> SchemaState:
    """Read the version, application id and whether any schema object exists. Only reads."""
    user_version = int(conn.pragma("user_version"))
    application_id = int(conn.pragma("application_id"))
    has_objects = conn.execute("SELECT EXISTS (SELECT 1 FROM sqlite_schema)").get == 1
    return SchemaState(user_version, application_id, has_objects)


def check_compatible(state: SchemaState, path: Path) -> None:
    """Refuse, before anything is written, a file this code must not migrate."""
    if state.user_version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {state.user_version} is newer than this DaemonEye supports "
            f"({SCHEMA_VERSION}); upgrade DaemonEye or point --db at another file. "
            "The file was left untouched."
        )
    if state.application_id not in (0, APPLICATION_ID):
        raise StoreError(
            f"{path} is an SQLite database of another application "
            f"(application_id {state.application_id:#x}), not a DaemonEye store; "
            "it was left untouched. Point --db at another file."
        )
    if state.application_id == 0 and state.user_version == 0 and state.has_objects:
        raise StoreError(
            f"{path} is an SQLite database that is not a DaemonEye store (it has tables but no "
            "DaemonEye schema); it was left untouched. Point --db at another file."
        )


def migrate(conn: apsw.Connection, path: Path) -> int:
    """Apply every migration newer than the file's version; return the final version.

    Each step re-reads `user_version` inside its write transaction, so two processes opening
    the same new file cannot both apply a step.
    """
    for migration in MIGRATIONS:
        if int(conn.pragma("user_version")) >= migration.version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.pragma("user_version"))
            if current < migration.version:
                if current != migration.version - 1:
                    raise StoreError(
                        f"{path}: cannot migrate from schema version {current} "
                        f"to {migration.version}"
                    )
                conn.execute(migration.sql)
                conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        except BaseException as exc:
            if conn.in_transaction:  # some errors (e.g. disk full) already rolled back
                conn.execute("ROLLBACK")
            if isinstance(exc, apsw.Error):
                raise StoreError(
                    f"{path}: migration to schema version {migration.version} "
                    f"({migration.description}) failed: {exc}"
                ) from exc
            raise
        conn.execute("COMMIT")
    return int(conn.pragma("user_version"))
