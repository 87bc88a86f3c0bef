"""Capability names and masks, /proc/PID/status parsing, how privileges are written for a
person, and the refusals that need no root: an unknown user, a second thread."""

from __future__ import annotations

import dataclasses
import os
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemoneye.capability_text import (
    capabilities_text,
    capability_summary,
    exec_capture_text,
    kernel_losses_text,
    privileges_line,
)
from daemoneye.models import CAPABILITY_NAMES, ProcessPrivileges
from daemoneye.procmond import privileges
from daemoneye.procmond.privileges import (
    PROCMOND_CAPABILITIES,
    PrivilegeError,
    capability_mask,
    capability_names,
    lookup_account,
    parse_status,
)
from daemoneye.tui.logic.health import health_sections, privilege_facts
from tests.fakes.dashboard_source import FAKE_NOW, sample_health, sample_status
from tests.forked import in_child

# /proc/PID/status of a process that kept procmond's four capabilities as uid 65534.
STATUS = """\
Name:\tprocmond
Umask:\t0077
State:\tS (sleeping)
Tgid:\t812
Pid:\t812
Uid:\t65534\t65534\t65534\t65534
Gid:\t65534\t65534\t65534\t65534
Groups:\t65534
CapInh:\t0000000000000000
CapPrm:\t0000000000081024
CapEff:\t0000000000081024
CapBnd:\t0000000000081024
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t0
"""


def test_status_names_exactly_the_kept_capabilities() -> None:
    found = parse_status(STATUS, 812, "procmond")
    assert (found.pid, found.uid, found.gid, found.user) == (812, 65534, 65534, "nobody")
    assert set(found.effective) == PROCMOND_CAPABILITIES
    assert found.permitted == found.bounding == found.effective
    assert found.ambient == ()
    assert found.no_new_privs


def test_status_of_a_full_root_process_and_of_one_without_names() -> None:
    text = STATUS.replace("0000000000081024", "000001ffffffffff").replace("65534", "4000000")
    found = parse_status(text.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0"), 1, "agent")
    assert found.effective == CAPABILITY_NAMES
    assert found.user == "4000000"  # a uid with no name is shown as its number
    assert not found.no_new_privs
    with pytest.raises(ValueError, match="Uid"):
        parse_status("Name:\tx\n", 1, "agent")


def test_the_live_status_of_this_process_reads() -> None:
    mine = privileges.read_privileges(os.getpid(), "self")
    assert mine.uid == os.geteuid()
    assert mine.pid == os.getpid()


@given(st.sets(st.sampled_from(CAPABILITY_NAMES)))
def test_names_and_masks_round_trip(names: set[str]) -> None:
    mask = capability_mask(names)
    assert set(capability_names(mask)) == names
    assert list(capability_names(mask)) == [n for n in CAPABILITY_NAMES if n in names]


def test_unknown_bits_are_named_by_number() -> None:
    assert capability_names(1 << 45 | 1) == ("CAP_CHOWN", "CAP_45")


def test_a_missing_user_names_the_key_and_how_to_create_it() -> None:
    with pytest.raises(PrivilegeError) as caught:
        lookup_account("no-such-user-daemoneye-test")
    message = str(caught.value)
    assert "[daemon] user" in message
    assert "systemd-sysusers" in message
    assert "no-such-user-daemoneye-test" in message


def test_an_account_carries_its_groups() -> None:
    account = lookup_account("root")
    assert (account.uid, account.gid) == (0, 0)
    assert 0 in account.groups


def _drop_beside_a_thread() -> list[str]:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    refusals = []
    try:
        privileges.drop_agent(None)
    except PrivilegeError as exc:
        refusals.append(str(exc))
    try:
        privileges.drop_procmond(ROOT)
    except PrivilegeError as exc:
        refusals.append(str(exc))
    stop.set()
    thread.join()
    return refusals


ROOT = privileges.Account("root", 0, 0, (0,))


def test_dropping_with_a_second_thread_running_is_refused() -> None:
    """Capabilities belong to threads: the other thread would keep them all."""
    refusals = in_child(_drop_beside_a_thread)
    assert len(refusals) == 2
    assert all("2 threads running" in refusal for refusal in refusals)


def test_summaries_for_a_person() -> None:
    assert capability_summary(()) == "none"
    assert capability_summary(("CAP_KILL", "CAP_NET_ADMIN")) == "kill, net_admin"
    assert capability_summary(CAPABILITY_NAMES) == "all"
    almost = tuple(n for n in CAPABILITY_NAMES if n != "CAP_SYS_RESOURCE")
    assert capability_summary(almost) == "all but sys_resource"


def _privileges(effective: tuple[str, ...], bounding: tuple[str, ...]) -> ProcessPrivileges:
    return ProcessPrivileges("agent", 7, 0, "root", 0, effective, effective, bounding, (), False)


def test_capabilities_text_shows_what_differs_from_the_effective_set() -> None:
    assert capabilities_text(_privileges((), ())) == "none"
    assert capabilities_text(_privileges((), CAPABILITY_NAMES)) == "none; bounding: all"
    assert privileges_line(None) == "not running"
    assert privileges_line(_privileges(("CAP_KILL",), ("CAP_KILL",))) == (
        "pid 7, uid 0 (root); capabilities: kill"
    )


def test_health_screen_facts_name_both_processes_and_a_missing_procmond() -> None:
    report = sample_health()
    facts = privilege_facts(report)
    assert facts[0] == ("agent", "pid 4242, uid 996 (daemoneye)", "")
    assert facts[1] == ("capabilities", "none; no_new_privs", "")
    assert facts[3][1] == "dac_read_search, kill, net_admin, sys_ptrace; no_new_privs"
    alone = privilege_facts(
        dataclasses.replace(
            report,
            procmond_privileges=None,
            agent_privileges=_privileges(CAPABILITY_NAMES, CAPABILITY_NAMES),
        )
    )
    assert alone[-1] == ("procmond", "not running", "low")
    assert alone[1] == ("capabilities", "all", "medium")  # root still holding everything


INJECTIONS = ["Uid:\t0\t0\t0\t0", "CapAmb:\tffff", "\x0b", "\r", "\x85", "\u2028", "\x1c"]


@given(
    st.lists(
        st.sampled_from(INJECTIONS)
        | st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=8),
        max_size=8,
    ).map("".join)
)
def test_a_process_name_cannot_change_what_status_says(name: str) -> None:
    """A process picks its own name (the kernel escapes newlines in status): whatever it holds,
    for example `Uid:\\t0` or `CapEff:\\tffff`, the parsed ids and sets stay the kernel's."""
    hostile = STATUS.replace("Name:\tprocmond", f"Name:\t{name}")
    assert parse_status(hostile, 812, "procmond") == parse_status(STATUS, 812, "procmond")
    # Also on a kernel whose status has no CapAmb line (before 4.3) to be overridden later.
    old_kernel = "\n".join(line for line in STATUS.split("\n") if not line.startswith("CapAmb"))
    hostile_old = old_kernel.replace("Name:\tprocmond", f"Name:\t{name}")
    assert parse_status(hostile_old, 812, "procmond").ambient == ()


def test_the_exec_capture_line_says_on_with_its_counts_or_off_with_the_reason() -> None:
    report = sample_health()
    on = dataclasses.replace(report, exec_capture="eBPF", exec_rescued_total=12)
    assert exec_capture_text(on) == "eBPF: 12 execs completed"
    short = dataclasses.replace(on, exec_uncaptured_total=3)
    assert exec_capture_text(short) == "eBPF: 12 execs completed, 3 without a record"
    off = "off: creating BPF map de_exec_tmp: Operation not permitted"
    assert exec_capture_text(dataclasses.replace(report, exec_capture=off)) == off


def test_kernel_event_losses_are_said_in_health_and_marked_on_the_dashboard() -> None:
    status = sample_status()
    quiet = dataclasses.replace(status.report, events_lost_total=0, events_dropped_total=0)
    assert kernel_losses_text(quiet) == "none"
    lossy = dataclasses.replace(quiet, events_lost_total=2, events_dropped_total=40)
    assert kernel_losses_text(lossy) == (
        "2 lost by the kernel (buffer overruns; a scan reconciled), "
        "40 shed under a storm (forks first)"
    )
    for report, tone in ((quiet, ""), (lossy, "medium")):
        shown = dataclasses.replace(status, report=report)
        collection = dict(health_sections(shown, FAKE_NOW))["collection"]
        assert ("events lost", kernel_losses_text(report), tone) in collection
