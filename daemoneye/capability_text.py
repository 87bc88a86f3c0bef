"""A process's privileges and the collector's event coverage in words, for `daemoneye health`
and the dashboard's Health screen: capability sets as short names (`net_admin, kill`), a
nearly full set as what it lacks; the exec capture's and the kernel events' losses."""

from __future__ import annotations

from daemoneye.models import CAPABILITY_NAMES, HealthReport, ProcessPrivileges

NOT_RUNNING = "not running"
_LISTED_AT_MOST = 12  # a set with more than this many is described by what it lacks


def short_name(capability: str) -> str:
    """`CAP_NET_ADMIN` → `net_admin`."""
    return capability.removeprefix("CAP_").lower()


def capability_summary(names: tuple[str, ...]) -> str:
    """`none`, the short names, or for a large set `all` / `all but sys_resource`."""
    if not names:
        return "none"
    if len(names) <= _LISTED_AT_MOST:
        return ", ".join(short_name(name) for name in names)
    held = set(names)
    missing = [short_name(name) for name in CAPABILITY_NAMES if name not in held]
    extra = [short_name(name) for name in names if name not in CAPABILITY_NAMES]
    text = "all" if not missing else f"all but {', '.join(missing)}"
    return text + (f" (and {', '.join(extra)})" if extra else "")


def identity(privileges: ProcessPrivileges) -> str:
    """`pid 812, uid 996 (daemoneye)`."""
    user = "" if privileges.user == str(privileges.uid) else f" ({privileges.user})"
    return f"pid {privileges.pid}, uid {privileges.uid}{user}"


def capabilities_text(privileges: ProcessPrivileges) -> str:
    """The effective set, and the permitted and bounding sets where they hold more."""
    text = summary = capability_summary(privileges.effective)
    for label, names in (("permitted", privileges.permitted), ("bounding", privileges.bounding)):
        other = capability_summary(names)
        if other != summary:
            text += f"; {label}: {other}"
    if privileges.ambient:
        text += f"; ambient: {capability_summary(privileges.ambient)}"
    return text + ("; no_new_privs" if privileges.no_new_privs else "")


def privileges_line(privileges: ProcessPrivileges | None) -> str:
    """One line for `daemoneye health`: identity, then capabilities."""
    if privileges is None:
        return NOT_RUNNING
    return f"{identity(privileges)}; capabilities: {capabilities_text(privileges)}"


def exec_capture_text(report: HealthReport) -> str:
    """The eBPF exec capture's line: on or off (and why), how many execs it completed (their
    process was gone from /proc, in part or whole, when the reader got there), and how many
    exec events found no record (its rings full, or records let go)."""
    if report.exec_capture.startswith("off"):
        return report.exec_capture
    text = f"{report.exec_capture}: {report.exec_rescued_total} execs completed"
    if report.exec_uncaptured_total:
        text += f", {report.exec_uncaptured_total} without a record"
    return text


def kernel_losses_text(report: HealthReport) -> str:
    """Kernel process events that never became records: lost in the kernel (its buffer
    overran; a reconciling scan then finds what still lives) and shed by the reader under a
    storm (forks first). `none` when there were none."""
    lost, shed = report.events_lost_total, report.events_dropped_total
    if not lost and not shed:
        return "none"
    return (
        f"{lost} lost by the kernel (buffer overruns; a scan reconciled), "
        f"{shed} shed under a storm (forks first)"
    )
