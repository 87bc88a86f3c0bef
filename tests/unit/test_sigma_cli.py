"""Sigma files through the CLI: `rules list|show|validate|test|import`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from daemoneye.engine.rule_file import parse_rule_text
from daemoneye.engine.sigma_file import parse_sigma_text
from tests.unit.test_rule_cli import db, home, run, user_rules  # noqa: F401 (fixtures)
from tests.unit.test_sigma import RULE_ID, sigma_text

NETCAT = sigma_text("s: {Image|endswith: /NC, CommandLine|contains: ' -e '}\ncondition: s")
OTHER_ID = "22222222-2222-4333-8444-555555555555"
BROKEN_ID = "33333333-2222-4333-8444-555555555555"
MIXED = (
    NETCAT
    + "---\n"
    + sigma_text("s: {Image: x}\ncondition: s", rule_id=OTHER_ID, product="windows")
    + "---\n"
    + sigma_text("s: {Hashes: x}\ncondition: s", rule_id=BROKEN_ID)
)


def test_list_and_show_a_sigma_rule(
    user_rules: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    (user_rules / "mixed.yml").write_text(MIXED)
    code, out, err = run(capsys, "-o", "json", "rules", "list")
    assert code == 0
    by_id = {row["id"]: row for row in json.loads(out)}
    assert by_id[RULE_ID]["format"] == "sigma"
    assert by_id["reverse-shell-netcat"]["format"] == "toml"
    assert BROKEN_ID not in by_id and OTHER_ID not in by_id
    assert f"rule '{BROKEN_ID}': field 'Hashes' cannot be matched" in err
    assert f"rule '{OTHER_ID}': skipped: logsource" in err
    code, out, _ = run(capsys, "rules", "show", RULE_ID)
    assert code == 0
    shown = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "sigma" in shown["format"] and "test" in shown["status"]
    assert "https://example.org/sigma-test" in shown["references"]
    assert "administrators" in shown["falsepositives"] and "T1059.004" in shown["tags"]


def test_validate_a_sigma_file(
    tmp_path: Path,
    home: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    code, out, err = run(capsys, "rules", "validate", str(path))
    assert code == 2
    detection_lines = [n for n, line in enumerate(MIXED.splitlines(), 1) if line == "detection:"]
    assert out.splitlines() == [
        f"{path}:{detection_lines[2]}: rule '{BROKEN_ID}': field 'Hashes' cannot be matched: "
        "Sysmon's Hashes list is not kept; exe_sha256 is, in TOML rules"
    ]
    assert "1 rule valid, 1 problem" in err and "skipped: logsource" in err
    path.write_text(NETCAT)
    assert run(capsys, "rules", "validate", str(path))[0] == 0


def test_test_runs_a_sigma_file_over_the_store(
    tmp_path: Path,
    db: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "netcat.yml"
    path.write_text(NETCAT)
    code, out, _ = run(capsys, "-o", "json", "rules", "test", str(path))
    assert code == 0
    (alert,) = json.loads(out)
    assert (alert["rule_id"], alert["pid"]) == (RULE_ID, 10)


def test_import_writes_toml_that_loads_as_the_same_rule(
    tmp_path: Path,
    home: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "sigma" / "linux" / "mixed.yml"
    source.parent.mkdir(parents=True)
    source.write_text(MIXED)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(capsys, "rules", "import", str(tmp_path / "sigma"), "--out", str(out_dir))
    assert code == 2  # the Hashes rule could not be converted
    assert f"rule '{BROKEN_ID}'" in err and "1 rule(s) imported from 1 file(s)" in err
    text = (out_dir / "mixed.toml").read_text()
    (imported,) = parse_rule_text(text, "mixed.toml").rules
    (original,) = [r for r in parse_sigma_text(MIXED, str(source)).rules if r.id == RULE_ID]
    assert imported.query.strip() == original.query.strip()
    assert (imported.id, imported.severity, imported.tags) == (
        original.id, original.severity, original.tags
    )  # fmt: skip
    assert (imported.sigma_id, imported.status, imported.references, imported.falsepositives) == (
        RULE_ID, "test", original.references, original.falsepositives
    )  # fmt: skip
    # An existing file is not replaced without --force; standard output is the default.
    code, _, err = run(capsys, "rules", "import", str(source), "--out", str(out_dir))
    assert code == 2 and "give --force" in err
    code, out, _ = run(capsys, "rules", "import", str(source))
    assert tomllib.loads(out)["rule"][0]["id"] == RULE_ID
