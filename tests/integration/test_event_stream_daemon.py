"""A real daemon streaming process events (`[stream]`): a process that runs and exits reaches
the file sink as exec and exit events; the stream is switched on by a reload, and a broken
reload keeps the running stream."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.conftest import DaemonHarness, wait_for


def events_in(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def marked(path: Path, marker: str) -> list[dict[str, Any]]:
    """The events of the processes whose command line carries `marker`, and their exits."""
    found = events_in(path)
    pids = {e["pid"] for e in found if marker in (e.get("cmdline") or "")}
    return [e for e in found if e["pid"] in pids and e.get("event", "").startswith("process.")]


def config_text(sink: Path, stream: str) -> str:
    return f'[sinks.file]\nenabled = true\npath = "{sink}"\nfsync = false\n{stream}'


def run_marked(marker: str) -> int:
    child = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 0.6; exit 3", marker], stdin=subprocess.DEVNULL
    )
    child.wait(timeout=30)
    return child.pid


def test_exec_and_exit_reach_the_sink_and_a_reload_switches_the_stream(
    harness: DaemonHarness,
) -> None:
    sink = harness.root / "events.jsonl"
    config = harness.root / "config" / "daemoneye" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(config_text(sink, ""))
    harness.start(interval="0.2")
    harness.wait_ticks(1)
    run_marked("zz-before-stream-zz")
    harness.wait_ticks(2)
    assert marked(sink, "zz-before-stream-zz") == []  # no [stream]: alerts only

    config.write_text(config_text(sink, '[stream]\nsinks = ["file"]\nkinds = ["exec", "exit"]\n'))
    assert harness.process is not None
    harness.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "process-event stream: to file" in harness.log(), "the stream to start")
    pid = run_marked("zz-streamed-zz")

    def exec_and_exit() -> list[dict[str, Any]] | None:
        found = marked(sink, "zz-streamed-zz")
        kinds = {e["kind"] for e in found}
        return (
            found if {"exec", "exit"} <= kinds or ("start" in kinds and "exit" in kinds) else None
        )

    found = wait_for(exec_and_exit, "the exec and exit events in the file sink")
    assert {e["pid"] for e in found} == {pid}
    exit_event = next(e for e in found if e["kind"] == "exit")
    if exit_event["source"] == "netlink":  # the kernel says how it ended; a scan cannot
        assert exit_event["exit_code"] == 3
    health = json.loads(harness.cli("-o", "json", "health", check=True).stdout)[0]
    assert health["stream_sinks"] == ["file"] and health["stream_sent_total"] >= 2

    # A reload the stream cannot take (its sink is not enabled) keeps the running stream.
    config.write_text(
        '[sinks.file]\nenabled = false\n[stream]\nsinks = ["file"]\nkinds = ["exec", "exit"]\n'
    )
    harness.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "[stream] not changed" in harness.log(), "the refused stream change")
    assert "'file' is not enabled" in harness.log()
    run_marked("zz-still-streamed-zz")
    wait_for(lambda: marked(sink, "zz-still-streamed-zz"), "events after the refused change")
    assert harness.stop() == 0
