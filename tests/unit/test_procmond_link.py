"""The agent's reader of the collector pair: whole frames in order, then `Lost` with the reason
when the pair ends or a frame does not validate — nothing of a bad frame is queued."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from daemoneye.config.schema import CollectorConfig
from daemoneye.daemon.procmond_link import Lost, ProcmondLink
from daemoneye.procmond import frames


def reader_over(pair: socket.socket) -> tuple[ProcmondLink, threading.Event]:
    woken = threading.Event()
    link = ProcmondLink(CollectorConfig(), boot_time=1.0, proc_root="/proc", wakeup=woken.set)
    thread = threading.Thread(target=link._read, args=(pair, link.frames), daemon=True)
    thread.start()
    return link, woken


def drain_until_lost(link: ProcmondLink) -> list[object]:
    taken: list[object] = []
    while not taken or not isinstance(taken[-1], Lost):
        taken.append(link.frames.get(timeout=30))
    return taken


HELLO = frames.Hello(frames.PAIR_VERSION, 10, 0, 1.0, "netlink", "", True, "")


def test_a_malformed_frame_ends_the_pair_naming_kind_and_field() -> None:
    procmond, agent = socket.socketpair()
    link, woken = reader_over(agent)
    bad = [[[["x", 1.0], None, None]]]  # Hashes(hashes=(ExeHash(key=ProcessKey("x", …
    body = json.dumps(bad).encode()
    with procmond:
        procmond.sendall(frames.encode(HELLO))
        procmond.sendall(frames.HEADER.pack(len(body), frames.Kind.HASHES) + body)
        procmond.sendall(frames.encode(frames.Hashes(())))  # after the bad one: never read
        taken = drain_until_lost(link)
    assert taken[0] == HELLO
    assert len(taken) == 2
    lost = taken[1]
    assert isinstance(lost, Lost)
    assert "HASHES frame" in lost.reason and "hashes[0].key.pid" in lost.reason
    assert woken.is_set()
    assert link.hello == HELLO


def test_eof_mid_frame_is_a_lost_pair_and_queues_nothing_half() -> None:
    procmond, agent = socket.socketpair()
    link, _ = reader_over(agent)
    data = frames.encode(frames.Hashes(()))
    procmond.sendall(data[:-1])
    procmond.close()
    taken = drain_until_lost(link)
    assert len(taken) == 1
    assert isinstance(taken[0], Lost) and "closed the pair" in taken[0].reason


def test_procmond_may_not_send_an_agent_command() -> None:
    procmond, agent = socket.socketpair()
    link, _ = reader_over(agent)
    with procmond:
        procmond.sendall(frames.encode(frames.Rescan()))
        taken = drain_until_lost(link)
    assert isinstance(taken[0], Lost) and "RESCAN frame" in taken[0].reason


def test_the_loop_is_woken_once_per_batch_and_again_after_each_take() -> None:
    """Under an exec storm procmond sends a frame every few ms: the loop hears of the first
    frame of a batch, not of every one; a frame that arrives after `take` wakes it again."""
    procmond, agent = socket.socketpair()
    wakes: list[int] = []
    link = ProcmondLink(
        CollectorConfig(), boot_time=1.0, proc_root="/proc", wakeup=lambda: wakes.append(1)
    )
    threading.Thread(target=link._read, args=(agent, link.frames), daemon=True).start()
    with procmond:
        for _ in range(5):
            procmond.sendall(frames.encode(frames.Hashes(())))
        taken = [link.frames.get(timeout=30) for _ in range(5)]
        assert len(wakes) == 1
        for payload in taken:  # what `take` would return: put back, then taken whole
            link.frames.put(payload)
        assert len(link.take()) == 5
        procmond.sendall(frames.encode(frames.Hashes(())))
        assert link.frames.get(timeout=30) == frames.Hashes(())
        assert woken_times(wakes, 2) == 2
    assert isinstance(link.frames.get(timeout=30), Lost)
    assert woken_times(wakes, 3) == 3  # the end of the pair always wakes the loop


def woken_times(wakes: list[int], expected: int) -> int:
    """How often the loop was woken, once the reader had the time to reach `expected`: the
    reader queues a frame, then wakes the loop."""
    deadline = time.monotonic() + 30
    while len(wakes) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # a wake-up too many would come right after
    return len(wakes)


def test_a_reader_stopped_while_blocked_on_a_full_queue_never_ends_the_next_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow agent: procmond's frames fill the queue and its reader blocks. The pair is
    stopped and a new one started (a reload that changes collector settings); the old reader,
    unblocked, reads a closed pair: its `Lost` must not be taken for the new procmond's end
    (which would kill it and count a gap)."""
    monkeypatch.setattr("daemoneye.daemon.procmond_link.QUEUE_FRAMES", 2)
    procmonds: list[socket.socket] = []  # their ends of the pairs, as procmond would hold them
    link = ProcmondLink(CollectorConfig(), boot_time=1.0, proc_root="/proc", wakeup=lambda: None)
    monkeypatch.setattr(
        link,
        "_popen",
        lambda theirs: procmonds.append(socket.socket(fileno=os.dup(theirs.fileno()))),
    )
    link.start()
    for _ in range(3):
        procmonds[0].sendall(frames.encode(frames.Hashes(())))
    old_reader, old_queue = link._reader, link.frames
    assert old_reader is not None
    deadline = time.monotonic() + 30
    while not old_queue.full() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert old_queue.full()  # two queued, the reader blocked on the third
    link.stop()
    assert len(link.take()) == 2  # what the agent applies of the stopped procmond
    link.start()
    old_reader.join(30)
    assert not old_reader.is_alive()
    procmonds[1].sendall(frames.encode(frames.Hashes(())))
    assert link.frames.get(timeout=30) == frames.Hashes(())
    assert not any(isinstance(item, Lost) for item in link.take())
    link.stop()
    for end in procmonds:
        end.close()
