"""A real HTTP(S) server in a thread that plays a webhook receiver: it answers each request
with the next scripted status (or blocks), and records what arrived."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased: HTTP header names are case-insensitive
    body: dict[str, Any]
    status: int


@dataclass
class Receiver:
    """`script(n)` gives the answer to the n-th request (1-based): a status code, or a
    (status, headers) pair; `hold(n)` True makes that request wait for `release`."""

    script: Callable[[int], int | tuple[int, dict[str, str]]] = lambda n: 200
    hold: Callable[[int], bool] = lambda n: False
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def delivered_event_ids(self) -> list[str]:
        """Event ids of the requests the receiver took (answered 2xx or held)."""
        with self.lock:
            return [r.body["event_id"] for r in self.requests if 200 <= r.status < 300]

    def count(self) -> int:
        with self.lock:
            return len(self.requests)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            with receiver.lock:
                number = len(receiver.requests) + 1
                answer = receiver.script(number)
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                headers_in = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append(Received(self.path, headers_in, body, status))
            if receiver.hold(number):
                receiver.held.set()
                receiver.release.wait(60)
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                reply = b'{"ok":true}' if status < 300 else b"receiver says no"
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except OSError:
                pass  # the client is gone (timed out or killed): nothing to answer

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test output is for the test."""

    return Handler


@contextmanager
def serve(
    receiver: Receiver,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    tls: tuple[str, str] | None = None,
) -> Iterator[Receiver]:
    """Run `receiver` on `host` (HTTPS with `tls` = (cert, key)) until the block ends."""
    server = ThreadingHTTPServer((host, port), _handler(receiver))
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    receiver.url = f"{scheme}://{host}:{server.server_address[1]}/hook"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
