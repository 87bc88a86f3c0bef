"""Smaller pieces of dashboard logic: the header, query history, rules, health, detail."""

from __future__ import annotations

import dataclasses

import pytest

from daemoneye.models import DaemonStatus, ProcessKey, StartupEvaluation
from daemoneye.tui.logic.connection import ConnectionState, header_parts
from daemoneye.tui.logic.detail import cmdline_text, process_facts
from daemoneye.tui.logic.glyphs import CHEVRON
from daemoneye.tui.logic.health import health_sections, problems
from daemoneye.tui.logic.query_history import QueryHistory
from daemoneye.tui.logic.rules import ordered, rule_row, rule_source
from tests.fakes.dashboard_source import (
    FAKE_NOW,
    hostile_processes,
    proc,
    sample_processes,
    sample_rules,
    sample_status,
    starting_status,
)

pytestmark = pytest.mark.usefixtures("utc")  # times are shown in local time


def text(parts: list[tuple[str, str]]) -> str:
    return "".join(part for part, _ in parts)


def test_the_header_names_host_state_and_counts() -> None:
    connected = ConnectionState("connected", host="web-01", role="admin")
    line = text(header_parts(connected, 17, {"critical": 1, "low": 2}, 6, 1, FAKE_NOW))
    assert line == "web-01  ● connected (admin)  17 procs  alerts 1 CRIT 2 LOW  rules 6 1⚠"


def test_the_header_says_when_the_daemon_is_gone_and_how_old_the_data_is() -> None:
    gone = ConnectionState(
        "disconnected",
        host="web-01",
        retry_in=4.0,
        last_data=FAKE_NOW - 30,
        private_daemon="private daemon pid 7",
    )
    line = text(header_parts(gone, 17, {}, 0, 0, FAKE_NOW))
    assert "○ DISCONNECTED · retry in 4s · data from 22:12:50" in line
    assert "private daemon pid 7" in line and "alerts none" in line


def test_the_host_name_from_the_daemon_is_printable() -> None:
    line = text(header_parts(ConnectionState(host="evil\x1b[2J"), 0, {}, 0, 0, FAKE_NOW))
    assert "\x1b" not in line and "evil\\x1b[2J" in line


def test_query_history_walks_back_and_forth_keeping_the_draft() -> None:
    history = QueryHistory()
    history.add("SELECT 1")
    history.add("SELECT 2")
    history.add("SELECT 1")  # moved to the end, not repeated
    assert history.entries == ("SELECT 2", "SELECT 1")
    assert history.older("SEL") == "SELECT 1"
    assert history.older("SELECT 1") == "SELECT 2"
    assert history.older("SELECT 2") == "SELECT 2"
    assert history.newer() == "SELECT 1"
    assert history.newer() == "SEL"


def test_rules_with_problems_come_first_then_by_severity() -> None:
    order = [s.rule.id for s in ordered(sample_rules())]
    assert order == [
        "ssh-brute",
        "exe-deleted",
        "shell-from-web",
        "exec-from-tmp",
        "listening-python",
        "new-suid",
    ]
    broken = next(s for s in sample_rules() if s.problems)
    assert rule_row(broken, FAKE_NOW).cells[0].text == "⚠"
    assert rule_source(broken.rule) == "local.toml:9"


def test_health_shows_clients_engine_and_problems() -> None:
    sections = dict(health_sections(sample_status(), FAKE_NOW))
    assert ("clients", "2", "") in sections["daemon"]
    assert ("rules", "5 active, 1 rejected", "high") in sections["engine"]
    assert problems(sample_status()) == []


def daemon_facts(status: DaemonStatus) -> dict[str, tuple[str, str]]:
    daemon = dict(health_sections(status, FAKE_NOW))["daemon"]
    return {label: (value, tone) for label, value, tone in daemon}


def test_health_says_the_rules_are_still_running_over_history_after_a_start() -> None:
    assert daemon_facts(starting_status())["startup eval"] == (
        "running: 3 of 12 rules over the whole store, 41s so far; alerts about past "
        "processes may still come, retention waits",
        "low",
    )
    done = StartupEvaluation("done", 12, 12, 0, FAKE_NOW - 7200, 3.24, ended_at=FAKE_NOW - 7196)
    status = sample_status()
    status = dataclasses.replace(
        status, report=dataclasses.replace(status.report, startup_evaluation=done)
    )
    assert daemon_facts(status)["startup eval"] == (
        "done at 20:13:24: 12 rules over the whole store in 3.2s",
        "",
    )
    assert "startup eval" not in daemon_facts(sample_status())  # nothing ran at the start


def test_the_detail_marks_a_deleted_executable_clearly() -> None:
    xmrig = next(r for r in sample_processes() if r.pid == 3100)
    facts = {
        label: (value, tone) for label, value, tone in process_facts(xmrig, "", [], [], FAKE_NOW)
    }
    assert facts["exe"] == ("/tmp/.x/kthreadd  [DELETED from disk]", "critical")


def test_the_detail_caps_a_huge_command_line() -> None:
    big = next(r for r in hostile_processes() if r.pid == 6605)
    shown = cmdline_text(big)
    assert len(shown) < 4200 and shown.endswith("chars)")


def test_the_detail_lists_ancestry_root_last_and_children() -> None:
    from daemoneye.tui.logic.keys import record_key, row_key
    from daemoneye.tui.logic.lineage import Lineage, ancestry, children

    records = {record_key(r): r for r in sample_processes()}
    key = row_key(ProcessKey(2320, FAKE_NOW - 5390))
    bash = records[key]
    facts = {
        label: value
        for label, value, _ in process_facts(
            bash, "", ancestry(key, records), children(key, records), FAKE_NOW
        )
    }
    lineage = Lineage(records)
    assert lineage.ancestry(key) == ancestry(key, records)
    assert lineage.children(key) == children(key, records)
    assert facts["ancestry"] == f"systemd (1) {CHEVRON} sshd (812) {CHEVRON} sshd (2301)"
    assert facts["children"] == "vim (2411), python3 (2590)"
    assert proc(1, 0, "x", started=1).pid == 1


# -- the detail pane's context lines ------------------------------------------------------------


def test_the_detail_pane_shows_session_stdio_environment_and_namespaces_escaped() -> None:
    import dataclasses

    from daemoneye.tui.logic.detail import context_facts, environment_pairs
    from tests.fakes.dashboard_source import proc

    record = dataclasses.replace(
        proc(4000, 1, "bash", ["bash"], started=9),
        cgroup="/user.slice/x\x1b[2J\nfake.service",
        container_runtime="docker",
        container_id="3f2a9c1b7d20" + "a" * 52,
        unit="docker-3f2a.scope",
        pid_ns=10,
        mnt_ns=11,
        net_ns=12,
        user_ns=13,
        ns_foreign="pid net",
        session_id=4000,
        tty="pts/3",
        loginuid=1000,
        ssh_client="203.0.113.7 50022",
        ssh_source="session leader",
        stdin="socket:tcp 10.0.0.5:39490->10.0.0.9:4444 established",
        stdout="socket:unix stream /run/\x1b]0;x\x07s",
        stderr=None,
        environment='{"LD_PRELOAD":"/tmp/\\u001b[31mx.so","HISTFILE":"/dev/null"}',
    )
    facts = {label: (value, tone) for label, value, tone in context_facts(record)}
    assert all(len(label) <= 8 for label in facts), "the pane's label column"
    assert facts["runs in"] == ("container docker 3f2a9c1b7d20", "medium")
    assert "\x1b" not in facts["cgroup"][0] and "\n" not in facts["cgroup"][0]
    assert facts["ns"][0] == "pid 10  mnt 11  net 12  user 13  (not PID 1's: pid net)"
    assert facts["session"][0] == (
        "sid 4000  tty pts/3  loginuid 1000  ssh from 203.0.113.7 50022 (from the session leader)"
    )
    assert facts["stdin"] == ("socket:tcp 10.0.0.5:39490->10.0.0.9:4444 established", "high")
    assert "\x1b" not in facts["stdout"][0] and facts["stdout"][1] == ""
    assert facts["stderr"] == ("unreadable", "dim")
    environment, tone = facts["env"]
    assert "\x1b" not in environment and "LD_PRELOAD=/tmp/" in environment and tone == ""
    assert environment_pairs("{}") == []
    assert environment_pairs("not json") is None
    assert context_facts(proc(2, 0, "kthreadd", [], started=9)) == []
