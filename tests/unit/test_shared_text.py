"""Texts many processes share are one object in the collector's records; long ones are not
kept, and the table stays bounded."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from daemoneye.collector import shared_text
from daemoneye.collector.details import read_instance
from daemoneye.collector.shared_text import SharedText
from daemoneye.collector.users import UserNames


def fresh(text: str) -> str:
    return "".join(list(text))  # an equal str that is not the same object


def test_equal_texts_become_one_object_and_long_ones_are_not_kept() -> None:
    shared = SharedText()
    first = shared.one(fresh("/usr/sbin/nginx"))
    assert shared.one(fresh("/usr/sbin/nginx")) is first
    assert shared.one(None) is None
    long_text = "x" * 513
    assert shared.one(long_text) is long_text and long_text not in shared._texts
    argv = shared.argv(20, (fresh("nginx:"), fresh("worker")))
    again = shared.argv(20, (fresh("nginx:"), fresh("worker")))
    assert all(a is b for a, b in zip(argv, again, strict=True))
    hostile = (fresh("a"), "b" * 600)
    assert shared.argv(602, hostile) is hostile, "a long command line is not kept"


def test_the_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_text, "_SHARED_MAX", 10)
    shared = SharedText()
    for number in range(100):
        shared.one(str(number))
        shared.argv(5, (f"a{number}", f"b{number}"))
        assert len(shared._texts) <= 10


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    children = [subprocess.Popen(["sleep", "60", "0"]) for _ in range(2)]
    yield children
    for child in children:
        child.kill()
        child.wait()


def test_two_processes_of_one_program_share_exe_cwd_and_arguments(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    users = UserNames()
    reads = []
    for child in sleepers:
        for _ in range(200):  # until the child has exec'd sleep
            read = read_instance(b"/proc", str(child.pid).encode(), users)
            if read is not None and read.details.cmdline[:1] == ("sleep",):
                break
        assert read is not None
        reads.append(read.details)
    a, b = reads
    assert a.exe == b.exe and a.exe is b.exe
    assert a.cwd is b.cwd
    assert a.cmdline == b.cmdline and all(x is y for x, y in zip(a.cmdline, b.cmdline, strict=True))
