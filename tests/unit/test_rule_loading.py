"""Rule files: every problem names file:line and the rule id; bad rules are rejected one by one;
directories load in precedence order and later ids override earlier ones."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemoneye.engine.rule_file import MAX_FILE_BYTES, parse_duration, parse_rule_text
from daemoneye.engine.rule_loader import (
    RuleValidator,
    is_rule_file,
    load_file,
    load_rules,
    rule_files,
)
from daemoneye.models import RuleProblem

GOOD_QUERY = "SELECT pid, start_time, name FROM processes WHERE name = 'x'"


def rule_toml(rule_id: str, *, query: str = GOOD_QUERY, extra: str = "") -> str:
    return textwrap.dedent(f'''
        [[rule]]
        id = "{rule_id}"
        name = "Rule {rule_id}"
        severity = "high"
        {extra}
        query = """
        {query}
        """
    ''')


@pytest.fixture(scope="module")
def validator() -> Iterator[RuleValidator]:
    shared = RuleValidator()
    yield shared
    shared.close()


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def only_problem(path: Path, validator: RuleValidator) -> RuleProblem:
    ruleset = load_file(path, validator)
    assert len(ruleset.problems) == 1, ruleset.problems
    return ruleset.problems[0]


def test_a_good_file_loads_every_field(tmp_path: Path, validator: RuleValidator) -> None:
    path = write(
        tmp_path,
        "a.toml",
        textwrap.dedent("""
        # comment
        [[rule]]
        id = "tmp-exec"
        name = "Exec from tmp"
        description = "d"
        severity = "medium"
        enabled = false
        tags = ["T1059.004", "linux"]
        title = "{name} ran"
        dedup_window = "1h30m"
        throttle = 90
        query = "SELECT pid, start_time, name FROM processes"
    """),
    )
    ruleset = load_file(path, validator)
    assert ruleset.problems == ()
    (rule,) = ruleset.rules
    assert (rule.id, rule.severity, rule.enabled, rule.tags, rule.title) == (
        "tmp-exec",
        "medium",
        False,
        ("T1059.004", "linux"),
        "{name} ran",
    )
    assert (rule.dedup_window_s, rule.throttle_s) == (5400.0, 90.0)
    assert (rule.source_file, rule.source_line, rule.overrides) == (str(path), 3, None)


def test_syntax_error_names_its_line(tmp_path: Path, validator: RuleValidator) -> None:
    path = write(tmp_path, "bad.toml", rule_toml("ok") + '\n[[rule]]\nid = "x\nname = 1\n')
    problem = only_problem(path, validator)
    assert (problem.file, problem.rule_id) == (str(path), None)
    assert problem.line == rule_toml("ok").count("\n") + 3
    assert problem.message.startswith("TOML syntax:")
    assert str(problem).startswith(f"{path}:{problem.line}: TOML syntax")


def test_unknown_key_suggests_the_closest_and_names_its_line(
    tmp_path: Path, validator: RuleValidator
) -> None:
    path = write(tmp_path, "a.toml", rule_toml("typo", extra='severtiy = "low"'))
    ruleset = load_file(path, validator)
    assert ruleset.rules == ()
    (problem,) = ruleset.problems
    assert (problem.line, problem.rule_id) == (6, "typo")
    assert problem.message == "unknown key 'severtiy' (did you mean 'severity'?)"
    assert (
        str(problem) == f"{path}:6: rule 'typo': unknown key 'severtiy' (did you mean 'severity'?)"
    )


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELECT pid, start_time FROM processes WHERE nmae = 'x'", "no such column: nmae"),
        ("SELECT pid, start_time FROM procesess", "no such table: procesess"),
        (
            "SELECT pid, start_time, load_extension('x') FROM processes",
            "function load_extension() (not on the allow-list)",
        ),
        ("SELECT pid, start_time FROM processes, meta", "reading 'meta'"),
        (
            "SELECT pid, name FROM processes",
            "must return the columns pid and start_time (missing: start_time)",
        ),
        ("SELECT count(*) FROM processes", "missing: pid, start_time"),
        ("DELETE FROM processes", "refused: DELETE from 'processes'"),
        ("SELECT pid, start_time FROM processes; SELECT 1", "exactly one statement"),
        ("SELEC pid FROM processes", "syntax error"),
    ],
)
def test_a_query_that_cannot_run_is_rejected_at_its_line(
    tmp_path: Path, validator: RuleValidator, query: str, reason: str
) -> None:
    path = write(tmp_path, "r.toml", rule_toml("good") + rule_toml("broken", query=query))
    ruleset = load_file(path, validator)
    assert [rule.id for rule in ruleset.rules] == ["good"]
    (problem,) = ruleset.problems
    assert problem.rule_id == "broken"
    assert problem.line == rule_toml("good").count("\n") + 7  # the second `query =` line
    assert reason in problem.message


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        (
            'severity = "hgih"',
            5,
            "severity 'hgih' must be one of info, low, medium, high, "
            "critical (did you mean 'high'?)",
        ),
        ('title = "{nmae} ran"', 6, "title placeholder {nmae} is not a result column"),
        ('title = "{name!r}"', 6, "must be a plain {column}"),
        ('tags = ["T59"]', 6, "looks like an ATT&CK id"),
        ('throttle = "soon"', 6, "throttle: expected a duration"),
        ("enabled = 1", 6, "'enabled' must be true or false"),
    ],
)
def test_bad_values_are_rejected_with_line_and_reason(
    tmp_path: Path, validator: RuleValidator, extra: str, line: int, message: str
) -> None:
    text = rule_toml("r1", extra=extra)
    if extra.startswith("severity"):
        text = text.replace('severity = "high"\n', "")
    path = write(tmp_path, "r.toml", text)
    problem = only_problem(path, validator)
    assert (problem.rule_id, problem.line) == ("r1", line)
    assert message in problem.message


def test_duplicate_id_in_one_file_is_an_error(tmp_path: Path, validator: RuleValidator) -> None:
    path = write(tmp_path, "d.toml", rule_toml("same") + rule_toml("same"))
    ruleset = load_file(path, validator)
    assert [(r.id, r.source_line) for r in ruleset.rules] == [("same", 2)]
    (problem,) = ruleset.problems
    second = rule_toml("same").count("\n") + 2
    assert (problem.line, problem.rule_id) == (second, "same")
    assert "duplicate rule id 'same' in this file (first defined at line 2)" in problem.message


@pytest.mark.parametrize(
    ("rule_id", "ok"),
    [("a", True), ("tmp-exec.v2_x", True), ("Upper", False), ("-x", False), ("a b", False)],
)
def test_ids_are_slugs(tmp_path: Path, validator: RuleValidator, rule_id: str, ok: bool) -> None:
    ruleset = load_file(write(tmp_path, "i.toml", rule_toml(rule_id)), validator)
    assert bool(ruleset.rules) is ok
    assert all("must be lowercase letters" in p.message for p in ruleset.problems)


def test_missing_keys_and_wrong_shapes(tmp_path: Path, validator: RuleValidator) -> None:
    path = write(tmp_path, "m.toml", '[[rule]]\nid = "m"\nname = "M"\n')
    assert {p.message for p in load_file(path, validator).problems} == {
        "missing required key 'severity'",
        "missing required key 'query'",
    }
    table = write(tmp_path, "t.toml", '[rule]\nid = "x"\n')
    (problem,) = load_file(table, validator).problems
    assert (problem.line, "[[rule]] table" in problem.message) == (1, True)
    top = write(tmp_path, "top.toml", "rules = []\n" + rule_toml("fine"))
    ruleset = load_file(top, validator)
    assert [r.id for r in ruleset.rules] == ["fine"]
    assert ruleset.problems[0].message.startswith(
        "unknown top-level key 'rules' (did you mean 'rule'?)"
    )


def test_lines_survive_multiline_strings_that_look_like_headers(validator: RuleValidator) -> None:
    text = textwrap.dedent('''
        [[rule]]
        id = "one"
        name = "One"
        severity = "low"
        description = """
        [[rule]]
        severity = "nonsense"
        """
        query = "SELECT pid, start_time FROM processes"

        [[rule]]
        id = "two"
        name = "Two"
        severity = "low"
        query = 'SELECT pid, start_time FROM processes'
        bogus = 1
    ''')
    parsed = parse_rule_text(text, "f.toml")
    assert [(r.id, r.source_line) for r in parsed.rules] == [("one", 2)]
    (problem,) = parsed.problems
    assert (problem.rule_id, problem.line) == ("two", 17)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90s", 90.0), ("1h30m", 5400.0), ("500ms", 0.5), ("2d", 172800.0), (15, 15.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "1x", "-5s", 0, True, "1h soon"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]\"'=\n #abcdeirlquy0123{}.\\-")), max_size=200))
def test_any_text_yields_rules_or_problems_never_an_exception(text: str) -> None:
    parsed = parse_rule_text(text, "fuzz.toml")
    assert all(p.file == "fuzz.toml" and p.line >= 0 for p in parsed.problems)


# -- directories and precedence -----------------------------------------------------------------


def test_editor_temp_files_are_not_rule_files(tmp_path: Path) -> None:
    for name in (
        "a.toml",
        ".#a.toml",
        "a.toml~",
        ".a.toml.swp",
        "a.toml.bak",
        "#a.toml#",
        "b.TOML",
    ):
        write(tmp_path, name, "")
    (tmp_path / "dir.toml").mkdir()
    assert [p.name for p in rule_files(tmp_path)] == ["a.toml"]
    assert not is_rule_file(Path(".hidden.toml"))
    assert rule_files(tmp_path / "missing") == []


def test_later_directories_override_earlier_ones(tmp_path: Path, validator: RuleValidator) -> None:
    builtin, system, user = tmp_path / "builtin", tmp_path / "etc", tmp_path / "user"
    base = write(builtin, "a.toml", rule_toml("shared") + rule_toml("only-builtin"))
    write(system, "b.toml", rule_toml("shared", extra='title = "system {name}"'))
    top = write(user, "c.toml", rule_toml("shared", extra='title = "user {name}"'))
    ruleset = load_rules([builtin, system, user, tmp_path / "absent"], validator=validator)
    assert ruleset.problems == ()
    rules = {rule.id: rule for rule in ruleset.rules}
    assert set(rules) == {"shared", "only-builtin"}
    assert (rules["shared"].title, rules["shared"].source_file) == ("user {name}", str(top))
    assert rules["shared"].overrides == f"{system / 'b.toml'}:2"
    assert rules["only-builtin"].overrides is None and rules["only-builtin"].source_file == str(
        base
    )


def test_files_in_one_directory_load_in_name_order(
    tmp_path: Path, validator: RuleValidator
) -> None:
    write(tmp_path, "20-late.toml", rule_toml("x", extra='title = "late {name}"'))
    write(tmp_path, "10-early.toml", rule_toml("x", extra='title = "early {name}"'))
    (rule,) = load_rules([tmp_path], validator=validator).rules
    assert rule.title == "late {name}"
    assert rule.overrides == f"{tmp_path / '10-early.toml'}:2"


def test_a_broken_override_leaves_the_earlier_rule_running(
    tmp_path: Path, validator: RuleValidator
) -> None:
    write(tmp_path / "a", "a.toml", rule_toml("r"))
    broken = write(tmp_path / "b", "b.toml", rule_toml("r", query="SELECT nope FROM processes"))
    ruleset = load_rules([tmp_path / "a", tmp_path / "b"], validator=validator)
    (rule,) = ruleset.rules
    assert (rule.source_file, rule.overrides) == (str(tmp_path / "a" / "a.toml"), None)
    (problem,) = ruleset.problems
    assert (problem.file, problem.rule_id) == (str(broken), "r")


def test_the_digest_changes_with_any_rule(tmp_path: Path, validator: RuleValidator) -> None:
    path = write(tmp_path, "a.toml", rule_toml("r"))
    first = load_rules([tmp_path], validator=validator).digest
    assert load_rules([tmp_path], validator=validator).digest == first
    path.write_text(rule_toml("r", extra="severity2 = 1").replace("severity2 = 1", 'title = "t"'))
    assert load_rules([tmp_path], validator=validator).digest != first


def test_a_rule_file_over_the_size_cap_is_refused_and_the_rest_loads(
    tmp_path: Path, validator: RuleValidator
) -> None:
    """A 2 MiB valid TOML file is refused before it is read in full; other files load."""
    rules_dir = tmp_path / "rules.d"
    write(rules_dir, "a.toml", rule_toml("small"))
    padding = "# " + "x" * 1000 + "\n"
    huge = rule_toml("huge") + padding * (2 * 1024 * 1024 // len(padding))
    huge_path = write(rules_dir, "b.toml", huge)
    assert huge_path.stat().st_size > 2 * 1024 * 1024 - 2048
    ruleset = load_rules([rules_dir], validator=validator)
    assert [rule.id for rule in ruleset.rules] == ["small"]
    (problem,) = ruleset.problems
    assert problem.file == str(huge_path)
    assert f"larger than {MAX_FILE_BYTES} bytes" in problem.message


@pytest.mark.parametrize(
    ("extra", "key", "limit"),
    [
        (f'name = "{"n" * 201}"', "name", "at most 200"),
        (f'title = "{"t" * 501}"', "title", "at most 500"),
        (f'description = "{"d" * 8193}"', "description", "at most 8192"),
        ("tags = [" + ", ".join(['"x"'] * 33) + "]", "tags", "at most 32 tags"),
        (f'tags = ["{"x" * 65}"]', "tags", "at most 64 characters"),
    ],
)
def test_oversized_fields_are_refused_with_their_line_and_limit(
    tmp_path: Path, validator: RuleValidator, extra: str, key: str, limit: str
) -> None:
    text = rule_toml("big", extra=extra)
    if key == "name":
        text = text.replace('name = "Rule big"\n', "")
    full = rule_toml("fine") + text
    path = write(tmp_path, "r.toml", full)
    ruleset = load_file(path, validator)
    assert [rule.id for rule in ruleset.rules] == ["fine"]
    (problem,) = ruleset.problems
    assert problem.rule_id == "big" and limit in problem.message
    assert full.splitlines()[problem.line - 1].startswith(f"{key} =")


def test_an_oversized_query_is_refused(tmp_path: Path, validator: RuleValidator) -> None:
    query = GOOD_QUERY + " OR name = '" + "q" * (64 * 1024) + "'"
    path = write(tmp_path, "r.toml", rule_toml("long", query=query))
    problem = only_problem(path, validator)
    assert problem.rule_id == "long" and "at most 65536" in problem.message
