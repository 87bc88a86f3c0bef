"""At-least-once across a crash: the delivery worker runs in its own process, is killed with
SIGKILL while a delivery is in flight, and after a restart every alert has reached the
receiver at least once — including the one it was killed in the middle of."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.engine.alerts import AlertBook
from daemoneye.models import Detection
from daemoneye.store import Store
from tests.integration.webhook_receiver import Receiver, serve

ALERTS = 30
KILL_AT = 10  # the request the worker is killed in the middle of

WORKER = """
import sys, time
from daemoneye.engine.delivery import DeliveryPolicy, DeliveryWorker
from daemoneye.engine.sinks.webhook import WebhookSink

worker = DeliveryWorker(sys.argv[1], {"webhook": WebhookSink(sys.argv[2], timeout=30)},
                        DeliveryPolicy(backoff_base_s=0.05, backoff_max_s=0.2,
                                       poll_interval_s=0.05))
worker.start()
print("started", flush=True)
while True:
    time.sleep(1)
"""


pytestmark = pytest.mark.usefixtures("no_proxy")


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def start_worker(
    db: Path, url: str, started: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(db), url],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    started.append(process)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"started"
    return process


def wait_until(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def outbox_states(db: Path) -> dict[str, int]:
    with Store.open_existing(db) as store:
        rows = store.fetch_rows("SELECT state, count(*) FROM sink_outbox GROUP BY state")
    return {str(state): int(str(count)) for state, count in rows}


def test_kill_9_mid_delivery_then_restart_delivers_every_alert_at_least_once(
    tmp_path: Path, workers: list[subprocess.Popen[bytes]]
) -> None:
    db = tmp_path / "d.db"
    with Store.open(db) as store:
        book = AlertBook(store, sinks=("webhook",), host="h")
        changes = book.record(
            [Detection("r", "high", f"alert {n}", 1000 + n, 1.0, 10.0, ()) for n in range(ALERTS)],
            {},
            time.time(),
        )
    expected = {f"h/{c.alert.id}/1" for c in changes}
    assert len(expected) == ALERTS

    # The receiver takes request KILL_AT (it has the body) but does not answer until later.
    receiver = Receiver(hold=lambda n: n == KILL_AT)
    with serve(receiver):
        first = start_worker(db, receiver.url, workers)
        assert receiver.held.wait(60), "the worker never reached the held request"
        in_flight = receiver.requests[KILL_AT - 1].body["event_id"]
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
        states = outbox_states(db)
        assert states.get("delivered", 0) == KILL_AT - 1
        assert states["pending"] == ALERTS - (KILL_AT - 1)  # including the one in flight
        receiver.release.set()

        start_worker(db, receiver.url, workers)
        wait_until(
            lambda: outbox_states(db) == {"delivered": ALERTS},
            "every alert to be delivered after the restart",
        )

    received = receiver.delivered_event_ids()
    assert set(received) == expected  # nothing lost
    assert received.count(in_flight) == 2  # the unconfirmed delivery was made again
    assert len(received) == ALERTS + 1  # and nothing else twice
