"""Issue 19's figures: the daemon under each local attack, side by side with a quiet baseline.

One real daemon (user mode, every path in a temp dir, run as root) with one extra rule that
alerts on a harmless marker process. Its socket is opened to gid 65534 (mode 0660, as system
mode opens it to the `daemoneye` group), so that the attackers — `benchmarks.attacks`, run as
uid/gid 65534 — are ordinary readers. Phases: `quiet`, then for every attack the attack
itself and a recovery (which waits, within a bound, for `hello` to come back into the quiet
spread). All along, the probe (`benchmarks.attack_probe`) measures four figures:

- `hello` p99 of a separate client (plus a new root connection every second: refused or not);
- exec → alert of a marker started every 2 s (p99 over the phase's markers; one that never
  alerts counts as infinitely late);
- daemon RSS (daemon and descendants; p99 of the phase's samples);
- store growth (db + WAL bytes: highest in the phase - at its start, per second).

A figure stays "within the quiet spread" when it is ≤ quiet p99 x 1.5 + a floor (FLOORS):
the floor keeps a near-zero baseline (store growth, a 1 ms `hello`) from making any noise a
failure. The verdict column says `met` (within) or `MISSED`.

``python -m benchmarks --only attacks`` or ``python -m benchmarks.attack_bench [--quick]``;
root only (the attackers need a uid of their own; the daemon must see every process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import cleanup
from benchmarks.attack_probe import (
    PROBE_PERIOD_S,
    PhaseSamples,
    Probe,
)
from benchmarks.attack_verdicts import (
    FIGURES,
    GROWTH,
    HELLO,
    QUIET_SANE_HELLO_MS,
    SECTION,
    SPREAD_FACTOR,
    SPREAD_NOTE,
    attack_rows,
    percentile,
    quiet_disturbed,
    spread_limit,
    with_note,
)
from benchmarks.attacks import ATTACKS, NOBODY, Attack, Attacker
from benchmarks.availability import missing
from benchmarks.daemon_runner import REPO_ROOT, DaemonFailed, DaemonProcess
from benchmarks.model import FAILED, NO_TARGET, NOT_BUILT, SKIPPED, Row, status_row
from benchmarks.spawn import MARK_VAR, ProcessGroup, new_token

MARKER_RULE_ID = "attackbench-marker"
QUIET_ATTEMPTS = 3
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class AttackPlan:
    """Phase lengths; --quick shortens them so the whole run stays near two minutes."""

    phase_s: float
    recovery_s: float
    settle_max_s: float

    @property
    def budget_s(self) -> float:
        """The longest one attack's phases may take (past it the run is cut off): the rule
        load and the first alert (60 s each at most), the store settling, quiet, the attack
        and stopping its driver, the recovery and its settling."""
        return (
            60.0
            + 60.0
            + self.settle_max_s
            + 2 * self.phase_s
            + 15.0
            + self.recovery_s
            + self.settle_max_s
            + 10.0
        )


def plan_for(quick: bool) -> AttackPlan:
    return (
        AttackPlan(phase_s=8.0, recovery_s=4.0, settle_max_s=30.0)
        if quick
        else AttackPlan(phase_s=20.0, recovery_s=8.0, settle_max_s=60.0)
    )


# -- the run -----------------------------------------------------------------------------------


def _marker_rule(token: str) -> str:
    return f"""[[rule]]
id = "{MARKER_RULE_ID}"
name = "attack benchmark marker"
description = "A harmless sleep whose argv[0] carries the benchmark run's token."
severity = "high"
query = '''
SELECT p.pid, p.start_time, p.name, p.cmdline FROM processes p
WHERE p.cmdline GLOB '{token}-*'
'''
"""


def _open_socket_to_nobody(daemon: DaemonProcess, socket: Path) -> None:
    """What system mode does for the `daemoneye` group, here for gid 65534: the attackers
    may connect, as readers."""
    for directory in (daemon.root, socket.parent):
        directory.chmod(0o711)
    os.chown(socket, -1, NOBODY)
    socket.chmod(0o660)


async def _wait_rule_active(socket: Path, timeout_s: float) -> None:
    from daemoneye.ipc.client import DaemonClient

    deadline = time.monotonic() + timeout_s
    async with DaemonClient(socket, client_name="attackbench-setup") as client:
        while time.monotonic() < deadline:
            if any(status.rule.id == MARKER_RULE_ID for status in await client.rules_list()):
                return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the marker rule was not loaded within {timeout_s:.0f} s")


async def _settle(probe: Probe, quiet: PhaseSamples, limit_s: float) -> float | None:
    """Wait until the last second's `hello` calls are back within the quiet spread; the
    seconds it took, or None when they were not within `limit_s`."""
    quiet_p99 = percentile(quiet.hello_ms, 0.99) if quiet.hello_ms else QUIET_SANE_HELLO_MS
    limit = spread_limit(quiet_p99, HELLO.floor)
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        await asyncio.sleep(1.0)
        recent = probe.current.hello_ms[-10:]
        if len(recent) >= 5 and max(recent) <= limit:
            return time.monotonic() - started
    return None


async def _store_settled(probe: Probe, limit_s: float) -> float | None:
    """Wait until the store grows less than the growth floor (its first scans and the WAL's
    first fill are behind it), so that the quiet phase is the steady state; the seconds it
    took, or None when it still grew after `limit_s`."""
    started = time.monotonic()
    window = 3.0
    await asyncio.sleep(window)
    while time.monotonic() - started < limit_s:
        recent = probe.current.store_bytes[-int(window / PROBE_PERIOD_S) :]
        if recent and (recent[-1] - recent[0]) / 1024 / window < GROWTH.floor:
            return time.monotonic() - started
        await asyncio.sleep(1.0)
    return None


async def _phases(
    daemon: DaemonProcess,
    socket: Path,
    plan: AttackPlan,
    attack: Attack,
    raw: dict[str, Any],
    phases: list[PhaseSamples],
) -> None:
    """Warm-up, quiet, the attack, its recovery; `phases` receives what was measured, even
    when a phase fails."""
    from daemoneye.ipc.protocol import PROTOCOL_VERSION

    token = new_token("attack-marker")
    rules = daemon.root / "config" / "daemoneye" / "rules.d"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "attackbench.toml").write_text(_marker_rule(token))
    await _wait_rule_active(socket, 60.0)
    attacker_env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", MARK_VAR: new_token("attacker")}
    group = ProcessGroup(token)
    probe = Probe(
        socket=socket,
        daemon_pid=daemon.pid,
        db=daemon.db,
        group=group,
        marker_token=token,
        marker_rule_id=MARKER_RULE_ID,
    )
    try:
        await probe.start()
        raw["first_alert_s"] = await probe.wait_marker_alerted(60.0)
        raw["store_settled_s"] = await _store_settled(probe, plan.settle_max_s)
        for attempt in range(1, QUIET_ATTEMPTS + 1):
            quiet = probe.begin("quiet")
            await asyncio.sleep(plan.phase_s + 1.0)  # + the last marker's alert
            disturbed = quiet_disturbed(quiet)
            raw.setdefault("quiet_disturbed", []).append(disturbed)
            if not disturbed or attempt == QUIET_ATTEMPTS:
                break
            probe.begin("warm-up")  # a disturbed quiet phase is measured again
        daemon.check_alive()
        probe.begin(attack.name)
        attacker = Attacker(
            attack.name,
            socket,
            seconds=plan.phase_s + 5.0,
            protocol_version=PROTOCOL_VERSION,
            env=attacker_env,
            cwd=REPO_ROOT,
        )
        handle = cleanup.register(f"attacker {attack.name}", attacker.kill)
        try:
            await asyncio.sleep(plan.phase_s)
        finally:
            probe.begin(f"{attack.name} recovery")
            raw["attacker"] = await asyncio.to_thread(attacker.stop)
            cleanup.unregister(handle)
        await asyncio.sleep(plan.recovery_s)
        raw["settle_s"] = await _settle(probe, quiet, plan.settle_max_s)
        probe.begin("end")
        await asyncio.sleep(3.0)  # late alerts of the recovery's last markers
    finally:
        await probe.stop()
        group.kill_all()
        raw["probe_notes"] = dict(probe.notes)
        phases += [phase for phase in probe.phases if phase.name not in ("warm-up", "end")]


def run(*, quick: bool, only: Sequence[str] = ()) -> tuple[list[Row], dict[str, Any]]:
    """The `attacks` section: rows and raw samples, one fresh daemon per attack."""
    reason = missing("daemoneye.ipc.client", "DaemonClient") or missing(
        "daemoneye.daemon.lifecycle", "Daemon"
    )
    if reason is not None:
        return [status_row(SECTION, "daemon under attack", NOT_BUILT, reason)], {}
    if os.geteuid() != 0:
        return [
            status_row(
                SECTION,
                "daemon under attack",
                SKIPPED,
                "needs root: the attackers run as uid 65534 and the daemon must see "
                "every process (sudo .venv/bin/python -m benchmarks.attack_bench)",
            )
        ], {}
    if shutil.which("sh") is None:
        return [status_row(SECTION, "daemon under attack", SKIPPED, "no /bin/sh")], {}
    plan = plan_for(quick)
    raw: dict[str, Any] = {
        "plan": {
            "phase_s": plan.phase_s,
            "recovery_s": plan.recovery_s,
            "settle_max_s": plan.settle_max_s,
        },
        "spread": {
            f.key: {"factor": SPREAD_FACTOR, "floor": f.floor, "unit": f.unit} for f in FIGURES
        },
        "attacks": {},
    }
    rows: list[Row] = []
    for attack in ATTACKS:
        if only and attack.name not in only:
            continue
        attack_raw: dict[str, Any] = {"title": attack.title}
        raw["attacks"][attack.name] = attack_raw
        rows += _one_attack(attack, plan, attack_raw)
    if rows:
        rows[0] = with_note(rows[0], f"{SPREAD_NOTE}; {rows[0].note}")
    raw["loadavg"] = list(os.getloadavg())
    rows.append(
        status_row(
            SECTION,
            "load average at end",
            NO_TARGET,
            f"{raw['loadavg'][0]:.1f} on {os.cpu_count()} cores (a shared "
            "machine: judge each attack against its own quiet phase)",
        )
    )
    return rows, raw


def _one_attack(attack: Attack, plan: AttackPlan, raw: dict[str, Any]) -> list[Row]:
    phases: list[PhaseSamples] = []
    failure = ""
    with DaemonProcess(interval=1.0) as daemon:
        socket = daemon.root / "runtime" / "daemoneye.sock"
        try:
            raw["ready_s"] = daemon.wait_ready(READY_TIMEOUT_S)
        except DaemonFailed as failed:
            return [status_row(SECTION, f"{attack.name}: daemon", FAILED, str(failed))]
        _open_socket_to_nobody(daemon, socket)
        try:
            asyncio.run(
                asyncio.wait_for(_phases(daemon, socket, plan, attack, raw, phases), plan.budget_s)
            )
        except (DaemonFailed, RuntimeError, TimeoutError, OSError) as error:
            failure = f"{type(error).__name__}: {error}"
        died = daemon.process is not None and daemon.process.poll() is not None
        raw["daemon_log_tail"] = daemon.log()[-4000:]
    raw["phases"] = [phase.raw() for phase in phases]
    by_name = {phase.name: phase for phase in phases}
    quiet, attacked = by_name.get("quiet"), by_name.get(attack.name)
    rows: list[Row] = []
    if quiet is not None and attacked is not None:
        rows += attack_rows(quiet, attacked, by_name.get(f"{attack.name} recovery"))
    counters = raw.get("attacker", {})
    rows.append(
        status_row(
            SECTION,
            f"{attack.name}: what the attacker did (uid 65534)",
            NO_TARGET,
            f"{attack.title}: "
            + ", ".join(f"{key} {value}" for key, value in sorted(counters.items()) if key != "uid")
            + f"; hello back within the quiet spread after "
            f"{_seconds(raw.get('settle_s'), plan.settle_max_s)}",
        )
    )
    disturbed = raw.get("quiet_disturbed", [])
    if disturbed and disturbed[-1]:
        rows.append(
            status_row(
                SECTION,
                f"{attack.name}: quiet baseline",
                NO_TARGET,
                f"disturbed by the host in all {len(disturbed)} attempts "
                f"({disturbed[-1]}): this attack's verdicts are unreliable",
            )
        )
    if failure:
        rows.append(status_row(SECTION, f"{attack.name}: run", FAILED, failure))
    if died:
        rows.append(
            status_row(
                SECTION,
                f"{attack.name}: daemon survived",
                FAILED,
                "the daemon exited during the attack: see daemon_log_tail",
            )
        )
    return rows


def _seconds(took: float | None, limit_s: float) -> str:
    return f"not within {limit_s:g} s" if took is None else f"{took:.0f} s"


def main(argv: list[str] | None = None) -> int:
    from benchmarks import report
    from benchmarks.machine import info
    from benchmarks.spawn import assert_none_marked, run_prefix

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.attack_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="8 s phases instead of 20 s")
    parser.add_argument(
        "--attacks",
        metavar="NAME,…",
        help="only these attacks: " + ", ".join(attack.name for attack in ATTACKS),
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        default=REPO_ROOT / "benchmarks" / "results" / "attacks.json",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    only = args.attacks.split(",") if args.attacks else []
    unknown = set(only) - {attack.name for attack in ATTACKS}
    if unknown:
        parser.error(f"unknown attack(s): {', '.join(sorted(unknown))}")
    cleanup.install()
    started = time.monotonic()
    try:
        rows, raw = run(quick=args.quick, only=only)
    except (KeyboardInterrupt, cleanup.Interrupted):
        print("attack_bench: interrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        cleanup.run_all()
    assert_none_marked(run_prefix(), "attack benchmark processes")
    print(report.table(rows))
    print()
    print(report.summary_line(rows))
    report.write_json(
        args.json,
        rows=rows,
        raw={SECTION: raw},
        machine=info(),
        command=[
            sys.executable,
            "-m",
            "benchmarks.attack_bench",
            *(sys.argv[1:] if argv is None else argv),
        ],
        options={"quick": args.quick, "attacks": only},
        duration_s=time.monotonic() - started,
    )
    print(f"\nJSON: {args.json}")
    return 1 if any(row.verdict == FAILED for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
