"""What the process detail pane says about one instance, as label/value/tone facts."""

from __future__ import annotations

import json
from collections.abc import Sequence

from daemoneye.models import (
    PROCESS_FIELDS,
    Alert,
    Connection,
    ProcessEvent,
    ProcessRecord,
    RecordField,
)
from daemoneye.tui.logic.format import (
    DASH,
    format_bytes,
    format_time,
    repeats,
    safe,
    safe_cell,
)
from daemoneye.tui.logic.glyphs import ARROW, CHEVRON
from daemoneye.tui.logic.severity import label, tone

Fact = tuple[str, str, str]  # label, value, tone
# The fields the pane's own lines below show, and those it leaves out on purpose (its status
# says whether the process ended; the rest is history, for `processes show`). Any other field
# of the record (models.py) gets a line of its own (`field_facts`): a new field is visible,
# and escaped when the description marks it hostile, before anyone lays it out.
PLACED = frozenset(
    {
        "pid",
        "ppid",
        "name",
        "exe",
        "exe_deleted",
        "exe_sha256",
        "cwd",
        "user",
        "uid",
        "gid",
        "start_time",
        "state",
        "threads",
        "cpu_percent",
        "rss",
        "cmdline",
        *(
            "cgroup",
            "container_runtime",
            "container_id",
            "unit",
            "pid_ns",
            "mnt_ns",
            "net_ns",
            "user_ns",
            "ns_foreign",
            "session_id",
            "tty",
            "loginuid",
            "ssh_client",
            "ssh_source",
            "stdin",
            "stdout",
            "stderr",
            "environment",
        ),  # context_facts
    }
)
LEFT_OUT = frozenset({"first_seen", "last_seen", "ended_at", "exit_code"})
UNPLACED = tuple(f for f in PROCESS_FIELDS if f.name not in PLACED | LEFT_OUT)
MAX_CHILDREN = 12
MAX_ALERTS = 8
MAX_CONNECTIONS = 12
COMMAND_CHARS = 4096  # a longer command line is cut, with the count of what was left out


def brief(record: ProcessRecord) -> str:
    """ "sshd (812)" — a short, printable name for one instance."""
    return f"{safe_cell(record.name, 24)} ({record.pid})"


def cmdline_text(record: ProcessRecord) -> str:
    """The full command line, each argument printable; capped for the pane."""
    if not record.cmdline:
        return f"[{safe(record.name, 64)}] (no command line: kernel thread or unreadable)"
    joined_limit = COMMAND_CHARS
    parts: list[str] = []
    used = 0
    for argument in record.cmdline:
        if used >= joined_limit:
            rest = sum(len(a) + 1 for a in record.cmdline[len(parts) :])
            parts.append(f"… (+{rest} chars)")
            break
        parts.append(safe(argument, joined_limit - used))
        used += len(argument) + 1
    return " ".join(parts)


def exe_facts(record: ProcessRecord) -> list[Fact]:
    facts: list[Fact] = []
    if record.exe is None:
        facts.append(("exe", "unreadable", "dim"))
    elif record.exe_deleted:
        facts.append(("exe", f"{safe(record.exe, 4096)}  [DELETED from disk]", "critical"))
    else:
        facts.append(("exe", safe(record.exe, 4096), ""))
    facts.append(
        ("sha256", record.exe_sha256 or "not hashed (yet)", "" if record.exe_sha256 else "dim")
    )
    return facts


def process_facts(
    record: ProcessRecord,
    status: str,
    parents: Sequence[ProcessRecord],
    kids: Sequence[ProcessRecord],
    now: float,
    connections: Sequence[Connection] = (),
) -> list[Fact]:
    """Everything the pane shows as text, in order; the sockets it holds (when known) just
    before its command line."""
    state = {"ended": "  (ended)", "new": "  (new)"}.get(status, "")
    user = safe(record.user, 64) if record.user is not None else "?"
    ids = (
        f"{user}  uid {record.uid if record.uid is not None else '?'}  "
        f"gid {record.gid if record.gid is not None else '?'}"
    )
    facts: list[Fact] = [
        (
            "process",
            f"{safe(record.name, 64)}  pid {record.pid}  ppid {record.ppid}{state}",
            status,
        ),
        *exe_facts(record),
        (
            "cwd",
            safe(record.cwd, 4096) if record.cwd is not None else "unreadable",
            "" if record.cwd is not None else "dim",
        ),
        ("user", ids, ""),
        (
            "started",
            f"{format_time(record.start_time, now)}  state {safe(record.state, 8)}  "
            f"threads {record.threads}",
            "",
        ),
        ("usage", f"cpu {record.cpu_percent:.1f} %  rss {format_bytes(record.rss)}", ""),
        *context_facts(record),
        *field_facts(record, UNPLACED, now),
        ("ancestry", f" {CHEVRON} ".join(brief(p) for p in reversed(parents)) or DASH, ""),
    ]
    names = [brief(k) for k in kids[:MAX_CHILDREN]]
    if len(kids) > MAX_CHILDREN:
        names.append(f"+{len(kids) - MAX_CHILDREN} more")
    facts.append(("children", ", ".join(names) or DASH, ""))
    facts.extend(connection_facts(connections))
    # Last: a command line can be kilobytes long and must not push the facts above out of view.
    facts.append(("command", cmdline_text(record), ""))
    return facts


def container_text(record: ProcessRecord) -> str:
    """ "docker 3f2a9c1b7d20" (the id cut to 12 like `docker ps`), "lxc web1", "unknown", or
    "" when the process is not in a container."""
    if record.container_runtime is None:
        return ""
    if record.container_id is None:
        return record.container_runtime
    container_id = record.container_id
    if len(container_id) == 64 and all(c in "0123456789abcdef" for c in container_id):
        container_id = container_id[:12]
    return f"{record.container_runtime} {safe(container_id, 64)}"


def _namespaces_text(record: ProcessRecord) -> str:
    values = [
        f"{name} {value}"
        for name, value in (
            ("pid", record.pid_ns),
            ("mnt", record.mnt_ns),
            ("net", record.net_ns),
            ("user", record.user_ns),
        )
        if value is not None
    ]
    if not values:
        return "unreadable"
    if record.ns_foreign is None:
        differs = "PID 1's unknown"
    elif record.ns_foreign:
        differs = f"not PID 1's: {record.ns_foreign}"
    else:
        differs = "all PID 1's"
    return f"{'  '.join(values)}  ({differs})"


def _session_text(record: ProcessRecord) -> str:
    parts = []
    if record.session_id is not None:
        parts.append(f"sid {record.session_id}")
    parts.append(f"tty {record.tty}" if record.tty else "no tty")
    if record.loginuid is not None:
        parts.append(f"loginuid {record.loginuid}")
    if record.ssh_client is not None:
        source = f" (from the {record.ssh_source})" if record.ssh_source else ""
        parts.append(f"ssh from {record.ssh_client}{source}")
    return "  ".join(parts)


def environment_pairs(environment: str | None) -> list[tuple[str, str]] | None:
    """The allow-listed variables stored for a process, in stored order; None when the
    environment could not be read (or the stored text is not the object the collector wrote)."""
    if environment is None:
        return None
    try:
        parsed = json.loads(environment)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    return [(str(name), str(value)) for name, value in parsed.items()]


def _environment_text(record: ProcessRecord) -> tuple[str, str]:
    pairs = environment_pairs(record.environment)
    if pairs is None:
        return "unreadable", "dim"
    if not pairs:
        return "none of the allowed variables is set", "dim"
    return "  ".join(f"{safe(name, 64)}={safe(value, 1024)}" for name, value in pairs), ""


def stdio_tone(target: str | None) -> str:
    """A network socket on a standard stream is how a reverse shell looks: shown in red."""
    if target is not None and target.startswith(("socket:tcp", "socket:udp")):
        return "high"
    return "" if target is not None else "dim"


def context_facts(record: ProcessRecord) -> list[Fact]:
    """What the process runs in: container or unit, namespaces, session, stdio, environment.
    A kernel thread (no cgroup, no namespaces read) gets none of these lines. Labels stay
    within the pane's 8-character label column."""
    if record.cgroup is None and record.pid_ns is None and record.environment is None:
        return []
    container = container_text(record)
    facts: list[Fact] = []
    if container:
        facts.append(("runs in", f"container {container}", "medium"))
    facts.append(("unit", safe(record.unit, 256) if record.unit else DASH, ""))
    facts.append(("cgroup", safe(record.cgroup, 1024) if record.cgroup else "unreadable", ""))
    facts.append(("ns", _namespaces_text(record), ""))
    facts.append(("session", _session_text(record), ""))
    for name, target in (
        ("stdin", record.stdin),
        ("stdout", record.stdout),
        ("stderr", record.stderr),
    ):
        facts.append(
            (name, safe(target, 1024) if target is not None else "unreadable", stdio_tone(target))
        )
    facts.append(("env", *_environment_text(record)))
    return facts


def field_facts(record: ProcessRecord, described: Sequence[RecordField], now: float) -> list[Fact]:
    """One plain line per field: its name as the label, its value formatted by its unit, and
    escaped and capped when it is text a process controls."""
    facts: list[Fact] = []
    for record_field in described:
        value = getattr(record, record_field.name)
        label_text = record_field.name.replace("_", " ")
        if value is None:
            facts.append((label_text, "unknown", "dim"))
        elif isinstance(value, tuple):
            facts.append((label_text, safe(" ".join(map(str, value)), 4096), ""))
        elif isinstance(value, str):
            facts.append((label_text, safe(value, 4096 if record_field.hostile else 256), ""))
        elif record_field.unit == "time":
            facts.append((label_text, format_time(value, now), ""))
        elif record_field.unit == "bytes":
            facts.append((label_text, format_bytes(value), ""))
        else:
            facts.append((label_text, str(value), ""))
    return facts


def endpoint_text(address: str | None, port: int | None) -> str:
    """'10.0.0.1:443', '[2001:db8::1]:22', '*:53', or '*'."""
    if address is None:
        return "*" if port is None else f"*:{port}"
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def connection_facts(connections: Sequence[Connection]) -> list[Fact]:
    """One line per socket the process holds: listening first, then by protocol and port; a
    unix socket's path is the process's text (escaped, capped). Empty when it holds none."""
    ordered = sorted(
        connections,
        key=lambda c: (
            c.direction != "listen",
            c.protocol == "unix",
            c.protocol,
            c.local_port or 0,
        ),
    )
    facts: list[Fact] = []
    for conn in ordered[:MAX_CONNECTIONS]:
        if conn.protocol == "unix":
            where = safe(conn.local_address, 256) if conn.local_address else "(unnamed)"
        else:
            where = endpoint_text(conn.local_address, conn.local_port)
            if conn.remote_address is not None:
                where += f" {ARROW} {endpoint_text(conn.remote_address, conn.remote_port)}"
        extra = f"  {conn.direction}" if conn.direction and conn.direction != "listen" else ""
        tone = "high" if conn.direction == "outbound" and conn.remote_scope == "public" else ""
        facts.append((conn.protocol, f"{where}  {conn.state}{extra}", tone))
    if len(ordered) > MAX_CONNECTIONS:
        facts.append(("", f"+{len(ordered) - MAX_CONNECTIONS} more sockets", "dim"))
    return facts


def alert_facts(alerts: Sequence[Alert], now: float) -> list[Fact]:
    """One line per alert of this process, newest first."""
    lines: list[Fact] = [
        (
            label(a.severity),
            f"{safe(a.title, 300)}  [{a.state}, {repeats(a, now)}]",
            tone(a.severity),
        )
        for a in alerts[:MAX_ALERTS]
    ]
    if len(alerts) > MAX_ALERTS:
        lines.append(("", f"+{len(alerts) - MAX_ALERTS} more", "dim"))
    return lines


# How the pane names a change after start (models.CHANGE_KINDS), and its tone: the changes
# that built-in rules watch stand out.
_CHANGE_LABELS = {
    "rename": ("renamed", "medium"),
    "uid": ("uid", "high"),
    "gid": ("gid", "medium"),
    "ptrace": ("traced", "high"),
    "cwd": ("cwd", ""),
    "exe_deleted": ("exe gone", "critical"),
    "exe_replaced": ("exe new", "medium"),
}
MAX_CHANGES = 8


def change_facts(changes: Sequence[ProcessEvent], now: float) -> list[Fact]:
    """One line per change after start, newest first: what changed, from what to what (text a
    process chose, escaped and capped), and when."""
    facts: list[Fact] = []
    for event in reversed(changes[-MAX_CHANGES:]):
        label_text, change_tone = _CHANGE_LABELS.get(event.kind, (event.kind, ""))
        old = safe(event.old_value, 256) if event.old_value is not None else "?"
        new = safe(event.new_value, 256) if event.new_value is not None else "?"
        if event.kind == "ptrace":
            what = f"by pid {new}"
        elif event.kind in ("exe_deleted", "exe_replaced"):
            what = old
        else:
            what = f"{old} {CHEVRON} {new}"
            if event.exe_setid:
                what += "  (setuid program)"
        facts.append((label_text, f"{what}  {format_time(event.ts, now)}", change_tone))
    if len(changes) > MAX_CHANGES:
        facts.append(("", f"+{len(changes) - MAX_CHANGES} earlier changes", "dim"))
    return facts
