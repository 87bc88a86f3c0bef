"""Process events streamed to sinks beside the alerts (`[stream]`): what is sent, in which
shape, what the rate cap and a slow sink drop (counted), and what the configuration refuses."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from py_ocsf_models.events.base_event import BaseEvent

from daemoneye.config.loading import load_config
from daemoneye.config.schema import StreamConfig
from daemoneye.engine.delivery import DeliveryPolicy
from daemoneye.engine.formats import document
from daemoneye.engine.sinks import PermanentSinkError, SinkError
from daemoneye.engine.sinks.file import FileSink
from daemoneye.engine.sinks.stdout import StdoutSink
from daemoneye.engine.sinks.syslog import format_rfc5424
from daemoneye.engine.stream import EventStream, RateCap, StreamPolicy
from daemoneye.engine.stream_payload import process_payload
from daemoneye.errors import ConfigError
from daemoneye.models import ProcessEvent, ProcessRecord
from tests.unit.conftest import RecordFactory


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ListSink:
    """Takes one payload at a time; fails the first `failures` with `error`."""

    def __init__(self, failures: int = 0, error: type[SinkError] = SinkError) -> None:
        self.name = "list"
        self.failures = failures
        self.error = error
        self.delivered: list[dict[str, Any]] = []
        self.calls = 0

    def deliver(self, payload: Mapping[str, Any]) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise self.error("receiver is down", retry_after=None)
        self.delivered.append(dict(payload))

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


class BatchSink(ListSink):
    def __init__(self, failures: int = 0, error: type[SinkError] = SinkError) -> None:
        super().__init__(failures, error)
        self.requests: list[int] = []

    def deliver_batch(self, payloads: list[Mapping[str, Any]]) -> None:
        self.requests.append(len(payloads))
        if self.failures:
            self.failures -= 1
            raise self.error("receiver is down", retry_after=None)
        self.delivered.extend(dict(p) for p in payloads)


def policy(**changes: Any) -> StreamPolicy:
    return StreamPolicy.from_config(StreamConfig(sinks=("file",), **changes))


def stream(
    sink: ListSink, *, clock: Clock | None = None, **changes: Any
) -> tuple[EventStream, Clock]:
    clock = clock or Clock()
    built = EventStream(
        policy(**changes),
        {"file": sink},
        host="web1",
        delivery=DeliveryPolicy(backoff_base_s=2.0, backoff_max_s=10.0),
        clock=clock,
        jitter=lambda: 1.0,
    )
    return built, clock


def event(kind: str, pid: int = 42, **fields: Any) -> ProcessEvent:
    return ProcessEvent(ts=200.0, kind=kind, pid=pid, start_time=150.0, **fields)


def lookup_of(*records: ProcessRecord) -> Any:
    known = {r.key: r for r in records}
    return lambda key: known.get(key)


def test_the_configured_kinds_pass_and_change_means_every_change(
    make_record: RecordFactory,
) -> None:
    sink = ListSink()
    s, _ = stream(sink)
    rec = make_record(42, 150.0)
    kinds = ["start", "fork", "exec", "exit", "rename", "uid", "ptrace", "cwd", "exe_deleted"]
    s.offer([event(kind) for kind in kinds], lookup_of(rec))
    while s.run_once("file") == 0.0 and s.stats()[0].queued:
        pass
    sent = [p["kind"] for p in sink.delivered]
    assert sent == ["exec", "exit", "rename", "uid", "ptrace", "cwd", "exe_deleted"]


def test_the_filter_reads_the_process_the_event_is_about(make_record: RecordFactory) -> None:
    sink = ListSink()
    s, _ = stream(sink, filter="not:user:root")
    alice = make_record(42, 150.0, user="alice")
    root = make_record(43, 150.0, user="root", uid=0)
    s.offer([event("exec", 42), event("exec", 43), event("exec", 44)], lookup_of(alice, root))
    s.run_once("file")
    # 44 is unknown: a filter cannot be answered without its process, so it is not sent
    assert [p["pid"] for p in sink.delivered] == [42]


def test_the_rate_cap_drops_and_counts_what_is_over_it(make_record: RecordFactory) -> None:
    sink = BatchSink()
    clock = Clock()
    s, _ = stream(sink, clock=clock, rate=10)
    rec = make_record(42, 150.0)
    s.offer([event("exec") for _ in range(25)], lookup_of(rec))
    assert (s.stats()[0].queued, s.dropped_rate) == (10, 15)  # one second's burst
    clock.now += 0.5
    s.offer([event("exec") for _ in range(25)], lookup_of(rec))
    assert (s.stats()[0].queued, s.dropped_rate) == (15, 35)  # half a second's worth more


def test_a_full_queue_drops_new_events_and_counts_them(make_record: RecordFactory) -> None:
    sink = ListSink()
    s, _ = stream(sink, queue=100, rate=10_000)
    s.offer([event("exec", pid) for pid in range(150)], lambda key: None)
    stats = s.stats()[0]
    assert (stats.queued, stats.dropped_queue) == (100, 50)
    s.run_once("file")
    assert sink.delivered[0]["pid"] == 0  # the oldest are kept, the newest dropped


def test_hostile_command_lines_cannot_make_the_queue_hold_more_than_its_bytes(
    make_record: RecordFactory,
) -> None:
    sink = ListSink()
    s, _ = stream(sink, queue=10_000, queue_bytes=1024**2, rate=100_000)
    records = [make_record(pid, 150.0, cmdline=("x" * 128 * 1024,)) for pid in range(200)]
    s.offer([event("exec", pid) for pid in range(200)], lookup_of(*records))
    stats = s.stats()[0]
    # each payload is cut to 32 KiB of argv (about 66 KiB held, argv and cmdline): 15 fit
    assert stats.queued == 15 and stats.dropped_queue == 185
    s.run_once("file")
    assert sink.delivered[0]["truncated"] is True
    assert len(sink.delivered[0]["cmdline"]) == 32 * 1024
    while s.stats()[0].queued:
        s.run_once("file")
    s.offer([event("exec", 7)], lookup_of(*records))  # the bytes were given back
    assert s.stats()[0].queued == 1


def test_a_batch_sink_gets_one_request_per_batch() -> None:
    sink = BatchSink()
    s, _ = stream(sink, rate=10_000)
    s.offer([event("exec", pid) for pid in range(250)], lambda key: None)
    while s.stats()[0].queued:
        s.run_once("file")
    assert sink.requests == [100, 100, 50]
    assert s.stats()[0].sent == 250


def test_a_failing_sink_keeps_its_queue_and_backs_off() -> None:
    sink = BatchSink(failures=2)
    s, _ = stream(sink, rate=10_000)
    s.offer([event("exec", pid) for pid in range(3)], lambda key: None)
    assert s.run_once("file") == 4.0  # base 2 * 2**1
    assert s.run_once("file") == 8.0  # the second failure in a row waits twice as long
    stats = s.stats()[0]
    assert (stats.queued, stats.sent, stats.last_error) == (3, 0, "receiver is down")
    assert s.run_once("file") == 0.0
    assert [p["pid"] for p in sink.delivered] == [0, 1, 2]
    assert s.stats()[0].last_error is None


def test_one_at_a_time_a_failure_never_sends_the_first_events_again() -> None:
    sink = ListSink()
    s, _ = stream(sink, rate=10_000)
    s.offer([event("exec", pid) for pid in range(3)], lambda key: None)
    s.run_once("file")
    sink.failures = 1
    assert s.run_once("file") > 0
    while s.stats()[0].queued:
        s.run_once("file")
    assert [p["pid"] for p in sink.delivered] == [0, 1, 2]


def test_a_refusing_sink_counts_the_refused_and_moves_on() -> None:
    sink = BatchSink(failures=1, error=PermanentSinkError)
    s, _ = stream(sink, rate=10_000)
    s.offer([event("exec", 1)], lambda key: None)
    assert s.run_once("file") == 0.0
    s.offer([event("exec", 2)], lambda key: None)
    s.run_once("file")
    stats = s.stats()[0]
    assert (stats.refused, stats.sent, stats.queued) == (1, 1, 0)


def test_the_threads_deliver_what_is_offered(tmp_path: Path, make_record: RecordFactory) -> None:
    path = tmp_path / "events.jsonl"
    s = EventStream(policy(rate=10_000), {"file": FileSink(path, fsync=False)}, host="web1")
    s.start()
    s.offer([event("exec", pid) for pid in range(20)], lambda key: None)
    s.stop(timeout=10.0)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["pid"] for line in lines] == list(range(20))
    assert {line["event"] for line in lines} == {"process.exec"}


def test_rate_cap_refills_with_time() -> None:
    clock = Clock()
    cap = RateCap(2, clock)
    assert [cap.take() for _ in range(3)] == [True, True, False]
    clock.now += 1.0
    assert [cap.take() for _ in range(3)] == [True, True, False]


# -- payload and formats ---------------------------------------------------------------------


def test_the_native_payload_carries_the_process_as_known(make_record: RecordFactory) -> None:
    rec = make_record(
        42, 150.0, name="sh", cmdline=("/bin/sh", "-c", "echo \x1b[2J"), container_id="3f2a"
    )
    payload = process_payload(event("exec", exe="/usr/bin/dash"), rec, "web1")
    assert payload["event"] == "process.exec"
    assert payload["argv"] == ["/bin/sh", "-c", "echo \x1b[2J"]  # the exact bytes, as data
    assert (payload["exe"], payload["user"], payload["container_id"]) == (
        "/usr/bin/dash",
        "alice",
        "3f2a",
    )
    assert payload["event_id"] == process_payload(event("exec"), rec, "web1")["event_id"]


def _ocsf_checked(doc: Mapping[str, Any]) -> None:
    """The document against py-ocsf-models' base event, and against OCSF 1.5.0's Process
    Activity class as the schema defines it: the library has no model of that class, and its
    Device and User models require attributes OCSF's device and user objects do not (ip, region
    and uid; account and type_id), so those are checked here as the schema has them."""
    BaseEvent.model_validate(doc)
    assert doc["device"]["type_id"] == 0 and doc["device"]["hostname"]
    user = doc["process"].get("user", {})
    assert set(user) <= {"uid", "name"} and all(isinstance(v, str) for v in user.values())
    required = ("activity_id", "actor", "category_uid", "class_uid", "device", "metadata")
    assert all(key in doc for key in (*required, "process", "severity_id", "time", "type_uid"))
    assert (doc["class_uid"], doc["category_uid"]) == (1007, 1)
    assert doc["activity_id"] in (1, 2, 3, 4, 5, 99)
    assert doc["type_uid"] == 100700 + doc["activity_id"]
    assert isinstance(doc["time"], int) and isinstance(doc["process"]["pid"], int)
    assert "process" in doc["actor"] or "user" in doc["actor"]


@pytest.mark.parametrize(
    ("kind", "activity"),
    [("exec", 1), ("exit", 2), ("ptrace", 4), ("uid", 5), ("rename", 99), ("cwd", 99)],
)
def test_ocsf_process_activity_validates(
    make_record: RecordFactory, kind: str, activity: int
) -> None:
    rec = make_record(42, 150.0)
    fields: dict[str, Any] = {"exit_code": -9} if kind == "exit" else {}
    if kind in ("ptrace", "uid", "rename", "cwd"):
        fields.update(old_value="1000", new_value="77")
    doc = dict(document(process_payload(event(kind, **fields), rec, "web1"), "ocsf"))
    _ocsf_checked(doc)
    assert doc["activity_id"] == activity
    assert doc["process"]["cmd_line"] == "sleep 60"
    if kind == "exit":
        assert doc["exit_code"] == -9 and "terminated_time" in doc["process"]
    if kind == "ptrace":
        assert doc["actor"]["process"]["pid"] == 77  # the tracer did it


def test_ocsf_process_activity_of_an_unknown_process_validates() -> None:
    _ocsf_checked(dict(document(process_payload(event("exit"), None, "web1"), "ocsf")))


def test_ecs_process_event(make_record: RecordFactory) -> None:
    rec = make_record(42, 150.0, container_id="3f2a", container_runtime="docker")
    doc = document(process_payload(event("exit", exit_code=3), rec, "web1"), "ecs")
    assert doc["event"]["kind"] == "event" and doc["event"]["type"] == ["end"]
    assert doc["process"]["exit_code"] == 3 and doc["process"]["args"] == ["sleep", "60"]
    assert doc["container"] == {"id": "3f2a", "runtime": "docker"}
    assert doc["user"] == {"id": "1000", "name": "alice"}


def test_text_sinks_say_what_happened(make_record: RecordFactory) -> None:
    rec = make_record(42, 150.0, cmdline=("sh", "-c", "\x1b]0;x\x07"))
    out = io.StringIO()
    StdoutSink("human", out).deliver(process_payload(event("exec"), rec, "web1"))
    line = out.getvalue()
    assert "EXEC pid 42 ppid 1 user alice: sh -c " in line and "\x1b" not in line
    out = io.StringIO()
    StdoutSink("human", out).deliver(process_payload(event("exit", exit_code=-9), rec, "web1"))
    assert "killed by signal 9" in out.getvalue()
    message = format_rfc5424(
        process_payload(event("exec"), rec, "web1"),
        facility="daemon",
        app_name="daemoneye",
        hostname="web1",
        procid=1,
    )
    assert message.startswith(b"<30>1 ")  # daemon.info
    assert b'kind="exec"' in message


def test_a_huge_command_line_still_fits_a_udp_syslog_message_as_json(
    make_record: RecordFactory,
) -> None:
    rec = make_record(42, 150.0, cmdline=("x" * 100_000,))
    message = format_rfc5424(
        process_payload(event("exec"), rec, "web1"),
        facility="daemon",
        app_name="daemoneye",
        hostname="web1",
        procid=1,
        max_bytes=2048,
        fmt="ecs",
    )
    assert len(message) <= 2048
    json.loads(message.split(b"] ", 1)[1])  # whole JSON, the command line shortened


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        ('sinks = ["kafka"]', "stream.sinks", "not a sink"),
        ('kinds = ["exec", "clone"]', "stream.kinds", "not an event kind"),
        ('filter = "port:22"', "stream.filter", "port: and remote:"),
        ('filter = "alerted"', "stream.filter", "alerted"),
        ('filter = "user:root not:alerted"', "stream.filter", "alerted"),
        ("filter = \"'-alerted'\"", "stream.filter", "alerted"),
        ('filter = "cpu:>x"', "stream.filter", "expected a number"),
        ("rate = 0", "stream.rate", ""),
    ],
)
def test_a_bad_stream_key_is_refused_by_name(tmp_path: Path, text: str, key: str, why: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[stream]\n{text}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as caught:
        load_config(config_file=config, env={})
    assert why in str(caught.value)


def test_a_stream_sink_must_be_enabled(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[stream]\nsinks = ["file"]\n')
    loaded = load_config(config_file=config, env={})
    with pytest.raises(ConfigError, match=r"stream\.sinks: 'file' is not enabled"):
        EventStream.from_config(loaded.config)


def test_no_stream_sinks_means_no_stream(tmp_path: Path) -> None:
    assert EventStream.from_config(load_config(env={}).config) is None


def test_stream_from_config_builds_its_own_sink(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[sinks.file]\nenabled = true\npath = "{tmp_path / "a.jsonl"}"\nformat = "ecs"\n'
        '[stream]\nsinks = ["file"]\nkinds = ["exit"]\nrate = 5\n'
    )
    built = EventStream.from_config(load_config(config_file=config, env={}).config)
    assert built is not None
    assert built.policy.kinds == frozenset({"exit"}) and built.policy.rate == 5
    built.offer([event("exit")], lambda key: None)
    built.run_once("file")
    (line,) = (tmp_path / "a.jsonl").read_text().splitlines()
    assert json.loads(line)["event"]["dataset"] == "daemoneye.process"


def test_a_filter_that_only_names_alerted_as_text_is_taken() -> None:
    from daemoneye.config.schema import check_stream_filter

    check_stream_filter("name:alerted cmd:--alerted")  # text, not the term
