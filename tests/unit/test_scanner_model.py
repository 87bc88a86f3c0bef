"""ProcScanner against a model: hypothesis drives random spawns, exits, pid reuse, execs and
changes through a fake /proc, and after every scan the delta and the snapshot must agree with
what the fake /proc holds."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from daemoneye.collector.procfs import PAGE_SIZE
from daemoneye.collector.scanner import ProcScanner
from daemoneye.models import ProcessKey, ScanDelta

from .test_scanner import BOOT, USERS, Clock, FakeProc, start_time

PIDS = st.integers(min_value=10, max_value=25)


@dataclass
class Modeled:
    """One process as the fake /proc holds it."""

    start: int
    comm: str
    exe: str
    cmdline: tuple[str, ...]
    rss: int = 100
    scanned_comm: str | None = None  # the name the last scan saw


PROGRAMS = st.sampled_from(["sleep", "bash", "curl", "python3", "a) (b", "x y"])


class ScannerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp())
        self.proc = FakeProc(self.tmp / "proc")
        self.clock = Clock()
        self.scanner = ProcScanner(
            str(self.proc.root),
            boot_time=BOOT,
            clock=self.clock,
            user_names=USERS.get,
            update_interval=3.0,
        )
        self.live: dict[int, Modeled] = {}  # pid -> what the fake /proc holds
        self.next_start = 100
        self.known: set[ProcessKey] = set()  # what the scanner said so far
        self.last: ScanDelta | None = None

    def teardown(self) -> None:
        shutil.rmtree(self.tmp)

    def _spawn(self, pid: int, program: str) -> None:
        self.next_start += 7
        exe, cmdline = f"/usr/bin/{program}", (program, str(self.next_start))
        self.proc.spawn(pid, program, start=self.next_start, exe=exe, cmdline=cmdline)
        self.live[pid] = Modeled(self.next_start, program, exe, cmdline)

    @rule(pid=PIDS, program=PROGRAMS)
    def spawn(self, pid: int, program: str) -> None:
        if pid not in self.live:
            self._spawn(pid, program)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.live)))
        self.proc.kill(pid)
        del self.live[pid]

    @precondition(lambda self: self.live)
    @rule(data=st.data(), program=PROGRAMS)
    def reuse(self, data: st.DataObject, program: str) -> None:
        """The pid exits and is handed to a new process before the next scan."""
        pid = data.draw(st.sampled_from(sorted(self.live)))
        self._spawn(pid, program)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), program=PROGRAMS)
    def exec(self, data: st.DataObject, program: str) -> None:
        pid = data.draw(st.sampled_from(sorted(self.live)))
        state = self.live[pid]
        if program == state.scanned_comm:
            return  # ends with the name the last scan saw: invisible to a poller (documented)
        exe, cmdline = f"/usr/bin/{program}", (program, "exec")
        self.proc.exec(pid, program, exe, cmdline)
        state.exe, state.cmdline, state.comm = exe, cmdline, program

    @precondition(lambda self: self.live)
    @rule(data=st.data(), rss=st.integers(min_value=1, max_value=5000))
    def grow(self, data: st.DataObject, rss: int) -> None:
        pid = data.draw(st.sampled_from(sorted(self.live)))
        self.proc.change(pid, rss=rss)
        self.live[pid].rss = rss

    @rule(seconds=st.sampled_from([0.5, 1.0, 4.0]))
    def scan(self, seconds: float) -> None:
        self.clock.now += seconds
        before = set(self.known)
        delta = self.scanner.scan()
        added = {r.key for r in delta.added}
        ended = set(delta.ended)
        execed = {r.key for r in delta.execed}
        assert not added & before, "an instance was added twice"
        assert ended <= before, "an unknown instance ended"
        assert execed <= before - ended, "an exec of an instance not alive"
        assert len(added) == len(delta.added) and len(ended) == len(delta.ended)
        kinds = sorted(e.kind for e in delta.events)
        assert kinds == sorted(
            ["start"] * len(added) + ["exit"] * len(ended) + ["exec"] * len(execed)
        )
        self.known = (before - ended) | added
        self.last = delta
        # right after a scan, the scanner sees exactly what the fake /proc holds
        snapshot = self.scanner.snapshot()
        assert set(snapshot) == {
            ProcessKey(pid, start_time(s.start)) for pid, s in self.live.items()
        }
        for pid, state in self.live.items():
            state.scanned_comm = state.comm
            record = snapshot[ProcessKey(pid, start_time(state.start))]
            assert (record.exe, record.cmdline, record.rss) == (
                state.exe,
                state.cmdline,
                state.rss * PAGE_SIZE,
            )

    @invariant()
    def snapshot_matches_the_last_scan(self) -> None:
        snapshot = self.scanner.snapshot()
        assert set(snapshot) == self.known
        if self.last is None:
            return
        for record in self.last.added + self.last.execed + self.last.updated:
            assert snapshot[record.key].exe == record.exe


ScannerModel.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestScannerModel = ScannerModel.TestCase
