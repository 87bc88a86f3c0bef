"""History from the command line against a store (`--db`): `timeline` with filters and time
bounds, `processes --at`, `processes tree [PID] [--at]`, and times the store cannot answer."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest

from daemoneye import cli
from daemoneye.commands.history import tree_lines
from daemoneye.event_filter import parse_event_filter
from daemoneye.filters import FilterError
from daemoneye.models import ProcessEvent, ScanDelta, ScanStats, TimelineEvent
from daemoneye.store import Store, open_readonly
from daemoneye.store.history import timeline_matching
from tests.fakes.dashboard_source import sample_health
from tests.unit.conftest import RecordFactory, own_user_env
from tests.unit.test_history import fill

NOW = time.time()
HOUR = 3600.0


@pytest.fixture
def db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Store, make_record: RecordFactory
) -> Path:
    own_user_env(tmp_path, monkeypatch, state="xstate")
    # init(1) since 3 h ago; a shell under it; an ssh that ran for an hour 2 h ago under the
    # shell; a miner started 10 minutes ago.
    fill(
        store,
        make_record,
        [
            (1, NOW - 3 * HOUR, None),
            (200, NOW - 3 * HOUR, None),
            (300, NOW - 2 * HOUR, NOW - HOUR),
            (400, NOW - 600, None),
        ],
    )
    names = {1: "init", 200: "bash", 300: "ssh", 400: "xmrig"}
    parents = {1: 0, 200: 1, 300: 200, 400: 200}
    with store.transaction("names") as conn:
        for pid, name in names.items():
            conn.execute(
                "UPDATE processes SET name = ?, ppid = ?, cmdline = ?, argv = json_array(?) "
                "WHERE pid = ?",
                (name, parents[pid], f"{name} --run", f"{name} --run", pid),
            )
        events = [
            (NOW - 3 * HOUR, "start", 1),
            (NOW - 3 * HOUR, "start", 200),
            (NOW - 2 * HOUR, "exec", 300),
            (NOW - HOUR, "exit", 300),
            (NOW - 600, "exec", 400),
        ]
        for ts, kind, pid in events:
            start = next(
                s
                for p, s in [
                    (1, NOW - 3 * HOUR),
                    (200, NOW - 3 * HOUR),
                    (300, NOW - 2 * HOUR),
                    (400, NOW - 600),
                ]
                if p == pid
            )
            conn.execute(
                "INSERT INTO process_events (ts, kind, pid, start_time, ppid, cmdline, exit_code,"
                " source) VALUES (?, ?, ?, ?, ?, ?, ?, 'netlink')",
                (
                    ts,
                    kind,
                    pid,
                    start,
                    parents[pid],
                    f"{names[pid]} --run",
                    1 if kind == "exit" else None,
                ),
            )
    return store.path


def run(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> tuple[int, str, str]:
    code = cli.main([*argv, "--db", str(db)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_timeline_lists_events_newest_first_filtered_by_kind_and_text(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, db, "timeline", "-o", "json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["event"], r["pid"]) for r in rows] == [
        ("exec", 400),
        ("exit", 300),
        ("exec", 300),
        ("start", 200),
        ("start", 1),
    ]
    code, out, _ = run(capsys, db, "timeline", "event:exec|exit", "ssh", "-o", "json")
    assert [(r["event"], r["pid"]) for r in json.loads(out)] == [("exit", 300), ("exec", 300)]
    code, out, _ = run(capsys, db, "timeline", "not:event:start", "--limit", "1", "-o", "csv")
    assert out.splitlines()[1].split(",")[1:3] == ["exec", "400"]


def test_timeline_since_and_until_take_every_time_form(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, db, "timeline", "--since", "90m ago", "--until=-30m", "-o", "json")
    assert code == 0
    assert [(r["event"], r["pid"]) for r in json.loads(out)] == [("exit", 300)]
    code, _, err = run(capsys, db, "timeline", "--since", "last tuesday")
    assert code == 2
    assert "--since: cannot read 'last tuesday' as a time" in err and "yesterday 23:40" in err


def test_a_since_before_the_history_says_how_far_it_reaches(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, db, "timeline", "--since", "2w")
    assert code == 0
    assert "history reaches back to" in err


def test_timeline_refuses_terms_events_do_not_carry(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, db, "timeline", "cpu:>5")
    assert code == 2 and "events carry no 'cpu'" in err
    code, _, err = run(capsys, db, "timeline", "event:spawn")
    assert code == 2 and "unknown event kind 'spawn'" in err


def test_processes_at_is_the_set_as_it_was(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, db, "processes", "--at", "90m ago", "-o", "json")
    assert code == 0
    assert sorted(r["pid"] for r in json.loads(out)) == [1, 200, 300]
    assert "as at" in err
    code, out, _ = run(capsys, db, "processes", "--at=-90m", "name:ssh", "-o", "json")
    [ssh] = json.loads(out)
    assert ssh["exit_code"] is None and ssh["ended"] == pytest.approx(NOW - HOUR)
    code, out, _ = run(capsys, db, "processes", "--at", "5m ago", "-o", "json")
    assert sorted(r["pid"] for r in json.loads(out)) == [1, 200, 400]


def test_a_moment_the_store_cannot_answer_says_what_it_can(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, db, "processes", "--at", "1d ago")
    assert code == 2
    assert "before the store's history (from " in err and "store.retention" in err
    code, _, err = run(capsys, db, "processes", "tree", "--at", "2030-01-01 00:00 UTC")
    assert code == 2 and "in the future" in err


def test_the_tree_now_and_then(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "processes", "tree", "--at", "90m ago")
    assert code == 0
    tree = [line.split("  ")[0:1] for line in out.splitlines()]
    assert tree
    assert "init" in out and "├─ " not in out.split("bash")[0].split("\n")[-1]
    assert "└─ ssh" in out and "xmrig" not in out
    code, out, _ = run(capsys, db, "processes", "tree", "200", "-o", "json")
    assert [(r["pid"], r["depth"]) for r in json.loads(out)] == [(200, 0), (400, 1)]
    code, _, err = run(capsys, db, "processes", "tree", "300")
    assert code == 2 and "no process with pid 300 now" in err


def test_tree_lines_nest_children_and_never_loop(make_record: RecordFactory) -> None:
    records = [
        make_record(1, 1.0, ppid=0),
        make_record(2, 2.0, ppid=1),
        make_record(3, 3.0, ppid=2),
        make_record(4, 4.0, ppid=1),
        make_record(5, 0.5, ppid=4),  # started before pid 4: a reused ppid, so a root
        make_record(6, 6.0, ppid=7),
        make_record(7, 7.0, ppid=6),  # a ppid cycle with no root: never shown, never loops
    ]
    lines = [(record.pid, prefix) for record, prefix in tree_lines(records)]
    assert lines == [(1, ""), (2, "├─ "), (3, "│  └─ "), (4, "└─ "), (5, ""), (6, ""), (7, "└─ ")]


def test_the_event_filter_keeps_what_it_says() -> None:
    event = TimelineEvent(10.0, "exec", 42, 9.0, "curl", "alice", 7, "curl http://x | sh", (0, 1))
    assert parse_event_filter("event:exec curl").matches(event)
    assert parse_event_filter("cmd:'| sh' user:ali ppid:7").matches(event)
    assert not parse_event_filter("not:event:exec").matches(event)
    assert not parse_event_filter("pid:41").matches(event)
    assert parse_event_filter("event:exit,exec").kinds == ("exec", "exit")
    with pytest.raises(FilterError, match="no event kind is left"):
        parse_event_filter("event:exec not:event:exec")
    with pytest.raises(FilterError, match="no cpu, rss or threads"):
        parse_event_filter("cpu>5")


def test_a_rare_filter_answers_within_its_budget_and_pages_on(
    store: Store, make_record: RecordFactory
) -> None:
    fill(store, make_record, [(1, 1.0, None)])
    with store.transaction("events") as conn:
        for n in range(250):
            conn.execute(
                "INSERT INTO process_events (ts, kind, pid, start_time, cmdline, source) "
                "VALUES (?, 'exec', 1, 1.0, ?, 'poll')",
                (float(n), "needle" if n in (3, 200) else "hay"),
            )
    wanted = parse_event_filter("needle")
    found: list[float] = []
    pages = 0
    with open_readonly(store.path) as reader:
        cursor = None
        while True:
            events, cursor = timeline_matching(
                reader, wanted.matches, since=0.0, before=cursor, limit=10, budget=100
            )
            pages += 1
            found += [e.ts for e in events]
            if cursor is None:
                break
    assert found == [200.0, 3.0]
    assert pages == 3  # 250 events, at most 100 looked at per answer


def test_a_record_field_change_keeps_the_event_record_in_step() -> None:
    """The event filter builds a ProcessRecord from an event: a new required field would
    break it here first."""
    event = TimelineEvent(1.0, "exit", 1, 0.0, None, None, None, "exit code 1", (0, 1))
    assert parse_event_filter("exit").matches(event)
    assert dataclasses.is_dataclass(event)


def test_health_says_how_far_back_history_reaches(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open_existing(db) as writer, writer.transaction("health") as conn:
        report = dataclasses.replace(sample_health(NOW), updated_at=time.time())
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('health', ?)",
            (json.dumps(dataclasses.asdict(report)),),
        )
    _, out, _ = run(capsys, db, "health")
    [history] = [
        line
        for line in out.splitlines()
        if line.startswith("HISTORY") or line.startswith("history")
    ]
    # NOW is taken when the module is imported: a slow suite may be minutes past it here
    assert re.search(r"from .* \(3h \d\dm back\), 4 process instances$", history), history
    _code, out, _ = run(capsys, db, "health", "-o", "json")
    assert json.loads(out)[0]["history"]["oldest"] == pytest.approx(NOW - 3 * HOUR)


def test_timeline_lists_changes_after_start_with_what_changed(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Renames, uid changes, ptrace, a deleted exe and a new cwd are events of the timeline
    with their old → new detail, and `event:` picks them."""
    start = NOW - 600
    changes = [
        ProcessEvent(NOW - 500, "rename", 400, start, old_value="xmrig", new_value="kworker/0:1"),
        ProcessEvent(NOW - 400, "uid", 400, start, old_value="1000", new_value="0", exe_setid=True),
        ProcessEvent(NOW - 300, "ptrace", 400, start, new_value="200"),
        ProcessEvent(NOW - 200, "exe_deleted", 400, start, old_value="/tmp/xmrig"),
        ProcessEvent(NOW - 100, "cwd", 400, start, old_value="/tmp", new_value="/dev/shm\x1b[2J"),
    ]
    with Store.open(db) as store:
        store.apply(ScanDelta(NOW, (), (), (), (), tuple(changes), ScanStats(0, 0, 0, 0, 0, 0, 0)))
    # NOW is taken at import: a relative --since would depend on how slow the suite is
    code, out, _ = run(capsys, db, "timeline", "not:event:start|fork|exec|exit|alert", "-o", "json")
    assert code == 0
    assert [(r["event"], r["detail"]) for r in json.loads(out)] == [
        ("cwd", "/tmp \u2192 /dev/shm\x1b[2J"),
        ("exe_deleted", "/tmp/xmrig deleted"),
        ("ptrace", "traced by pid 200"),
        ("uid", "1000 \u2192 0 (set-id program)"),
        ("rename", "xmrig \u2192 kworker/0:1"),
    ]
    code, out, _ = run(capsys, db, "timeline", "event:uid|rename", "kworker", "-o", "json")
    assert [r["event"] for r in json.loads(out)] == ["rename"]
    code, out, _ = run(capsys, db, "timeline", "not:event:exec|start|exit", "-o", "json")
    assert len(json.loads(out)) == 5  # the db fixture has no fork or alert events
    # The table escapes what a process chose (the cwd's escape sequence is not sent raw).
    code, out, _ = run(capsys, db, "timeline", "event:cwd")
    assert code == 0 and "\x1b[2J" not in out and "/dev/shm" in out
