"""Every sink's bytes carry process text escaped: no raw DEL, C1 (U+009B, the 8-bit CSI), bidi
override or invisible format character reaches a log pipeline, a terminal or a receiver; the
JSON sinks still parse back to exactly the payload."""

from __future__ import annotations

import http.server
import io
import json
import re
import socket
import threading
from pathlib import Path
from typing import Any, ClassVar

from daemoneye.config.sink_values import parse_syslog_address
from daemoneye.engine.sinks.file import FileSink
from daemoneye.engine.sinks.stdout import StdoutSink
from daemoneye.engine.sinks.syslog import SyslogSink
from daemoneye.engine.sinks.webhook import WebhookSink

HOSTILE = "x\x7fy\x9b2J\u202eexe.sh\u2066z\u200b\x1b]0;t\x07\nFAKE"
# The raw characters (UTF-8 encoded) that must not appear in what a sink sends.
RAW = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e"
    "\u2066-\u2069\ufeff]".encode()
)
RAW_TEXT = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)


def hostile_payload() -> dict[str, Any]:
    return {
        "event": "alert.raised",
        "event_id": "host/7/1",
        "ts": 1714564800.25,
        "alert_id": 7,
        "rule_id": "exec-tmp",
        "severity": "high",
        "title": "Execution of " + HOSTILE,
        "pid": 4242,
        "start_time": 1714564790.5,
        "count": 1,
        "row": {"name": HOSTILE, HOSTILE: [HOSTILE]},
    }


def _assert_escaped_json_line(data: bytes) -> None:
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert not RAW.search(data), data
    for escape in (b"\\u007f", b"\\u009b", b"\\u202e", b"\\u2066", b"\\u200b", b"\\u001b"):
        assert escape in data
    assert json.loads(data) == hostile_payload()


def test_stdout_json_bytes_are_escaped() -> None:
    out = io.StringIO()
    StdoutSink("json", out).deliver(hostile_payload())
    _assert_escaped_json_line(out.getvalue().encode("utf-8"))


def test_stdout_human_bytes_are_escaped() -> None:
    out = io.StringIO()
    StdoutSink("human", out).deliver(hostile_payload())
    line = out.getvalue()
    assert not RAW_TEXT.search(line) and line.count("\n") == 1
    assert "x\\x7fy\\x9b2J\\u202eexe.sh\\u2066z\\u200b\\x1b]0;t\\x07\\nFAKE" in line


def test_file_sink_bytes_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = FileSink(path, fsync=False)
    sink.deliver(hostile_payload())
    sink.close()
    _assert_escaped_json_line(path.read_bytes())


def test_syslog_message_bytes_are_escaped(unix_dgram: tuple[str, socket.socket]) -> None:
    path, receiver = unix_dgram
    sink = SyslogSink(parse_syslog_address(path), hostname="web-1")
    sink.deliver({**hostile_payload(), "rule_id": "r" + HOSTILE, "severity": HOSTILE})
    sink.close()
    message = receiver.recv(65536)
    assert not RAW.search(message), message
    assert b"\n" not in message
    text = message.decode("utf-8")
    # The human MSG part and the structured data both show the characters as escapes.
    assert "Execution of x\\x7fy\\x9b2J\\u202eexe.sh" in text
    assert 'rule="rx\\\\x7fy\\\\x9b2J\\\\u202eexe.sh' in text


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Receiver.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_webhook_body_bytes_are_escaped() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.bodies = []
    try:
        sink = WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/hook", timeout=10)
        sink.deliver(hostile_payload())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    (body,) = _Receiver.bodies
    _assert_escaped_json_line(body + b"\n")
