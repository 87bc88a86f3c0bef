"""The process table as data: sort, tree, filter, new/ended rows and the cells they show."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from daemoneye.filters import parse_filter
from daemoneye.models import ProcessKey, ProcessRecord
from daemoneye.tui.logic.cells import RowView
from daemoneye.tui.logic.glyphs import TIMES
from daemoneye.tui.logic.keys import parse_row_key, record_key, row_key
from daemoneye.tui.logic.lineage import ancestry, children, tree_order, with_ancestors
from daemoneye.tui.logic.live import ProcessSet
from daemoneye.tui.logic.processes import ProcessView, is_kernel_thread
from daemoneye.tui.logic.sorting import SortSpec, sort_records
from tests.fakes.dashboard_source import FAKE_NOW, hostile_processes, proc, sample_processes

pytestmark = pytest.mark.usefixtures("utc")  # times are shown in local time


def by_key(records: tuple[ProcessRecord, ...] | list[ProcessRecord]) -> dict[str, ProcessRecord]:
    return {record_key(r): r for r in records}


def process_set(
    records: list[ProcessRecord] | tuple[ProcessRecord, ...], generation: int = 1
) -> ProcessSet:
    return ProcessSet(MappingProxyType(by_key(records)), generation, 0)


def test_row_keys_are_pid_and_start_time_and_round_trip() -> None:
    key = ProcessKey(4242, 1699990000.37)
    assert row_key(key) == "4242:1699990000.37"
    assert parse_row_key(row_key(key)) == key


@pytest.mark.parametrize("descending", [True, False])
def test_equal_values_keep_ascending_pid_order_in_both_directions(descending: bool) -> None:
    records = [proc(pid, 1, "x", started=1) for pid in (30, 10, 20)]
    ordered = sort_records(records, SortSpec("cpu", descending))
    assert [r.pid for r in ordered] == [10, 20, 30]


@pytest.mark.parametrize(
    ("column", "first"),
    [("pid", 1), ("user", 2320), ("rss", 3100), ("started", 3101), ("name", 2320), ("cmd", 2320)],
)
def test_every_column_sorts(column: str, first: int) -> None:
    descending = column in ("rss", "started")
    ordered = sort_records(sample_processes(), SortSpec(column, descending))
    assert ordered[0].pid == first


def test_choosing_the_sorted_column_again_reverses_it() -> None:
    spec = SortSpec("cpu", True).toggled("name")
    assert spec == SortSpec("name", False)
    assert spec.toggled("name") == SortSpec("name", True)


def test_tree_lists_children_under_their_parent_with_guides() -> None:
    ordered = tree_order(by_key(sample_processes()), SortSpec("pid", False))
    names = [(record.pid, guide) for _, record, guide in ordered]
    index = {pid: i for i, (pid, _) in enumerate(names)}
    assert names[0] == (1, "")  # systemd: a root
    assert index[1034] == index[1033] + 1 and index[1035] == index[1033] + 2
    assert dict(names)[1034] == "│ ├─" and dict(names)[1035] == "│ └─"
    assert dict(names)[2411] == "│     ├─" and dict(names)[2590] == "│     └─"


def test_a_process_deep_in_the_tree_still_shows_its_name() -> None:
    """Seen in tmux: eight levels down, the guide filled the NAME column and left "…"."""
    chain = [proc(1, 0, "init", started=100)]
    chain += [proc(pid, pid - 1, "bash", started=100 - pid) for pid in range(2, 10)]
    chain.append(proc(10, 9, "sleep", started=1))
    view = ProcessView()
    view.update(process_set(chain), FAKE_NOW)
    view.tree = True
    cells = {parse_row_key(r.key).pid: r.cells for r in view.rows(FAKE_NOW)}
    name = cells[10][6].text
    assert name.endswith("└─sleep") and name.startswith("…"), name
    assert len(name) <= 15


def test_a_reused_pid_is_not_taken_for_the_parent() -> None:
    parent_reused = proc(50, 1, "late", started=10)  # pid 50 started after the child
    child = proc(60, 50, "orphan", started=100)
    records = by_key([proc(1, 0, "init", started=1000), parent_reused, child])
    assert ancestry(record_key(child), records) == []
    assert children(record_key(parent_reused), records) == []
    roots = [r.pid for _, r, guide in tree_order(records, SortSpec("pid", False)) if not guide]
    assert 60 in roots


def test_ancestry_is_parent_first_and_stops_on_cycles() -> None:
    records = by_key(sample_processes())
    chain = ancestry(row_key(ProcessKey(2411, FAKE_NOW - 1200)), records)
    assert [r.pid for r in chain] == [2320, 2301, 812, 1]
    a = proc(70, 71, "a", started=5)
    b = proc(71, 70, "b", started=5)
    assert [r.pid for r in ancestry(record_key(a), by_key([a, b]))] == [71]


def test_a_lineage_kept_current_answers_as_one_built_afresh() -> None:
    """The detail pane's index follows deltas (a reparent, an exit, a reused pid) instead of
    being rebuilt for every refresh."""
    from daemoneye.tui.logic.lineage import Lineage

    records = by_key(sample_processes())
    lineage = Lineage(records)
    vim = row_key(ProcessKey(2411, FAKE_NOW - 1200))
    shell = row_key(ProcessKey(2320, FAKE_NOW - 5390))
    orphaned = dataclasses.replace(records[vim], ppid=1)
    reused = proc(2320, 1, "reused", started=10)  # pid 2320 again, after the shell is gone
    changes: list[tuple[str, ProcessRecord | None]] = [
        (vim, orphaned),
        (shell, None),
        (record_key(reused), reused),
    ]
    lineage.update(changes)
    after = {
        key: record for key, record in {**records, **dict(changes)}.items() if record is not None
    }
    fresh = Lineage(after)
    assert lineage.parents == fresh.parents, "the tree nests as one built afresh would"
    for key in after:
        assert lineage.ancestry(key) == fresh.ancestry(key), key
        assert lineage.children(key) == fresh.children(key), key
    assert [r.pid for r in lineage.ancestry(vim)] == [1]
    assert lineage.children(record_key(reused)) == [], "a reused pid adopts no older process"


def test_a_filtered_tree_keeps_the_ancestors_of_matches() -> None:
    records = by_key(sample_processes())
    matches = [(k, r) for k, r in records.items() if r.name == "vim"]
    assert sorted(r.pid for r in with_ancestors(matches, records).values()) == [
        1,
        812,
        2301,
        2320,
        2411,
    ]


def test_view_filters_with_the_shared_filter_language() -> None:
    view = ProcessView()
    view.update(process_set(sample_processes()), FAKE_NOW)
    view.alerted = {row_key(ProcessKey(3100, FAKE_NOW - 300)): "critical"}
    view.filter = parse_filter("alerted")
    assert [parse_row_key(r.key).pid for r in view.rows(FAKE_NOW)] == [3100]
    view.filter = parse_filter("user:alice -name:bash")
    assert sorted(parse_row_key(r.key).pid for r in view.rows(FAKE_NOW)) == [2411, 2590]


def test_kernel_threads_are_kthreadd_and_its_children_without_a_command_line() -> None:
    assert is_kernel_thread(proc(2, 0, "kthreadd", started=9))
    assert is_kernel_thread(proc(14, 2, "kworker/0:1", started=9))
    assert not is_kernel_thread(proc(1, 0, "systemd", ["/sbin/init"], started=9))
    # a user process named like a kernel thread is not one
    assert not is_kernel_thread(proc(3100, 1, "kworker/0:1", ["/tmp/x"], started=9))


@pytest.mark.parametrize("tree", [False, True])
def test_hiding_kernel_threads_keeps_the_users_filter(tree: bool) -> None:
    view = ProcessView()
    view.tree = tree
    view.update(process_set(sample_processes()), FAKE_NOW)
    every = {parse_row_key(r.key).pid for r in view.rows(FAKE_NOW)}
    assert {2, 14} <= every
    view.hide_kernel_threads = True
    hidden = {parse_row_key(r.key).pid for r in view.rows(FAKE_NOW)}
    assert hidden == every - {2, 14}
    assert view.filter.empty, "hiding is not the user's filter"
    assert view.summary(len(hidden)) == f"{len(hidden)} shown of {len(every)}"
    view.filter = parse_filter("user:root")
    assert 14 not in {parse_row_key(r.key).pid for r in view.rows(FAKE_NOW)}
    view.hide_kernel_threads = False
    assert 14 in {parse_row_key(r.key).pid for r in view.rows(FAKE_NOW)}
    view.filter = parse_filter("")
    assert {parse_row_key(r.key).pid for r in view.rows(FAKE_NOW)} == every


def test_nothing_is_new_in_the_first_set_or_after_a_reconnect() -> None:
    view = ProcessView()
    view.update(process_set(sample_processes(), generation=1), FAKE_NOW)
    view.update(
        process_set([*sample_processes(), proc(9, 1, "x", started=0)], generation=2), FAKE_NOW
    )
    assert all(row.cells[0].text != "+" for row in view.rows(FAKE_NOW))


def test_new_rows_are_marked_then_plain_and_ended_rows_linger_then_go() -> None:
    view = ProcessView(new_for=3, ended_for=3)
    base = list(sample_processes())
    view.update(process_set(base), FAKE_NOW)
    newcomer = proc(9000, 1, "newcomer", ["newcomer"], started=0)
    view.update(process_set([*base, newcomer]), FAKE_NOW)
    rows = {r.key: r for r in view.rows(FAKE_NOW)}
    assert rows[record_key(newcomer)].cells[0].text == "+"
    assert rows[record_key(newcomer)].cells[1].tone == "new"
    assert view.expire(FAKE_NOW + 3.5)
    rows = {r.key: r for r in view.rows(FAKE_NOW + 3.5)}
    assert rows[record_key(newcomer)].cells[1].tone == ""
    view.update(process_set(base), FAKE_NOW + 4)
    rows = {r.key: r for r in view.rows(FAKE_NOW + 4)}
    assert rows[record_key(newcomer)].cells[0].text == TIMES
    assert view.summary(len(rows)) == "17 processes · 1 just ended"
    view.filter = parse_filter("newcomer")
    assert view.summary(len(view.rows(FAKE_NOW + 4))) == "0 shown of 17 · 1 just ended", (
        "an ended row is shown but not counted as live"
    )
    assert record_key(newcomer) not in {r.key for r in view.rows(FAKE_NOW + 8)}


def test_an_alerted_process_is_marked_in_text_not_only_colour() -> None:
    view = ProcessView()
    view.update(process_set(sample_processes()), FAKE_NOW)
    key = row_key(ProcessKey(3101, FAKE_NOW - 120))
    view.alerted = {key: "high"}
    row = next(r for r in view.rows(FAKE_NOW) if r.key == key)
    assert row.cells[0].text == "!" and row.cells[0].tone == "high"


def test_unchanged_records_reuse_their_row() -> None:
    view = ProcessView()
    view.update(process_set(sample_processes()), FAKE_NOW)
    first = {r.key: r.cells for r in view.rows(FAKE_NOW)}
    second = {r.key: r.cells for r in view.rows(FAKE_NOW)}
    assert all(first[key] is second[key] for key in first)


def test_hostile_names_become_literal_printable_cells() -> None:
    view = ProcessView()
    view.update(process_set(hostile_processes()), FAKE_NOW)
    cells = {parse_row_key(r.key).pid: r.cells for r in view.rows(FAKE_NOW)}
    assert cells[6601][6].text == "[red]x[/red]"
    assert cells[6602][6].text == "\\x1b[2Jclear"
    assert cells[6602][7].text.startswith("\\x1b[2J\\x1b[H \\x1b]0;owned\\x07")
    assert cells[6603][6].text == "line\\nbreak" and cells[6603][2].text == "new\\nli…"
    assert cells[6604][6].text == "\\u202egnp.exe"
    assert all(
        "\x1b" not in cell.text and "\n" not in cell.text for row in cells.values() for cell in row
    )


def test_ten_thousand_processes_give_every_row_once_in_order() -> None:
    """Speed at this size is the dashboard benchmark's (benchmarks/dashboard_bench.py); here,
    that every one of 10,000 processes gets exactly one row, in the sort order, every time."""
    from tests.fakes.dashboard_source import many_processes

    view = ProcessView()
    records = many_processes(10_000)
    view.update(process_set(records), FAKE_NOW)
    first = view.rows(FAKE_NOW)
    assert sorted(parse_row_key(row.key).pid for row in first) == sorted(r.pid for r in records)
    by_key = {record_key(record): record for record in records}
    cpu = [by_key[row.key].cpu_percent for row in first]
    assert cpu == sorted(cpu, reverse=True)
    assert view.rows(FAKE_NOW) == first


@pytest.mark.parametrize(
    "sort",
    [
        SortSpec("cpu", True),
        SortSpec("name", True),
        SortSpec("user", False),
        SortSpec("rss", False),
    ],
)
def test_refreshing_by_changes_gives_the_same_rows_as_recomputing(sort: SortSpec) -> None:
    """The incremental refresh (only changed instances) must equal a full recompute."""
    from daemoneye.tui.logic.live import LiveProcesses
    from tests.fakes.dashboard_source import churn_delta, many_processes

    records = many_processes(600)
    table = {r.key: r for r in records}
    live = LiveProcesses()
    live.reset(records)
    view = ProcessView(new_for=2, ended_for=2)
    view.sort = sort
    view.filter = parse_filter("-user:alice")
    now = FAKE_NOW
    view.update(live.snapshot(), now)
    view.rows(now)
    for seq in range(1, 12):
        now += 1
        live.apply(churn_delta(table, seq, changed=60, added=4, removed=4))
        view.update(live.snapshot(), now)
        view.alerted = {record_key(records[seq]): "high"} if seq % 3 else {}
        incremental = view.rows(now)
        fresh = ProcessView(new_for=2, ended_for=2)
        fresh._new_until, fresh._ended = dict(view._new_until), dict(view._ended)
        fresh._set = view._set
        fresh.sort, fresh.filter, fresh.alerted = view.sort, view.filter, view.alerted
        assert incremental == fresh.rows(now)
        assert view.changed is not None, "the refresh was incremental"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_incremental_rows_equal_rows_computed_from_scratch(seed: int) -> None:
    """Whatever mix of deltas, sorts, filters, alerts and tree toggles came before, the order,
    and the rows a table kept (all but those named as changed), are exactly those a fresh view
    computes."""
    import random

    from daemoneye.tui.logic.live import LiveProcesses
    from daemoneye.tui.logic.sorting import SORTABLE
    from tests.fakes.dashboard_source import churn_delta, many_processes

    rnd = random.Random(seed)
    records = many_processes(300)
    live = LiveProcesses()
    live.reset(records)
    shadow = {record.key: record for record in records}
    view = ProcessView()
    now = 0.0
    view.update(live.snapshot(), now)
    drawn = {row.key: row.cells for row in view.rows(now)}
    for step in range(150):
        now += rnd.choice([0.0, 0.5, 1.0, 2.0])
        choice = rnd.random()
        if choice < 0.4:
            live.apply(
                churn_delta(
                    shadow,
                    step + 1,
                    changed=rnd.randint(0, 60),
                    added=rnd.randint(0, 4),
                    removed=rnd.randint(0, 4),
                )
            )
            view.update(live.snapshot(), now)
        elif choice < 0.55:
            view.sort = view.sort.toggled(rnd.choice(SORTABLE))
        elif choice < 0.7:
            # Typing on (narrowing: looked for among the rows shown) and back.
            view.filter = parse_filter(
                rnd.choice(
                    [
                        "",
                        "n",
                        "ng",
                        "nginx",
                        "ng user:root",
                        "user:r",
                        "user:root",
                        "cpu>5",
                        "cpu>50",
                        "sh",
                        "-ng",
                        "-ngi",
                        "pid:1",
                        "pid:12",
                    ]
                )
            )
        elif choice < 0.8:
            view.tree = not view.tree
        elif choice < 0.9 and view.records:
            view.alerted = {
                key: rnd.choice(["high", "low"]) for key in rnd.sample(sorted(view.records), 3)
            }
        if rnd.random() < 0.7:
            order = view.order(now)
            # What a table keeps: the cells it pulled, minus the keys named as changed.
            if view.changed is None:
                drawn.clear()
            for key in view.changed or ():
                drawn.pop(key, None)
            got = [RowView(key, drawn.setdefault(key, view.cells(key))) for key in order]
            fresh = ProcessView()
            fresh._new_until, fresh._ended = dict(view._new_until), dict(view._ended)
            fresh._set = view._set
            fresh.sort, fresh.tree, fresh.filter = view.sort, view.tree, view.filter
            fresh.alerted = view.alerted
            assert got == fresh.rows(now), step


def test_row_caches_hold_only_rows_that_could_be_drawn_again() -> None:
    """A dashboard left open for a day must not keep a row for every process it ever drew:
    rows of changed or expired processes are dropped (the table keeps what it drew)."""
    from daemoneye.tui.logic.live import LiveProcesses
    from tests.fakes.dashboard_source import churn_delta, many_processes

    records = many_processes(400)
    live = LiveProcesses()
    live.reset(records)
    shadow = {record.key: record for record in records}
    view = ProcessView(new_for=1, ended_for=1)
    now = 0.0
    view.update(live.snapshot(), now)
    for seq in range(1, 120):
        now += 1
        live.apply(churn_delta(shadow, seq, changed=40, added=4, removed=4))
        view.update(live.snapshot(), now)
        for key in view.order(now)[:20]:  # what a 20-row screen draws
            view.cells(key)
    unchanged_since_drawn = len(view._rows)
    assert unchanged_since_drawn <= 20 * 12, unchanged_since_drawn
    assert len(view._plain) <= 20 * 12


def test_a_tree_refresh_names_only_the_rows_whose_cells_changed() -> None:
    """The table redraws the rows a refresh names. In the tree, a row's guide is part of its
    cells: a new last child turns its elder sibling's "└─" into "├─", so that sibling is named
    too; rows that only moved are not."""
    from daemoneye.tui.logic.live import LiveProcesses

    parent = proc(100, 1, "parent", started=60)
    elder = proc(101, 100, "elder", started=50, cpu=1.0)
    other = proc(200, 1, "other", started=40)
    live = LiveProcesses()
    live.reset((parent, elder, other))
    view = ProcessView()
    view.tree = True
    view.update(live.snapshot(), 0.0)
    view.order(0.0)
    assert view.changed is None, "the first layout draws everything"
    busy = dataclasses.replace(other, cpu_percent=50.0)
    younger = proc(102, 100, "younger", started=5)
    from daemoneye.models import ProcessesDelta

    live.apply(ProcessesDelta(1, (busy, younger), (), ()))
    view.update(live.snapshot(), 1.0)
    keys = view.order(1.0)
    assert [parse_row_key(key).pid for key in keys] == [200, 100, 101, 102]
    assert view.changed == {record_key(busy), record_key(younger), record_key(elder)}


def test_a_narrowed_filter_still_places_rows_that_changed_before_the_next_order() -> None:
    """Narrowing looks only among the rows shown, in their order; a refresh taken in between
    the keystroke and the next order() may add rows or move them, so it must not be used."""
    from daemoneye.tui.logic.live import LiveProcesses
    from tests.fakes.dashboard_source import churn_delta, many_processes

    records = many_processes(300)
    live = LiveProcesses()
    live.reset(records)
    shadow = {record.key: record for record in records}
    view = ProcessView()
    view.update(live.snapshot(), 0.0)
    view.order(0.0)
    view.filter = parse_filter("n")  # narrows the empty filter
    live.apply(churn_delta(shadow, 1, changed=120, added=10, removed=5))
    view.update(live.snapshot(), 0.0)
    fresh = ProcessView()
    fresh._new_until, fresh._ended = dict(view._new_until), dict(view._ended)
    fresh._set, fresh.filter = view._set, view.filter
    assert view.order(0.0) == fresh.order(0.0)


def test_the_container_column_shows_runtime_and_short_id_host_or_unknown() -> None:
    """C adds a CONTAINER cell before NAME: the runtime and the id cut to 12 like `docker ps`,
    'host' for a process in no container, '?' when its cgroup was not read; hostile LXC
    names are escaped."""
    from daemoneye.tui.logic.process_row import process_columns

    docker = dataclasses.replace(
        proc(4000, 1, "bash", ["bash"], started=9),
        cgroup="/system.slice/docker-x.scope",
        container_runtime="docker",
        container_id="3f2a9c1b7d20" + "a" * 52,
    )
    host = dataclasses.replace(proc(4001, 1, "nginx", ["nginx"], started=9), cgroup="/")
    unknown = proc(4002, 1, "cron", ["cron"], started=9)
    lxc = dataclasses.replace(
        proc(4003, 1, "sh", ["sh"], started=9),
        cgroup="/lxc/x",
        container_runtime="lxc",
        container_id="\x1b[2Jweb",
    )
    view = ProcessView()
    view.update(process_set([docker, host, unknown, lxc]), FAKE_NOW)
    assert all(len(r.cells) == 8 for r in view.rows(FAKE_NOW))
    view.show_container = True
    labels = [c.label for c in process_columns(True)]
    assert labels.index("CONTAINER") == labels.index("NAME") - 1
    cells = {parse_row_key(r.key).pid: r.cells for r in view.rows(FAKE_NOW)}
    column = labels.index("CONTAINER")
    assert cells[4000][column].text == "docker 3f2a9c1b7d20"
    assert cells[4000][column + 1].text == "bash"
    assert cells[4001][column].text == "host"
    assert cells[4002][column].text == "?"
    assert "\x1b" not in cells[4003][column].text and "web" in cells[4003][column].text
    view.show_container = False
    assert all(len(r.cells) == 8 for r in view.rows(FAKE_NOW))
