"""The syslog sink against a real rsyslog on loopback: RFC 5424 over UDP, and over TCP with
octet counting (RFC 6587), checked in what rsyslog itself parsed and wrote."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from py_ocsf_models.events.findings.detection_finding import DetectionFinding

from daemoneye.config.sink_values import SyslogAddress
from daemoneye.engine.sinks import SinkError
from daemoneye.engine.sinks.syslog import SyslogSink

RSYSLOGD = shutil.which("rsyslogd") or (
    "/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None
)
pytestmark = pytest.mark.skipif(
    RSYSLOGD is None, reason="rsyslogd is not installed (.ci/run installs the rsyslog package)"
)

# One line per message, fields rsyslog parsed out of the RFC 5424 header, `|`-separated.
_CONFIG = """
global(workDirectory="{work}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="fields" type="string"
         string="%pri%|%protocol-version%|%timereported:::date-rfc3339%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%msg%\\n")
*.* action(type="omfile" file="{out}" template="fields")
"""


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Rsyslog:
    udp: int
    tcp: int
    out: Path
    process: subprocess.Popen[bytes]

    def lines(self, count: int, timeout: float = 10.0) -> list[list[str]]:
        """The first `count` lines rsyslog wrote, split into fields (waits for them)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.out.read_text("utf-8") if self.out.exists() else ""
            lines = text.splitlines()
            if len(lines) >= count or time.monotonic() > deadline:
                return [line.split("|", 8) for line in lines]
            time.sleep(0.05)


def _start(tmp_path: Path, udp: int, tcp: int) -> Rsyslog:
    assert RSYSLOGD is not None
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    out = tmp_path / "out.log"
    config = tmp_path / "rsyslog.conf"
    config.write_text(_CONFIG.format(work=work, udp=udp, tcp=tcp, out=out))
    process = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(config), "-i", str(tmp_path / "rsyslog.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # ready when its TCP input accepts
        try:
            socket.create_connection(("127.0.0.1", tcp), timeout=0.2).close()
            return Rsyslog(udp, tcp, out, process)
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    _, err = process.communicate()
    pytest.fail(f"rsyslogd did not start: {err.decode(errors='replace')}")


def _stop(server: Rsyslog) -> None:
    server.process.terminate()
    try:
        server.process.wait(5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    server = _start(tmp_path, _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM))
    yield server
    _stop(server)


def payload(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event": "alert.raised",
        "event_id": "web-1/7/1",
        "ts": 1714564800.25,
        "host": "web-1",
        "alert_id": 7,
        "occurrence": 1,
        "rule_id": "exec-tmp",
        "rule_name": "Execution from /tmp",
        "severity": "high",
        "title": "Execution from /tmp: /tmp/x",
        "pid": 4242,
        "start_time": 1714564790.5,
        "first_seen": 1714564800.0,
        "last_seen": 1714564800.0,
        "count": 1,
        "state": "open",
        "tags": ["T1059"],
        "row": {"exe": "/tmp/x"},
    }
    base.update(changes)
    return base


def _sink(transport: str, server: Rsyslog, **kwargs: Any) -> SyslogSink:
    port = server.udp if transport == "udp" else server.tcp
    return SyslogSink(
        SyslogAddress(transport, host="127.0.0.1", port=port),
        hostname="web-1",
        facility="auth",
        **kwargs,
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rsyslog_parses_every_header_field(rsyslog: Rsyslog, transport: str) -> None:
    sink = _sink(transport, rsyslog)
    sink.deliver(payload())
    sink.close()
    ((pri, version, stamp, host, app, procid, msgid, sd, msg),) = rsyslog.lines(1)
    assert pri == str(4 * 8 + 3)  # facility auth (4), severity high → error (3)
    assert version == "1"
    assert stamp.startswith("2024-05-01T12:00:00.25")
    assert (host, app, msgid) == ("web-1", "daemoneye", "alert.raised")
    assert procid.isdigit()
    assert sd.startswith("[daemoneye@32473 ") and 'event_id="web-1/7/1"' in sd
    assert msg.strip() == "HIGH exec-tmp pid 4242: Execution from /tmp: /tmp/x (alert 7)"


def test_tcp_octet_counting_keeps_messages_apart(rsyslog: Rsyslog) -> None:
    """Titles with newlines would split non-transparent framing; octet counting may not care,
    and the sink escapes them anyway: three alerts are three records, in order."""
    sink = _sink("tcp", rsyslog)
    for n in range(3):
        sink.deliver(payload(alert_id=n, title=f"line one\nline two {n}"))
    sink.close()
    lines = rsyslog.lines(3)
    assert len(lines) == 3
    assert [line[8].strip() for line in lines] == [
        f"HIGH exec-tmp pid 4242: line one\\nline two {n} (alert {n})" for n in range(3)
    ]


def test_an_ocsf_document_arrives_whole_over_tcp(rsyslog: Rsyslog) -> None:
    sink = _sink("tcp", rsyslog, fmt="ocsf")
    sink.deliver(payload(row={"exe": "/tmp/x", "cmdline": "x " + "A" * 3000}))
    sink.close()
    ((*_, msg),) = rsyslog.lines(1)
    doc = json.loads(msg)
    DetectionFinding.model_validate(doc)
    assert doc["evidences"][0]["process"]["cmd_line"].endswith("A" * 3000)


def test_a_restarted_rsyslog_gets_the_next_alert(rsyslog: Rsyslog, tmp_path: Path) -> None:
    sink = _sink("tcp", rsyslog)
    sink.deliver(payload(alert_id=1))
    assert len(rsyslog.lines(1)) == 1
    _stop(rsyslog)
    with pytest.raises(SinkError):  # the outbox retries this one later
        sink.deliver(payload(alert_id=2))
    again = _start(tmp_path, rsyslog.udp, rsyslog.tcp)
    try:
        sink.deliver(payload(alert_id=3))
        sink.close()
        lines = again.lines(2)
    finally:
        _stop(again)
    assert [line[8].strip()[-9:] for line in lines] == ["(alert 1)", "(alert 3)"]
