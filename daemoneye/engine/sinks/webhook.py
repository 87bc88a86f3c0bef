"""The webhook sink: each alert POSTed as JSON with the standard library's urllib.

A 2xx answer means delivered. 5xx, 408, 429, timeouts, refused connections and TLS failures are
transient (retried; a Retry-After header is honoured); any other 4xx means the receiver will
never take this request, so it is dead-lettered. Redirects are not followed: urllib would turn
the POST into a GET without the body and a 2xx from the new location would lose the alert, so a
3xx is permanent and says to configure the final URL. TLS certificates and host names are
verified unless `verify_tls` is off; `ca_file` trusts a private CA instead of the system's.

`timeout` bounds the whole delivery — connecting, sending, the status line, the headers and the
body — not each socket operation: a receiver that answers and then trickles a byte at a time
would otherwise hold the sink's thread for as long as it likes. A watchdog shuts the request's
socket down when the deadline passes, which ends any read or write in progress.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from email.message import Message
from typing import Any

from daemoneye import __version__
from daemoneye.config.schema import WebhookSinkConfig
from daemoneye.config.sink_values import redact_url
from daemoneye.engine.formats import document
from daemoneye.engine.sinks.base import PermanentSinkError, SinkError
from daemoneye.errors import ConfigError
from daemoneye.text import json_text, shorten, visible

# How much of an error response is read (and quoted, shortened) in the error message.
_ERROR_BODY_BYTES = 2048
_RETRYABLE_4XX = frozenset({408, 429})


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Turn every 3xx into an HTTPError instead of a body-less GET to the new location."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> None:
        return None


class _Connections:
    """The HTTP connections one request opened, so a watchdog can cut them at the deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[http.client.HTTPConnection] = []
        self._cut = False  # the watchdog fired while the request was in progress
        self._over = False  # the request has finished; the watchdog no longer matters

    def factory(self, base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        connections = self

        class Tracked(base):  # type: ignore[valid-type,misc]
            def connect(self) -> None:
                with connections._lock:
                    if connections._cut:
                        raise TimeoutError("the delivery deadline passed")
                    connections._open.append(self)
                super().connect()

        return Tracked

    def cut(self) -> None:
        """Shut every socket down (watchdog thread): a blocked read or write returns at once."""
        with self._lock:
            if self._over:
                return
            self._cut = True
            for connection in self._open:
                sock = connection.sock
                if sock is not None:
                    try:  # socket.socket's own shutdown: SSLSocket's would drop its TLS state
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                    except OSError:
                        continue  # closed already: nothing left to cut

    def finish(self) -> bool:
        """The request is over (later cuts do nothing); True when the deadline cut it."""
        with self._lock:
            self._over = True
            self._open.clear()
            return self._cut


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, connections: _Connections) -> None:
        super().__init__()
        self._connections = connections

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connections.factory(http.client.HTTPConnection), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, connections: _Connections, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._connections = connections
        self._tls = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            self._connections.factory(http.client.HTTPSConnection), req, context=self._tls
        )


def tls_context(*, verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """A client TLS context: the system's trust store (or `ca_file`), host names checked;
    with `verify` off, no checks at all."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file or None)


class WebhookSink:
    """POSTs each alert payload to `url`."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        verify_tls: bool = True,
        ca_file: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        fmt: str = "native",
    ) -> None:
        self.url = url
        self._format = fmt
        self._shown_url = redact_url(url)
        self._timeout = timeout
        self._headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"daemoneye/{__version__}",
            **dict(headers),
        }
        self._tls = tls_context(verify=verify_tls, ca_file=ca_file)

    def deliver(self, payload: Mapping[str, Any]) -> None:
        doc = document(payload, self._format)
        body = json_text(doc, compact=True).encode("utf-8", "backslashreplace")
        headers = dict(self._headers)
        if payload.get("event_id") is not None:
            headers["X-DaemonEye-Event-Id"] = str(payload["event_id"])  # for receivers' dedup
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        connections = _Connections()
        opener = urllib.request.build_opener(
            _RefuseRedirects(),
            _DeadlineHTTPHandler(connections),
            _DeadlineHTTPSHandler(connections, self._tls),
        )
        deadline = time.monotonic() + self._timeout
        watchdog = threading.Timer(self._timeout, connections.cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            with opener.open(request, timeout=self._timeout) as response:
                _read_until(response, deadline)  # let the connection finish cleanly
            cut = connections.finish()
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._status_error(exc) from None
        except urllib.error.URLError as exc:
            raise SinkError(self._reason(exc.reason, connections.finish())) from exc
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets mid-response
            raise SinkError(self._reason(exc, connections.finish())) from exc
        finally:
            watchdog.cancel()
        if cut:  # the answer was cut short at the deadline: it may not have been a 2xx at all
            raise SinkError(self._reason(TimeoutError(), True))

    def _status_error(self, exc: urllib.error.HTTPError) -> SinkError:
        code = exc.code
        try:
            text = exc.read(_ERROR_BODY_BYTES).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            text = ""
        detail = visible(shorten(" ".join(text.split()), 200))
        message = f"{self._shown_url} answered HTTP {code} {exc.reason}" + (
            f": {detail}" if detail else ""
        )
        if 300 <= code < 400:
            location = exc.headers.get("Location", "?") if exc.headers else "?"
            return PermanentSinkError(
                f"{message}; redirects are not followed (a POST would lose its body): configure "
                f"the final URL ({visible(redact_url(str(location)))})"
            )
        if code >= 500 or code in _RETRYABLE_4XX:
            return SinkError(message, retry_after=_retry_after(exc.headers))
        if 400 <= code < 500:
            return PermanentSinkError(message + " (the request is refused; not retried)")
        return SinkError(message)

    def _reason(self, reason: object, expired: bool = False) -> str:
        if expired or isinstance(reason, TimeoutError):
            return (
                f"{self._shown_url} did not answer within {self._timeout:g} s "
                "(sinks.webhook.timeout bounds the whole delivery)"
            )
        if isinstance(reason, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate verification failed for {self._shown_url}: "
                f"{reason.verify_message or reason} (set sinks.webhook.ca_file to trust a "
                "private CA)"
            )
        if isinstance(reason, OSError) and reason.strerror:
            return f"cannot reach {self._shown_url}: {reason.strerror}"
        return f"cannot reach {self._shown_url}: {reason}"

    def reopen(self) -> None:
        """Connections are per request; nothing to reopen."""

    def close(self) -> None:
        """Nothing held between requests."""


def _read_until(response: http.client.HTTPResponse, deadline: float) -> None:
    """Read and drop the response body, giving up (SinkError) once `deadline` has passed."""
    while True:
        if time.monotonic() >= deadline:
            raise TimeoutError("the delivery deadline passed")
        if not response.read1(65536):
            return


def _retry_after(headers: Message | None) -> float | None:
    """Retry-After in seconds when given as a number (the HTTP-date form is ignored)."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 86400 else None


def build(section: WebhookSinkConfig) -> WebhookSink:
    """The sink of `[sinks.webhook]`; an unreadable `ca_file` is a ConfigError."""
    try:
        return WebhookSink(
            section.url,
            timeout=section.timeout,
            verify_tls=section.verify_tls,
            ca_file=section.ca_file or None,
            headers=section.headers,
            fmt=section.format,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"sinks.webhook.ca_file: cannot load {section.ca_file}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from None
