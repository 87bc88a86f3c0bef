"""A real OTLP/HTTP logs receiver in a thread: decodes each ExportLogsServiceRequest with the
OpenTelemetry protobuf definitions, answers with the next scripted status, keeps what arrived."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest


@dataclass
class LogsReceiver:
    """`script(n)` answers the n-th request (1-based): a status, or (status, headers)."""

    script: Callable[[int], int | tuple[int, dict[str, str]]] = lambda n: 200
    requests: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (status, request)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def records(self) -> list[dict[str, Any]]:
        """Every log record of every request answered 2xx, with its resource's attributes."""
        found: list[dict[str, Any]] = []
        with self.lock:
            for status, request in self.requests:
                if not 200 <= status < 300:
                    continue
                for resource_logs in request.get("resourceLogs", []):
                    resource = resource_logs.get("resource", {})
                    for scope_logs in resource_logs.get("scopeLogs", []):
                        for record in scope_logs.get("logRecords", []):
                            found.append({**record, "resource": resource})
        return found

    def statuses(self) -> list[int]:
        with self.lock:
            return [status for status, _ in self.requests]


def _handler(receiver: LogsReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = ExportLogsServiceRequest()
            request.ParseFromString(self.rfile.read(length))
            with receiver.lock:
                answer = receiver.script(len(receiver.requests) + 1)
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                receiver.requests.append((status, MessageToDict(request)))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def logs_receiver(receiver: LogsReceiver | None = None) -> Iterator[LogsReceiver]:
    receiver = receiver or LogsReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/v1/logs"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
