"""The stdout, file and syslog sinks against real files and real sockets."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from daemoneye.config.schema import SinksConfig
from daemoneye.config.sink_values import SyslogAddress, parse_syslog_address
from daemoneye.engine.sinks import SinkError, build_sinks, enabled_sink_names
from daemoneye.engine.sinks.base import iso_time
from daemoneye.engine.sinks.file import FileSink
from daemoneye.engine.sinks.stdout import StdoutSink
from daemoneye.engine.sinks.syslog import SyslogSink, format_rfc5424


def payload(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event": "alert.raised",
        "event_id": "host/7/1",
        "ts": 1714564800.25,
        "alert_id": 7,
        "occurrence": 1,
        "rule_id": "exec-tmp",
        "severity": "high",
        "title": "Execution from /tmp: /tmp/x",
        "pid": 4242,
        "start_time": 1714564790.5,
        "count": 1,
        "row": {"exe": "/tmp/x"},
    }
    base.update(overrides)
    return base


# -- stdout ------------------------------------------------------------------------------


def test_stdout_human_line_escapes_control_characters() -> None:
    out = io.StringIO()
    StdoutSink("human", out).deliver(payload(title="evil\x1b[2J\nname\u202e"))
    assert out.getvalue() == (
        "2024-05-01T12:00:00.250000Z HIGH exec-tmp pid 4242: evil\\x1b[2J\\nname\\u202e (alert 7)\n"
    )


def test_stdout_json_is_one_object_per_line() -> None:
    out = io.StringIO()
    sink = StdoutSink("json", out)
    sink.deliver(payload(title="a\nb"))
    sink.deliver(payload(alert_id=8))
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["alert_id"] for line in lines] == [7, 8]
    assert json.loads(lines[0])["title"] == "a\nb"


def test_stdout_closed_is_a_sink_error() -> None:
    out = io.StringIO()
    out.close()
    with pytest.raises(SinkError, match="cannot write to stdout"):
        StdoutSink("human", out).deliver(payload())


# -- file --------------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_file_sink_appends_json_lines_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"earlier":true}\n')
    path.chmod(0o600)
    sink = FileSink(path)
    for alert_id in (1, 2, 3):
        sink.deliver(payload(alert_id=alert_id, title="ünïcode \udcff"))
    sink.close()
    lines = read_lines(path)
    assert [line.get("alert_id") for line in lines] == [None, 1, 2, 3]
    assert lines[1]["title"] == "ünïcode \udcff"  # a JSON escape: the file stays UTF-8
    new = tmp_path / "new.jsonl"
    FileSink(new).deliver(payload())
    assert stat.S_IMODE(new.stat().st_mode) == 0o600


def test_file_sink_follows_logrotate_rename_without_and_with_reopen(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = FileSink(path)
    sink.deliver(payload(alert_id=1))
    path.rename(tmp_path / "alerts.jsonl.1")  # logrotate's rename
    sink.deliver(payload(alert_id=2))  # noticed by inode: a new file at the path
    assert [x["alert_id"] for x in read_lines(tmp_path / "alerts.jsonl.1")] == [1]
    assert [x["alert_id"] for x in read_lines(path)] == [2]
    # copytruncate-free rotation with a SIGHUP: rename, reopen(), next alert in a new file.
    path.rename(tmp_path / "alerts.jsonl.2")
    sink.reopen()
    sink.deliver(payload(alert_id=3))
    assert [x["alert_id"] for x in read_lines(path)] == [3]
    path.unlink()  # deleted under it
    sink.deliver(payload(alert_id=4))
    assert [x["alert_id"] for x in read_lines(path)] == [4]
    sink.close()


def test_file_sink_unwritable_path_is_a_transient_error(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "missing-dir" / "alerts.jsonl")
    with pytest.raises(SinkError, match=r"cannot open .*No such file or directory") as raised:
        sink.deliver(payload())
    assert type(raised.value) is SinkError  # retried: the directory may appear
    (tmp_path / "missing-dir").mkdir()
    sink.deliver(payload())
    assert len(read_lines(tmp_path / "missing-dir" / "alerts.jsonl")) == 1


# -- syslog ------------------------------------------------------------------------------

RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<host>\S+) "
    r"(?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r'(?P<sd>\[[^ \]"=]+(?: [^ \]"=]+="(?:[^"\\\]]|\\.)*")*\]|-) (?P<msg>.*)$',
    re.DOTALL,
)


def parse(message: bytes) -> dict[str, str]:
    match = RFC5424.match(message.decode("utf-8"))
    assert match, message
    return match.groupdict()


def test_syslog_rfc5424_over_a_unix_datagram_socket(unix_dgram: tuple[str, socket.socket]) -> None:
    path, receiver = unix_dgram
    sink = SyslogSink(
        parse_syslog_address(path), facility="local3", app_name="daemoneye", hostname="web-1"
    )
    sink.deliver(payload(title='quote " and ] and \\ in title', rule_id='r"]1'))
    fields = parse(receiver.recv(65536))
    assert fields["pri"] == str(19 * 8 + 3)  # local3, high → error (3)
    assert fields["ts"] == "2024-05-01T12:00:00.250000Z"
    assert (fields["host"], fields["app"], fields["procid"], fields["msgid"]) == (
        "web-1",
        "daemoneye",
        str(os.getpid()),
        "alert.raised",
    )
    assert fields["sd"].startswith("[daemoneye@32473 ")
    assert 'rule="r\\"\\]1"' in fields["sd"]
    assert 'severity="high"' in fields["sd"] and 'pid="4242"' in fields["sd"]
    assert 'event_id="host/7/1"' in fields["sd"]
    assert fields["msg"] == 'HIGH r"]1 pid 4242: quote " and ] and \\ in title (alert 7)'
    sink.close()


@pytest.mark.parametrize(
    ("severity", "code"), [("info", 6), ("low", 5), ("medium", 4), ("high", 3), ("critical", 2)]
)
def test_syslog_severity_mapping(severity: str, code: int) -> None:
    message = format_rfc5424(
        payload(severity=severity), facility="daemon", app_name="d", hostname="h", procid=1
    )
    assert parse(message)["pri"] == str(3 * 8 + code)


@pytest.mark.parametrize(
    ("facility", "code"),
    [("kern", 0), ("daemon", 3), ("authpriv", 10), ("local0", 16), ("local7", 23)],
)
def test_syslog_facility_codes(facility: str, code: int) -> None:
    message = format_rfc5424(
        payload(severity="info"), facility=facility, app_name="d", hostname="h", procid=1
    )
    assert parse(message)["pri"] == str(code * 8 + 6)


def test_syslog_message_is_cut_to_the_transport_limit_on_a_character() -> None:
    message = format_rfc5424(
        payload(title="é" * 5000),
        facility="user",
        app_name="d",
        hostname="h",
        procid=1,
        max_bytes=2048,
    )
    assert len(message) <= 2048
    message.decode("utf-8")  # still valid UTF-8


def test_syslog_over_udp(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    sink = SyslogSink(parse_syslog_address(f"udp://127.0.0.1:{port}"), facility="auth")
    sink.deliver(payload(severity="critical"))
    fields = parse(receiver.recv(65536))
    assert fields["pri"] == str(4 * 8 + 2)
    assert fields["msg"].startswith("CRITICAL exec-tmp pid 4242")
    receiver.close()
    sink.close()


def test_syslog_over_tcp_uses_octet_counting_and_reconnects() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(5)
    port = server.getsockname()[1]
    sink = SyslogSink(SyslogAddress("tcp", host="127.0.0.1", port=port))

    def read_frame(conn: socket.socket) -> bytes:
        data = b""
        while b" " not in data:
            data += conn.recv(1)
        length = int(data[:-1])
        body = b""
        while len(body) < length:
            body += conn.recv(length - len(body))
        return body

    sink.deliver(payload(alert_id=1))
    first, _ = server.accept()
    first.settimeout(5)
    assert parse(read_frame(first))["msg"].endswith("(alert 1)")
    sink.deliver(payload(alert_id=2))  # same connection
    assert parse(read_frame(first))["msg"].endswith("(alert 2)")
    first.close()  # the collector restarts: the sink must notice, not write into the void
    sink.deliver(payload(alert_id=3))
    second, _ = server.accept()
    second.settimeout(5)
    assert parse(read_frame(second))["msg"].endswith("(alert 3)")
    second.close()
    server.close()
    sink.close()


def test_syslog_receiver_down_is_a_transient_error(tmp_path: Path) -> None:
    sink = SyslogSink(parse_syslog_address(str(tmp_path / "no-such-socket")))
    with pytest.raises(SinkError, match=r"cannot send to syslog at .*no-such-socket"):
        sink.deliver(payload())
    closed_port = socket.socket()
    closed_port.bind(("127.0.0.1", 0))
    port = closed_port.getsockname()[1]
    closed_port.close()
    with pytest.raises(SinkError, match="Connection refused"):
        SyslogSink(SyslogAddress("tcp", host="127.0.0.1", port=port)).deliver(payload())


def test_syslog_receiver_that_comes_back_gets_the_next_message(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    sink = SyslogSink(parse_syslog_address(path))
    with pytest.raises(SinkError):
        sink.deliver(payload())
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(5)
    sink.deliver(payload(alert_id=9))
    assert parse(receiver.recv(65536))["msg"].endswith("(alert 9)")
    receiver.close()


def test_iso_time_has_microseconds_and_utc() -> None:
    assert iso_time(0.0) == "1970-01-01T00:00:00.000000Z"
    assert iso_time(1.9999999) == "1970-01-01T00:00:01.999999Z"


# -- building from the configuration -------------------------------------------------------


def test_build_sinks_from_config(tmp_path: Path) -> None:
    config = SinksConfig()
    assert enabled_sink_names(config) == () and build_sinks(config) == {}
    from dataclasses import replace

    config = replace(
        config,
        stdout=replace(config.stdout, enabled=True, format="json"),
        file=replace(config.file, enabled=True, path=str(tmp_path / "a.jsonl")),
        syslog=replace(config.syslog, enabled=True, address="udp://127.0.0.1:5514"),
        webhook=replace(config.webhook, enabled=True, url="https://example.invalid/hook"),
    )
    assert enabled_sink_names(config) == ("stdout", "file", "syslog", "webhook")
    sinks = build_sinks(config)
    assert list(sinks) == ["stdout", "file", "syslog", "webhook"]
    assert all(sink.name == name for name, sink in sinks.items())


def test_build_sinks_names_an_unreadable_ca_file(tmp_path: Path) -> None:
    from dataclasses import replace

    from daemoneye.errors import ConfigError

    config = SinksConfig()
    config = replace(
        config,
        webhook=replace(
            config.webhook,
            enabled=True,
            url="https://example.invalid/",
            ca_file=str(tmp_path / "nope.pem"),
        ),
    )
    with pytest.raises(ConfigError, match=r"sinks\.webhook\.ca_file: cannot load"):
        build_sinks(config)


def test_concurrent_reopen_request_is_safe(tmp_path: Path) -> None:
    """reopen() from another thread (SIGHUP) while alerts are written loses none."""
    path = tmp_path / "alerts.jsonl"
    sink = FileSink(path, fsync=False)
    stop = threading.Event()

    def hup() -> None:
        while not stop.is_set():
            sink.reopen()

    thread = threading.Thread(target=hup)
    thread.start()
    try:
        for n in range(300):
            sink.deliver(payload(alert_id=n))
    finally:
        stop.set()
        thread.join()
    assert [x["alert_id"] for x in read_lines(path)] == list(range(300))


def test_every_sink_section_has_its_module_and_every_sink_module_its_section() -> None:
    """The registry is the config: `[sinks.NAME]` is built by engine/sinks/NAME.py's build()."""
    import pkgutil

    import daemoneye.engine.sinks as sinks_package
    from daemoneye.config.schema import SinksConfig
    from daemoneye.engine.sinks import SINK_NAMES, sink_builder

    modules = {info.name for info in pkgutil.iter_modules(sinks_package.__path__)} - {"base"}
    assert set(SINK_NAMES) == modules
    defaults = SinksConfig()
    for name in SINK_NAMES:
        assert callable(sink_builder(name)), name
        assert getattr(defaults, name).enabled is False, f"{name} must be off by default"
