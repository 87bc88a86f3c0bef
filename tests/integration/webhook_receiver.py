"""A real HTTP(S) server in a thread that plays a webhook receiver: it answers each request
with the next scripted status (or blocks), and records what arrived."""

from __future__ import annotations

import json
import socket
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


@dataclass
class Trickler:
    """A receiver that reads the request, then sends its answer one byte every `every_s`
    seconds: the whole answer (`head` + a body of `body_bytes`), or, with `head_only`, only
    the status line and headers, slowly. `sent` counts the bytes it got out before the
    client went away; `requests` the requests it read."""

    body_bytes: int = 40
    every_s: float = 0.05
    head_only: bool = False
    sent: int = 0
    requests: int = 0
    url: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    hung_up: bool = False  # the client closed the connection before the answer was out

    def answer(self) -> bytes:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {self.body_bytes}\r\n\r\n".encode()
        return head + b"x" * self.body_bytes

    def slow_part(self) -> int:
        """Bytes sent at once before the trickle starts (the whole head unless head_only)."""
        return 0 if self.head_only else len(self.answer()) - self.body_bytes


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


@contextmanager
def serve_trickle(trickler: Trickler) -> Iterator[Trickler]:
    """Run `trickler` on a local port (one connection at a time) until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    trickler.url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                _read_request(conn)
                trickler.requests += 1
                answer = trickler.answer()
                fast = trickler.slow_part()
                try:
                    conn.sendall(answer[:fast])
                    trickler.sent += fast
                    for index in range(fast, len(answer)):
                        if stop.wait(trickler.every_s):
                            break
                        conn.sendall(answer[index : index + 1])
                        trickler.sent += 1
                except OSError:  # the client hung up: what a test of a deadline waits for
                    trickler.hung_up = True
            trickler.done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield trickler
    finally:
        stop.set()
        thread.join(5)
        listener.close()
