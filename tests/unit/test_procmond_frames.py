"""The collector pair's frames: round trips, and every malformed frame refused with its kind
and field, never half-decoded (hypothesis feeds the parser arbitrary bytes)."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import subprocess
import sys
from dataclasses import fields
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemoneye.collector.shared_text import SHARED
from daemoneye.ipc.codec import to_wire
from daemoneye.models import ExeHash, ProcessEvent, ProcessKey, ProcessRecord, ScanDelta, ScanStats
from daemoneye.procmond import frames, wire


def record(pid: int = 42, cmdline: tuple[str, ...] = ("/bin/sh", "-c", ": x")) -> ProcessRecord:
    return ProcessRecord(
        pid=pid,
        ppid=1,
        start_time=1000.5,
        name="sh",
        exe="/bin/sh",
        cmdline=cmdline,
        cwd="/",
        uid=0,
        user="root",
        gid=0,
        state="R",
        threads=1,
        rss=1024,
        cpu_percent=0.0,
        exe_sha256=None,
        exe_deleted=False,
        first_seen=1000.5,
        last_seen=1000.5,
    )


def delta(*records: ProcessRecord) -> ScanDelta:
    events = tuple(
        ProcessEvent(r.first_seen, "exec", r.pid, r.start_time, 1, r.exe, r.cmdline)
        for r in records
    )
    return ScanDelta(
        2000.0, records, (), (), (ProcessKey(7, 3.0),), events, ScanStats(0.1, 3, 1, 1, 1, 0, 0)
    )


def roundtrip(payload: object, accepted: frozenset[frames.Kind] = frames.FROM_PROCMOND) -> object:
    data = frames.encode(payload)
    kind, length = frames.parse_header(data[: frames.HEADER.size], accepted)
    assert length == len(data) - frames.HEADER.size
    return frames.decode(kind, data[frames.HEADER.size :])


def test_a_scan_with_hostile_text_comes_back_equal() -> None:
    hostile = record(cmdline=("\x1b[31mred", "\\xff", "\u2028", "a" * 10_000, ""))
    scan = frames.Scan(delta(hostile), True, (hostile.key,))
    assert roundtrip(scan) == scan


def test_hashes_health_and_commands_round_trip() -> None:
    hashes = frames.Hashes((ExeHash(ProcessKey(1, 2.0), None, "too large"),))
    assert roundtrip(hashes) == hashes
    request = frames.SignalRequest(3, 1234, 99.5, 15)
    assert roundtrip(request, frames.FROM_AGENT) == request
    assert roundtrip(frames.Rescan(), frames.FROM_AGENT) == frames.Rescan()


RECORD_FIELDS = [f.name for f in fields(ProcessRecord)]
ADDED = [f.name for f in fields(ScanDelta)].index("added")


def first_added(body: list[Any]) -> list[Any]:
    """The first added record's array in an EVENTS or SCAN body (the delta is field 0)."""
    added: list[list[Any]] = body[0][ADDED]
    return added[0]


def test_records_are_encoded_from_the_dataclass_fields() -> None:
    """A field added to ProcessRecord travels without a change to frames.py: a record is the
    array of its fields in declaration order."""
    rec = record()
    body = json.loads(frames.encode(frames.Events(delta(rec)))[frames.HEADER.size :])
    assert first_added(body) == [
        list(value) if isinstance(value, tuple) else value
        for value in (getattr(rec, name) for name in RECORD_FIELDS)
    ]


def test_payloads_are_arrays_half_the_size_of_named_objects() -> None:
    """Since version 2 of the pair: no field names on the wire (the cost of every exec)."""
    payload = frames.Events(delta(*(record(pid) for pid in range(2, 12))))
    body = frames.encode(payload)[frames.HEADER.size :]
    named = json.dumps(to_wire(payload), separators=(",", ":")).encode()
    assert body.startswith(b"[[")
    assert len(body) * 2 < len(named)
    assert frames.PAIR_VERSION >= 2


def test_a_wrong_field_type_names_kind_and_field() -> None:
    body = json.loads(frames.encode(frames.Events(delta(record())))[frames.HEADER.size :])
    first_added(body)[RECORD_FIELDS.index("pid")] = "42"
    with pytest.raises(frames.FrameError) as caught:
        frames.decode(frames.Kind.EVENTS, json.dumps(body).encode())
    assert caught.value.kind == "EVENTS"
    assert caught.value.field == "delta.added[0].pid"


def test_unknown_fields_and_missing_fields_are_refused() -> None:
    with pytest.raises(frames.FrameError, match="field signal"):
        frames.decode(frames.Kind.SIGNAL, b"[1,5,1.0,99]")
    with pytest.raises(frames.FrameError, match="3 values for SignalRequest's 4 fields"):
        frames.decode(frames.Kind.SIGNAL, b"[1,5,1.0]")
    with pytest.raises(frames.FrameError, match="1 values for Rescan's 0 fields"):
        frames.decode(frames.Kind.RESCAN, b'["/etc/shadow"]')
    with pytest.raises(frames.FrameError, match="expected a list"):
        frames.decode(frames.Kind.RESCAN, b'{"path":"/etc/shadow"}')


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (2**63, "integer out of range"),
        (-(2**63) - 1, "integer out of range"),
        (True, "expected an integer, got true"),
        (1.5, "expected an integer, got 1.5"),
        (None, "expected an integer, got null"),
    ],
)
def test_an_integer_field_takes_signed_64_bit_integers_only(value: object, reason: str) -> None:
    body = json.loads(frames.encode(frames.Events(delta(record())))[frames.HEADER.size :])
    first_added(body)[RECORD_FIELDS.index("rss")] = value
    with pytest.raises(frames.FrameError, match=reason) as caught:
        frames.decode(frames.Kind.EVENTS, json.dumps(body).encode())
    assert caught.value.field == "delta.added[0].rss"


@pytest.mark.parametrize("literal", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity"])
def test_a_float_field_takes_finite_numbers_only(literal: bytes) -> None:
    with pytest.raises(frames.FrameError):
        frames.decode(frames.Kind.SIGNAL, b"[1,5," + literal + b",15]")


def test_an_integer_in_a_float_field_is_taken_as_a_float() -> None:
    request = frames.decode(frames.Kind.SIGNAL, b"[1,5,3,15]")
    assert request == frames.SignalRequest(1, 5, 3.0, 15)
    assert type(request.start_time) is float


def test_procmond_accepts_only_the_two_commands() -> None:
    header = frames.HEADER.pack(2, frames.Kind.SCAN)
    with pytest.raises(frames.FrameError, match="does not accept"):
        frames.parse_header(header, frames.FROM_AGENT)
    with pytest.raises(frames.FrameError, match="unknown frame kind"):
        frames.parse_header(frames.HEADER.pack(2, 200), frames.FROM_AGENT)
    with pytest.raises(frames.FrameError, match="over"):
        frames.parse_header(frames.HEADER.pack(2**31, frames.Kind.RESCAN), frames.FROM_AGENT)


def test_a_hello_of_another_version_is_refused() -> None:
    hello = frames.Hello(frames.PAIR_VERSION + 1, 1, 0, 1.0, "netlink", "", True, "")
    with pytest.raises(frames.FrameError, match="field version"):
        roundtrip(hello)


def test_read_frame_reports_a_closed_pair_mid_frame() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(frames.encode(frames.Rescan())[:3])
        left.close()
        with pytest.raises(frames.PairClosed):
            frames.read_frame(right, frames.FROM_AGENT)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512), st.sampled_from(list(frames.Kind)))
def test_arbitrary_bytes_never_escape_as_anything_but_frame_error(
    body: bytes, kind: frames.Kind
) -> None:
    try:
        frames.decode(kind, body)
    except frames.FrameError as exc:
        assert exc.kind == kind.name


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(list(frames.Kind)))
def test_arbitrary_json_is_decoded_whole_or_refused(value: object, kind: frames.Kind) -> None:
    try:
        payload = frames.decode(kind, json.dumps(value).encode())
    except frames.FrameError as exc:
        assert exc.kind == kind.name
    else:
        assert isinstance(payload, frames.PAYLOADS[kind])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutating_one_field_of_a_valid_scan_is_decoded_or_refused_naming_it(
    data: st.DataObject,
) -> None:
    body = json.loads(frames.encode(frames.Scan(delta(record()), False, ()))[frames.HEADER.size :])
    rec = first_added(body)
    name = data.draw(st.sampled_from(RECORD_FIELDS))
    rec[RECORD_FIELDS.index(name)] = data.draw(json_values)
    try:
        frames.decode(frames.Kind.SCAN, json.dumps(body).encode())
    except frames.FrameError as exc:
        assert exc.field.startswith(f"delta.added[0].{name}") or exc.field == "delta"


def test_the_agent_keeps_one_object_per_text_its_records_share() -> None:
    """Records are kept by the agent for every live process: equal texts decode to one object
    (an exe, a cwd, an argument), events' texts are left alone, and a long text is not kept."""
    long_arg = "z" * 600
    scan = frames.Scan(delta(record(42), record(43), record(44, ("/bin/sh", long_arg))), False, ())
    decoded = roundtrip(scan)
    assert isinstance(decoded, frames.Scan) and decoded == scan
    a, b, c = decoded.delta.added
    assert a.exe is b.exe and a.cwd is b.cwd and a.user is b.user
    assert all(x is y for x, y in zip(a.cmdline, b.cmdline, strict=True))
    assert c.cmdline[1] == long_arg and long_arg not in SHARED._texts


@pytest.mark.parametrize("count", [2, 40], ids=["the python pass", "the C pass"])
def test_the_agent_keeps_one_object_per_number_its_records_repeat(count: int) -> None:
    """A tick's timestamps, an idle process's 0.0, the host's namespace ids and a user's uid
    repeat across the live records the agent keeps: one object each, of the field's own type;
    the instance's own numbers (pid, start, rss) are left alone."""
    records = [
        dataclasses.replace(
            record(100 + i),
            uid=1000,
            pid_ns=4026531836,
            loginuid=4294967295,
            rss=5_000_000 + i,
            cpu_percent=float(0),
        )
        for i in range(count)
    ]
    events = frames.Events(delta(*records))
    assert (len(frames.encode(events)) >= wire.C_PASS_MIN_BYTES) is (count == 40)
    decoded = roundtrip(events)
    assert isinstance(decoded, frames.Events) and decoded == events
    first, *rest = decoded.delta.added
    for other in rest:
        for name in ("first_seen", "last_seen", "cpu_percent", "uid", "pid_ns", "loginuid"):
            assert getattr(other, name) is getattr(first, name), name
    assert type(first.uid) is int and type(first.first_seen) is float
    assert len({id(r.rss) for r in decoded.delta.added}) == count


def test_a_negative_zero_keeps_its_sign_and_a_zero_after_it_too() -> None:
    """-0.0 equals 0.0: shared, whichever came first would come back for the other."""
    records = [
        dataclasses.replace(record(200 + i), cpu_percent=value)
        for i, value in enumerate((-0.0, 0.0, -0.0))
    ]
    decoded = roundtrip(frames.Events(delta(*records)))
    assert isinstance(decoded, frames.Events)
    signs = [math.copysign(1.0, r.cpu_percent) for r in decoded.delta.added]
    assert signs == [-1.0, 1.0, -1.0]


def test_only_number_fields_can_be_kept_by_value() -> None:
    with pytest.raises(ValueError, match="no field"):
        wire.keep_values_of(ProcessRecord, "first_sen")
    with pytest.raises(ValueError, match="not an int or float"):
        wire.keep_values_of(ProcessRecord, "exe")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_c_pass_takes_only_what_the_python_pass_takes_and_gives_the_same(
    data: st.DataObject,
) -> None:
    """The agent decodes with msgspec first (wire._Checked): whatever it accepts, the strict
    pass accepts too, as an equal payload; whatever it refuses goes to the strict pass."""
    body = json.loads(frames.encode(frames.Events(delta(record())))[frames.HEADER.size :])
    rec = first_added(body)
    name = data.draw(st.sampled_from(RECORD_FIELDS))
    rec[RECORD_FIELDS.index(name)] = data.draw(json_values)
    text = json.dumps(body).encode()
    checked = wire._checked_loader(frames.Events)
    assert checked is not None
    try:
        fast = checked.load(text)
    except (msgspec.ValidationError, msgspec.DecodeError, TypeError, ValueError):
        return
    assert wire.python_loads(frames.Events, text) == fast


@pytest.mark.parametrize(
    ("literal", "taken"),
    [
        (b"3", 3.0),
        (b"9223372036854775807", 9223372036854775807.0),  # past the C pass's float bound
        (b"1e300", 1e300),
        (b"-9223372036854775808", -9223372036854775808.0),
        (b"9223372036854775808", None),  # an integer out of the 64-bit range: refused
        (b"1e400", None),
        (b"true", None),
    ],
)
def test_a_float_field_decodes_alike_on_both_passes(literal: bytes, taken: float | None) -> None:
    body = b"[1,5," + literal + b",15]"
    checked = wire._checked_loader(frames.SignalRequest)
    assert checked is not None
    try:
        fast: frames.SignalRequest | None = checked.load(body)
    except checked.refusals:
        fast = None
    if taken is None:
        assert fast is None
        with pytest.raises(wire.WireError, match="start_time"):
            wire.python_loads(frames.SignalRequest, body)
        return
    request = wire.python_loads(frames.SignalRequest, body)
    assert request.start_time == taken and type(request.start_time) is float
    assert fast is None or fast == request


def test_procmond_s_commands_skip_the_c_pass_and_bulk_frames_take_it() -> None:
    """procmond decodes only the agent's two small commands: it never loads msgspec."""
    code = (
        "import sys; from daemoneye.procmond import frames; "
        "frames.decode(frames.Kind.SIGNAL, b'[1,5,3.0,15]'); "
        "frames.decode(frames.Kind.RESCAN, b'[]'); "
        "print('msgspec' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
    scan = frames.Events(delta(*(record(pid) for pid in range(40, 60))))
    body = frames.encode(scan)[frames.HEADER.size :]
    assert len(body) >= wire.C_PASS_MIN_BYTES
    assert frames.decode(frames.Kind.EVENTS, body) == scan
    assert frames.Events in wire._CHECKED  # the C pass was planned for it
