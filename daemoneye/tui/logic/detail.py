"""What the process detail pane says about one instance, as label/value/tone facts."""

from __future__ import annotations

from collections.abc import Sequence

from daemoneye.models import PROCESS_FIELDS, Alert, ProcessEvent, ProcessRecord, RecordField
from daemoneye.tui.logic.format import (
    DASH,
    format_bytes,
    format_time,
    repeats,
    safe,
    safe_cell,
)
from daemoneye.tui.logic.glyphs import CHEVRON
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
    }
)
LEFT_OUT = frozenset({"first_seen", "last_seen", "ended_at", "exit_code"})
UNPLACED = tuple(f for f in PROCESS_FIELDS if f.name not in PLACED | LEFT_OUT)
MAX_CHILDREN = 12
MAX_ALERTS = 8
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
) -> list[Fact]:
    """Everything the pane shows as text, in order."""
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
        *field_facts(record, UNPLACED, now),
        ("ancestry", f" {CHEVRON} ".join(brief(p) for p in reversed(parents)) or DASH, ""),
    ]
    names = [brief(k) for k in kids[:MAX_CHILDREN]]
    if len(kids) > MAX_CHILDREN:
        names.append(f"+{len(kids) - MAX_CHILDREN} more")
    facts.append(("children", ", ".join(names) or DASH, ""))
    # Last: a command line can be kilobytes long and must not push the facts above out of view.
    facts.append(("command", cmdline_text(record), ""))
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
