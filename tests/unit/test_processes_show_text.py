"""`daemoneye processes show` prints the ancestry and children lines with names escaped: a
parent or child chooses its own name, and the reader's terminal must not obey it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemoneye import cli
from daemoneye.store import Store

from .conftest import DeltaFactory, RecordFactory, own_user_env

HOSTILE = "p\x1b]0;pwned\x07\x1b[2J\u202e\x9b"
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_ancestry_and_children_names_are_escaped(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_record: RecordFactory,
    make_delta: DeltaFactory,
) -> None:
    own_user_env(tmp_path, monkeypatch)
    db = tmp_path / "state" / "d.db"
    parent = make_record(100, 1.0, name="parent" + HOSTILE)
    me = make_record(200, 2.0, ppid=100, name="me")
    child = make_record(300, 3.0, ppid=200, name="child" + HOSTILE)
    with Store.open(db) as store:
        store.apply(make_delta(3.0, added=[parent, me, child]))
    code = cli.main(["--mode", "user", "--db", str(db), "processes", "show", "200"])
    out = capsys.readouterr().out
    assert code == 0
    assert not RAW.search(out), out
    assert "parent" + "p\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x9b" + "(100)" in out
    assert "child" + "p\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x9b" + "(300)" in out
