"""The webhook sink against a real local HTTP(S) server: outages and recovery lose no alert,
refusals are dead-lettered, TLS is verified."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.engine.alerts import AlertBook
from daemoneye.engine.delivery import DeliveryPolicy, DeliveryWorker
from daemoneye.engine.outbox import sink_health
from daemoneye.engine.sinks import PermanentSinkError, SinkError
from daemoneye.engine.sinks.webhook import WebhookSink
from daemoneye.models import Detection
from daemoneye.store import Store
from tests.integration.webhook_receiver import Receiver, Trickler, serve, serve_trickle

FAST = DeliveryPolicy(max_attempts=50, backoff_base_s=0.02, backoff_max_s=0.2, poll_interval_s=0.05)


pytestmark = pytest.mark.usefixtures("no_proxy")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "d.db")
    yield opened
    opened.close()


def raise_alerts(store: Store, count: int) -> list[str]:
    """Raise `count` alerts queued for the webhook; their event ids."""
    book = AlertBook(store, sinks=("webhook",), host="h")
    changes = book.record(
        [Detection("r", "high", f"alert {n}", 1000 + n, 1.0, 10.0, ()) for n in range(count)],
        {},
        time.time(),
    )
    return [f"h/{c.alert.id}/1" for c in changes]


def wait_until(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def pending(store: Store) -> int:
    return int(
        str(store.fetch_rows("SELECT count(*) FROM sink_outbox WHERE state = 'pending'")[0][0])
    )


def payload(event_id: str = "h/1/1") -> dict[str, object]:
    return {"event": "alert.raised", "event_id": event_id, "alert_id": 1, "title": "t"}


def test_server_errors_then_recovery_lose_no_alert(store: Store) -> None:
    failures = 8
    receiver = Receiver(script=lambda n: 500 if n <= failures else 200)
    with serve(receiver):
        expected = raise_alerts(store, 6)
        worker = DeliveryWorker(store.path, {"webhook": WebhookSink(receiver.url, timeout=5)}, FAST)
        worker.start()
        try:
            wait_until(lambda: pending(store) == 0, "every alert to be delivered")
        finally:
            assert worker.stop(timeout=10)
    delivered = receiver.delivered_event_ids()
    assert set(delivered) == set(expected)  # each at least once
    assert receiver.count() == failures + len(delivered)
    (health,) = sink_health(store, ["webhook"])
    assert (health.failed_attempts_total, health.delivered_total, health.dead) == (
        failures,
        len(delivered),
        0,
    )
    assert "HTTP 500" in str(health.last_error)


def test_receiver_down_then_up_loses_no_alert(store: Store) -> None:
    with socket.socket() as probe:  # a port nothing listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    expected = raise_alerts(store, 4)
    url = f"http://127.0.0.1:{port}/hook"
    worker = DeliveryWorker(store.path, {"webhook": WebhookSink(url, timeout=2)}, FAST)
    worker.start()
    try:
        wait_until(
            lambda: (
                int(
                    str(
                        store.fetch_rows("SELECT coalesce(sum(attempts), 0) FROM sink_outbox")[0][0]
                    )
                )
                >= 3
            ),
            "failed attempts while the receiver is down",
        )
        assert pending(store) == 4
        receiver = Receiver()
        with serve(receiver, port=port):
            worker.wake()
            wait_until(lambda: pending(store) == 0, "delivery after the receiver came up")
    finally:
        assert worker.stop(timeout=10)
    assert set(receiver.delivered_event_ids()) == set(expected)
    assert "Connection refused" in str(sink_health(store, ["webhook"])[0].last_error)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_a_4xx_refusal_is_dead_lettered_without_retry(store: Store, status: int) -> None:
    receiver = Receiver(script=lambda n: status)
    with serve(receiver):
        raise_alerts(store, 1)
        worker = DeliveryWorker(store.path, {"webhook": WebhookSink(receiver.url)}, FAST)
        worker.start()
        try:
            wait_until(lambda: pending(store) == 0, "the alert to be dead-lettered")
            time.sleep(0.3)  # room for a (wrong) retry to happen
        finally:
            worker.stop(timeout=10)
    assert receiver.count() == 1
    (health,) = sink_health(store, ["webhook"])
    assert (health.dead, health.dead_total, health.delivered_total) == (1, 1, 0)
    assert f"HTTP {status}" in str(health.last_error) and "not retried" in str(health.last_error)


@pytest.mark.parametrize("status", [408, 429, 502, 503])
def test_retryable_statuses_are_retried(status: int) -> None:
    receiver = Receiver(script=lambda n: (status, {"Retry-After": "3"}) if n == 1 else 200)
    with serve(receiver):
        sink = WebhookSink(receiver.url)
        with pytest.raises(SinkError) as raised:
            sink.deliver(payload())
        assert not isinstance(raised.value, PermanentSinkError)
        assert raised.value.retry_after == 3.0
        assert f"HTTP {status}" in str(raised.value) and "receiver says no" in str(raised.value)
        sink.deliver(payload())
    assert receiver.delivered_event_ids() == ["h/1/1"]


def test_redirects_are_not_followed() -> None:
    receiver = Receiver(script=lambda n: (302, {"Location": "http://127.0.0.1:1/elsewhere"}))
    with serve(receiver), pytest.raises(PermanentSinkError, match="redirects are not followed"):
        WebhookSink(receiver.url).deliver(payload())
    assert receiver.count() == 1  # no GET to the new location


def test_body_content_type_and_custom_headers_arrive() -> None:
    receiver = Receiver()
    with serve(receiver):
        WebhookSink(
            receiver.url, headers=(("Authorization", "Bearer t0ken"), ("X-Team", "secops"))
        ).deliver(payload("h/9/2"))
    (request,) = receiver.requests
    assert request.path == "/hook"
    assert request.body == payload("h/9/2")
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["authorization"] == "Bearer t0ken"
    assert request.headers["x-team"] == "secops"
    assert request.headers["x-daemoneye-event-id"] == "h/9/2"
    assert request.headers["user-agent"].startswith("daemoneye/")


def test_a_slow_receiver_times_out_as_a_transient_error() -> None:
    receiver = Receiver(delay_s=2.0)
    with serve(receiver):
        started = time.monotonic()
        with pytest.raises(SinkError, match=r"did not answer within 0.3 s") as raised:
            WebhookSink(receiver.url, timeout=0.3).deliver(payload())
        assert time.monotonic() - started < 1.5
    assert not isinstance(raised.value, PermanentSinkError)


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for localhost/127.0.0.1, made with `openssl req`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            key,
            "-out",
            cert,
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_verification_refuses_a_self_signed_server(self_signed: tuple[str, str]) -> None:
    receiver = Receiver()
    with serve(receiver, tls=self_signed):
        assert receiver.url.startswith("https://")
        with pytest.raises(SinkError, match="TLS certificate verification failed") as raised:
            WebhookSink(receiver.url).deliver(payload())
    assert "self-signed" in str(raised.value) or "self signed" in str(raised.value)
    assert not isinstance(raised.value, PermanentSinkError)  # a renewed cert fixes it
    assert receiver.count() == 0  # nothing was sent to an unverified server


def test_tls_with_the_servers_ca_file_delivers(self_signed: tuple[str, str]) -> None:
    receiver = Receiver()
    with serve(receiver, tls=self_signed):
        WebhookSink(receiver.url, ca_file=self_signed[0]).deliver(payload())
    assert receiver.delivered_event_ids() == ["h/1/1"]


def test_tls_host_name_is_checked_even_with_the_ca_file(self_signed: tuple[str, str]) -> None:
    receiver = Receiver()
    # A trusted certificate on an address it does not name (it names 127.0.0.1, localhost).
    with (
        serve(receiver, host="127.0.0.2", tls=self_signed),
        pytest.raises(SinkError, match=r"TLS certificate verification failed.*127\.0\.0\.2"),
    ):
        WebhookSink(receiver.url, ca_file=self_signed[0], timeout=2).deliver(payload())
    assert receiver.count() == 0


def test_tls_verification_can_be_turned_off(self_signed: tuple[str, str]) -> None:
    receiver = Receiver()
    with serve(receiver, tls=self_signed):
        WebhookSink(receiver.url, verify_tls=False).deliver(payload())
    assert receiver.delivered_event_ids() == ["h/1/1"]


def test_ssl_module_defaults_are_what_the_sink_relies_on() -> None:
    context = ssl.create_default_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize("head_only", [False, True], ids=["trickled-body", "trickled-headers"])
def test_a_trickling_receiver_cannot_hold_a_delivery_past_its_timeout(head_only: bool) -> None:
    """The sink's timeout bounds the whole delivery, not each read: a receiver that answers
    200 and then sends a byte every 50 ms (2 s in all) is cut off at 0.5 s and retried."""
    trickler = Trickler(body_bytes=40, every_s=0.05, head_only=head_only)
    with serve_trickle(trickler):
        sink = WebhookSink(trickler.url, timeout=0.5)
        with pytest.raises(SinkError, match=r"did not answer within 0\.5 s"):
            sink.deliver({"event_id": "h/1/1", "alert_id": 1})
        assert trickler.done.wait(30)
    total = len(trickler.answer())
    assert trickler.requests == 1
    assert trickler.hung_up  # the sink went away mid-answer ...
    assert trickler.sent < total - 10  # ... well before the receiver was done trickling


def test_a_delivery_that_finishes_within_the_timeout_is_not_cut() -> None:
    trickler = Trickler(body_bytes=4, every_s=0.01)
    with serve_trickle(trickler):
        WebhookSink(trickler.url, timeout=30).deliver({"event_id": "h/1/1", "alert_id": 1})
        assert trickler.done.wait(30)
    assert trickler.sent == len(trickler.answer()) and not trickler.hung_up
