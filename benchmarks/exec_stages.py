"""Where the CPU of one exec goes, step by step, measured in one process in the same run.

The sustained benchmark (events_bench.run_sustained) gives the daemon's whole CPU per exec; this
one takes the path apart, on real processes and the daemon's own code, thread CPU time per exec:

1. reader — procmond's event reader for one fork, exec and exit of a process it has never seen
   (`ProcEventSource.prefetch_execs` + `handle`: every /proc read at exec, its context included);
   run again with the context reader off, the difference is what the context costs. Where the
   eBPF exec capture loads (root), both are run again with it, as the daemon runs: its records
   collected from the rings, and what they hold not read from /proc. The steps after the reader
   then take that reader's output;
2. feed + encode — procmond's main thread: `EventFeed.take` (records from the events) and the
   EVENTS frame's encoding;
3. decode — the agent's reader thread: the frame checked and decoded whole;
4. store + rules — the agent's worker: `Collection.apply_frames` with the built-in rules over a
   temp store, ten frames per transaction (as the agent's busy coalescing window gives them).

Each round spawns fresh processes (`sh -c 'read x' ARG`, blocked on a pipe), because the first
read of a /proc/<pid> file costs the kernel an inode and a dentry that later reads reuse: a
reader that reread the same processes would measure a warm cache that execs never see.

The reference, in the same rounds, is the read floor: the same files opened, read and closed
(and the same links read) through the /proc/<pid> directory, in Python, with no parsing. What
the sum of the steps costs beyond it is what the design and its Python cost beyond the reads
themselves; what the kernel threads, wake-ups and GIL hand-offs of the real daemon add beyond
the sum is the sustained benchmark's figure minus this one.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.availability import missing
from benchmarks.model import MET, MISSED, NOT_BUILT, SKIPPED, Row, status_row
from benchmarks.stats import Summary, summarize

SECTION = "events"
PER_ROUND = 64
FRAMES_PER_WRITE = 10
TARGET_US = 125.0  # issue 13: procmond + agent per exec at 2,000 exec/s
CONTEXT_LIMIT_US = 20.0  # issue 14: a new process costs at most this much more with context
_SHELL = "/bin/sh"
# What read_instance and the context reader touch under /proc/<pid> for a new process.
_FILES = (b"stat", b"cmdline", b"status", b"cgroup", b"environ", b"loginuid")
_LINKS = (b"exe", b"cwd", b"ns/pid", b"ns/mnt", b"ns/net", b"ns/user", b"fd/0", b"fd/1", b"fd/2")


class _NoConnector:
    """The event source's connector, never opened: the steps are fed decoded messages."""

    overruns = 0
    datagrams_total = 0
    rcvbuf_bytes = 0
    delivers_every_event = False
    filtering = "none"

    def open(self, *, ack_timeout: float = 0.0) -> None:
        raise RuntimeError("not a live connector")

    def fileno(self) -> int:
        return -1

    def recv(self) -> memoryview:
        return memoryview(b"")

    def close(self) -> None:
        return None


@contextmanager
def _fresh_processes(count: int, token: str) -> Iterator[list[int]]:
    """`count` new shells blocked reading a pipe, each with its own argv; killed on exit."""
    children = [
        subprocess.Popen(
            [_SHELL, "-c", "read line", f"{token}-{index}", "x" * 32],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for index in range(count)
    ]
    try:
        time.sleep(0.2)  # each has exec'd the shell and blocks in read
        yield [child.pid for child in children]
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait()


def _read_floor(pids: list[int]) -> float:
    """Thread CPU of opening, reading and closing every file (and reading every link) the
    reader touches for a new process, without parsing."""
    started = time.thread_time()
    for pid in pids:
        dir_fd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in _FILES:
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
                except OSError:
                    continue
                try:
                    os.read(fd, 4096)
                except OSError:
                    pass  # unreadable (e.g. environ of a dying process): the open counted
                finally:
                    os.close(fd)
            for link in _LINKS:
                try:
                    os.readlink(link, dir_fd=dir_fd)
                except OSError:
                    continue
        finally:
            os.close(dir_fd)
    return time.thread_time() - started


class _Stages:
    """The daemon's objects for the four steps, kept across rounds (as they live in the
    daemon); a temp store with the built-in rules."""

    def __init__(self, root: Path) -> None:
        from daemoneye.collector.context import ContextReader
        from daemoneye.collector.procfs import read_boot_time
        from daemoneye.collector.scanner import ProcScanner
        from daemoneye.collector.users import UserNames
        from daemoneye.config.schema import Config
        from daemoneye.daemon.collection import Collection
        from daemoneye.engine.detection import DetectionEngine
        from daemoneye.models import ScanDelta, ScanStats
        from daemoneye.paths import BUILTIN_RULES_DIR
        from daemoneye.procmond import frames
        from daemoneye.store.db import Store

        self.boot_time = read_boot_time()
        self.users = UserNames()
        self.scanner = ProcScanner("/proc", boot_time=self.boot_time, user_names=self.users)
        store = Store.open(root / "stages.db")
        self.collection = Collection(store, Config(), mode="user", event_source="netlink")
        engine = DetectionEngine(store, root / "stages.db", Config(), [BUILTIN_RULES_DIR])
        self.rules = len(engine.load().ruleset.rules)
        self.collection.engine = engine
        hello = frames.Hello(frames.PAIR_VERSION, 1, 0, self.boot_time, "netlink", "", True, "")
        empty = ScanDelta(time.time(), (), (), (), (), (), ScanStats(0.0, 0, 0, 0, 0, 0, 0))
        self.collection.apply_frames([hello, frames.Scan(empty, True, ())])
        self.seq = 0
        # one for every round, as the daemon's reader thread keeps its own for its life
        self.context = ContextReader(b"/proc")

    def close(self) -> None:
        self.scanner.close()
        self.collection.store.close()

    def reader(
        self, pids: list[int], *, context: bool, capture: Any = None
    ) -> tuple[float, list[Any]]:
        """Step 1 for a fork, exec and exit of each pid, in one batch as the reader takes a
        burst (with the exec capture's records drained first, when it is given); returns its
        thread CPU and what it queued."""
        from daemoneye.collector.events import ProcEventSource
        from daemoneye.collector.proc_events import ExecEvent, ExitEvent, ForkEvent

        source = ProcEventSource(
            self.boot_time,
            connector=_NoConnector(),
            user_of=self.users,
            context=self.context if context else None,
            capture=capture,
        )
        now = time.monotonic_ns()
        parent = os.getpid()
        messages: list[Any] = []
        for pid in pids:
            messages.append(ForkEvent(0, self._next(), now, parent, parent, pid, pid))
            messages.append(ExecEvent(0, self._next(), now, pid, pid))
        exits = [ExitEvent(1, self._next(), now, pid, pid, 0, 17, parent, parent) for pid in pids]
        started = time.thread_time()
        if capture is not None:
            capture.collect()
        source.prefetch_execs(messages)
        produced = [observed for m in messages if (observed := source.handle(m)) is not None]
        produced += [observed for m in exits if (observed := source.handle(m)) is not None]
        source.enqueue(produced)
        elapsed = time.thread_time() - started
        if capture is not None and source.uncaptured_total:
            raise RuntimeError(f"{source.uncaptured_total} execs had no capture record")
        return elapsed, [source]

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def feed_encode(self, source: Any) -> tuple[float, float, bytes]:
        """Step 2: (take CPU, encode CPU, the EVENTS frame's payload)."""
        from daemoneye.collector.event_feed import EventFeed
        from daemoneye.procmond import frames

        feed = EventFeed(source, self.scanner, self.users, None)
        started = time.thread_time()
        delta = feed.take()
        taken = time.thread_time()
        assert delta is not None, "the reader queued nothing"
        frame = frames.encode(frames.Events(delta))
        encoded = time.thread_time()
        return taken - started, encoded - taken, frame[frames.HEADER.size :]

    def decode(self, bodies: list[bytes]) -> tuple[float, list[Any]]:
        from daemoneye.procmond import frames

        started = time.thread_time()
        payloads = [frames.decode(frames.Kind.EVENTS, body) for body in bodies]
        return time.thread_time() - started, payloads

    def store_rules(self, payloads: list[Any]) -> float:
        started = time.thread_time()
        self.collection.apply_frames(payloads)
        return time.thread_time() - started


def _renumbered(body: bytes, offset: int) -> bytes:
    """The frame with every pid moved by `offset`: the same execs, as new instances (a store
    that saw an instance would update its row instead of inserting one)."""
    from daemoneye.models import ProcessKey
    from daemoneye.procmond import frames

    events: Any = frames.decode(frames.Kind.EVENTS, body)
    delta = events.delta
    moved = dataclasses.replace(
        delta,
        added=tuple(dataclasses.replace(r, pid=r.pid + offset) for r in delta.added),
        ended=tuple(ProcessKey(k.pid + offset, k.start_time) for k in delta.ended),
        events=tuple(dataclasses.replace(e, pid=e.pid + offset) for e in delta.events),
    )
    return frames.encode(frames.Events(moved))[frames.HEADER.size :]


def run(*, rounds: int) -> tuple[list[Row], dict[str, Any]]:
    reason = missing("daemoneye.collector.events", "ProcEventSource") or missing(
        "daemoneye.daemon.collection", "Collection"
    )
    if reason is not None:
        return [status_row(SECTION, "per-exec steps", NOT_BUILT, reason)], {}
    root = Path(tempfile.mkdtemp(prefix="daemoneye-bench-stages-"))
    stages = _Stages(root)
    capture, no_capture = _open_capture()
    samples: dict[str, list[float]] = {
        key: []
        for key in (
            "floor",
            "reader",
            "bare",
            "captured",
            "captured_bare",
            "take",
            "encode",
            "decode",
            "store",
        )
    }
    try:
        for round_index in range(rounds):
            token = f"stages-{os.getpid()}-{round_index}"
            with _fresh_processes(PER_ROUND, token + "f") as pids:
                samples["floor"].append(_read_floor(pids) / len(pids))
            with _fresh_processes(PER_ROUND, token + "b") as pids:
                bare, _ = stages.reader(pids, context=False)
                samples["bare"].append(bare / len(pids))
            with _fresh_processes(PER_ROUND, token + "r") as pids:
                reader, (source,) = stages.reader(pids, context=True)
                samples["reader"].append(reader / len(pids))
            if capture is not None:
                _settle(capture)
                with _fresh_processes(PER_ROUND, token + "cb") as pids:
                    bare, _ = stages.reader(pids, context=False, capture=capture)
                    samples["captured_bare"].append(bare / len(pids))
                _settle(capture)
                with _fresh_processes(PER_ROUND, token + "c") as pids:
                    reader, (source,) = stages.reader(pids, context=True, capture=capture)
                    samples["captured"].append(reader / len(pids))
            take, encode, body = stages.feed_encode(source)
            samples["take"].append(take / PER_ROUND)
            samples["encode"].append(encode / PER_ROUND)
            # one agent transaction: FRAMES_PER_WRITE frames of distinct instances
            offset = 10_000_000 + round_index * FRAMES_PER_WRITE * 100_000
            bodies = [_renumbered(body, offset + i * 100_000) for i in range(FRAMES_PER_WRITE)]
            decode, payloads = stages.decode(bodies)
            samples["decode"].append(decode / (PER_ROUND * FRAMES_PER_WRITE))
            samples["store"].append(stages.store_rules(payloads) / (PER_ROUND * FRAMES_PER_WRITE))
    finally:
        stages.close()
        if capture is not None:
            capture.close()
    return _rows(samples, stages.rules, no_capture), {k: v for k, v in samples.items()}


def _settle(capture: Any) -> None:
    """Drain the rings and drop what waits: the processes of the other rounds exec'd too, and
    their records would be charged to the next round's reader."""
    capture.collect()
    capture.forget()


def _open_capture() -> tuple[Any, str | None]:
    """The exec capture as procmond loads it, or None and why not."""
    try:
        from daemoneye.collector.btf import BtfError
        from daemoneye.collector.exec_capture import ExecCapture
    except ImportError as error:
        return None, f"not built: {error}"
    try:
        return ExecCapture.open(), None
    except (OSError, BtfError) as error:
        return None, str(error)


def _rows(samples: dict[str, list[float]], rules: int, no_capture: str | None) -> list[Row]:
    def micro(key: str) -> list[float]:
        return [sample * 1e6 for sample in samples[key]]

    floor = micro("floor")
    captured = no_capture is None
    reader_key = "captured" if captured else "reader"
    total = [
        sum(parts)
        for parts in zip(
            micro(reader_key),
            micro("take"),
            micro("encode"),
            micro("decode"),
            micro("store"),
            strict=True,
        )
    ]
    context = [a - b for a, b in zip(micro("reader"), micro("bare"), strict=True)]
    captured_context = [
        a - b for a, b in zip(micro("captured"), micro("captured_bare"), strict=True)
    ]

    def ratio(values: list[float]) -> Summary:
        return summarize([v / f for v, f in zip(values, floor, strict=True) if f > 0])

    reference = "Python read floor (same files, no parsing), same rounds"
    label = "per exec, step by step"
    rows = [
        Row(
            SECTION,
            f"{label}: read floor (open+read+close, readlink)",
            None,
            summarize(floor),
            "µs",
            note=f"{len(_FILES)} files and {len(_LINKS)} links of a process never read before",
        ),
        Row(
            SECTION,
            f"{label}: procmond reader (fork+exec+exit)",
            None,
            summarize(micro("reader")),
            "µs",
            reference,
            ratio(micro("reader")),
            note="every /proc read at exec, context included; of it the context: "
            f"{summarize(context).median:.0f} µs",
        ),
        *_captured_rows(label, micro("captured"), captured_context, ratio, no_capture),
        Row(SECTION, f"{label}: procmond feed", None, summarize(micro("take")), "µs"),
        Row(SECTION, f"{label}: procmond encode", None, summarize(micro("encode")), "µs"),
        Row(SECTION, f"{label}: agent decode", None, summarize(micro("decode")), "µs"),
        Row(
            SECTION,
            f"{label}: agent store + {rules} rules",
            None,
            summarize(micro("store")),
            "µs",
            note=f"{FRAMES_PER_WRITE} frames of {PER_ROUND} execs per transaction",
        ),
        Row(
            SECTION,
            f"{label}: sum of the steps",
            None,
            summarize(total),
            "µs",
            reference,
            ratio(total),
            f"≤ {TARGET_US:g} µs",
            MET if summarize(total).median <= TARGET_US else MISSED,
            note="what the code costs per exec before threads, wake-ups and the pair; the "
            "sustained row's per-exec figure minus this is what those cost; the reader "
            + ("with the exec capture" if captured else f"without the exec capture ({no_capture})"),
        ),
    ]
    return rows


def _captured_rows(
    label: str,
    reader: list[float],
    context: list[float],
    ratio: Any,
    no_capture: str | None,
) -> list[Row]:
    if no_capture is not None:
        return [status_row(SECTION, f"{label}: procmond reader, exec capture", SKIPPED, no_capture)]
    added = summarize(context)
    return [
        Row(
            SECTION,
            f"{label}: procmond reader, exec capture (fork+exec+exit)",
            None,
            summarize(reader),
            "µs",
            "Python read floor (same files, no parsing), same rounds",
            ratio(reader),
            note="as the daemon runs as root: the rings drained, and what the records hold "
            "(argv, exe, ids, namespaces, cgroup id, login uid, stdio, environment) not read",
        ),
        Row(
            SECTION,
            f"{label}: context per new process, exec capture (added, CPU)",
            None,
            added,
            "µs",
            "the same reader without context",
            None,
            f"≤{CONTEXT_LIMIT_US:g} µs more per new process",
            MET if added.median <= CONTEXT_LIMIT_US else MISSED,
            "how the daemon meets a new process as root: the reader with and without the "
            "context reader, fresh processes each round; a process found by a scan instead "
            "(user mode, the first scan) costs the collector section's figure",
        ),
    ]
