"""The wire protocol's pure parts: line framing, the dataclass codec, splitting into messages."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemoneye.ipc import protocol
from daemoneye.ipc.codec import CodecError, from_wire, from_wire_many, to_wire
from daemoneye.ipc.protocol import (
    FrameTooLarge,
    LineSplitter,
    ProcessesGetParams,
    ProcessesListParams,
    ProcessSignalParams,
    QueryRows,
)
from daemoneye.models import (
    Alert,
    DaemonStatus,
    HealthReport,
    ProcessChange,
    ProcessesDelta,
    ProcessKey,
    ProcessRecord,
    Rule,
    RuleProblem,
    RuleStatus,
)

# Text as hostile as process names get: controls, quotes, backslashes, non-BMP, bidi.
hostile_text = st.text(st.characters(codec="utf-8"), max_size=40)  # no lone surrogates
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def process_records(draw: st.DrawFn) -> ProcessRecord:
    optional_text = st.none() | hostile_text
    optional_int = st.none() | st.integers(-(2**31), 2**31)
    return ProcessRecord(
        pid=draw(st.integers(1, 2**22)),
        ppid=draw(st.integers(0, 2**22)),
        start_time=draw(finite),
        name=draw(hostile_text),
        exe=draw(optional_text),
        cmdline=tuple(draw(st.lists(hostile_text, max_size=5))),
        cwd=draw(optional_text),
        uid=draw(optional_int),
        user=draw(optional_text),
        gid=draw(optional_int),
        state=draw(st.sampled_from("RSDZTI")),
        threads=draw(st.integers(0, 10**5)),
        rss=draw(st.integers(0, 2**48)),
        cpu_percent=draw(finite),
        exe_sha256=draw(st.none() | st.text("0123456789abcdef", min_size=64, max_size=64)),
        exe_deleted=draw(st.booleans()),
        first_seen=draw(finite),
        last_seen=draw(finite),
        ended_at=draw(st.none() | finite),
        exit_code=draw(optional_int),
    )


def over_the_wire(value: object) -> object:
    return protocol.loads(protocol.dumps(to_wire(value)))


@settings(max_examples=200)
@given(process_records())
def test_process_records_survive_the_wire_exactly(record: ProcessRecord) -> None:
    assert from_wire(ProcessRecord, over_the_wire(record), strict=True) == record


@settings(max_examples=100)
@given(
    st.lists(process_records(), max_size=4),
    st.lists(
        st.tuples(
            st.integers(1, 2**22),
            finite,
            st.lists(
                st.tuples(
                    st.sampled_from(["rss", "state", "cpu_percent", "exe_sha256", "ppid"]),
                    st.none()
                    | st.integers(-(2**63), 2**63 - 1)
                    | finite
                    | hostile_text
                    | st.booleans(),
                ),
                max_size=3,
            ),
        ),
        max_size=4,
    ),
    st.lists(st.tuples(st.integers(1, 2**22), finite), max_size=4),
)
def test_deltas_survive_the_wire_with_scalar_types_kept(
    added: list[ProcessRecord],
    changed: list[tuple[int, float, list[tuple[str, object]]]],
    removed: list[tuple[int, float]],
) -> None:
    delta = ProcessesDelta(
        seq=7,
        added=tuple(added),
        changed=tuple(
            ProcessChange(pid, start, tuple(fields))  # type: ignore[arg-type]
            for pid, start, fields in changed
        ),
        removed=tuple(ProcessKey(pid, start) for pid, start in removed),
    )
    decoded = from_wire(ProcessesDelta, over_the_wire(delta))
    assert decoded == delta
    for before, after in zip(delta.changed, decoded.changed, strict=True):
        assert [type(v) for _, v in before.fields] == [type(v) for _, v in after.fields]


def test_nested_records_round_trip() -> None:
    rule = Rule(
        id="r1",
        name="n",
        description="d",
        severity="high",
        enabled=True,
        tags=("T1059",),
        query="SELECT 1",
        title=None,
        dedup_window_s=None,
        throttle_s=3.5,
        source_file="/etc/x.toml",
        source_line=3,
    )
    status = RuleStatus(
        rule=rule, hits=2, last_hit=1.5, problems=(RuleProblem("/etc/x.toml", 4, "r1", "bad"),)
    )
    alert = Alert(
        id=1,
        rule_id="r1",
        severity="high",
        title="t",
        pid=5,
        start_time=1.25,
        first_seen=1.0,
        last_seen=2.0,
        count=3,
        state="open",
        state_changed_at=None,
        state_changed_by=None,
        row=(("pid", 5), ("name", "x"), ("cpu", 1.5), ("gone", None)),
    )
    assert from_wire_many(RuleStatus, over_the_wire((status,))) == (status,)
    assert from_wire(Alert, over_the_wire(alert)) == alert


def test_defaults_fill_missing_optional_fields_and_old_clients_ignore_new_ones() -> None:
    assert from_wire(ProcessesGetParams, {"pid": 3}) == ProcessesGetParams(pid=3)
    assert from_wire(ProcessesListParams, {"after": [3, 1.5]}).after == (3, 1.5)
    # lenient (client side): a field a newer daemon added is ignored
    assert from_wire(ProcessesGetParams, {"pid": 3, "future": 1}) == ProcessesGetParams(pid=3)


@pytest.mark.parametrize(
    ("cls", "data", "path", "words"),
    [
        (ProcessesGetParams, {"pid": "12"}, "pid", "expected an integer, got '12'"),
        (ProcessesGetParams, {"pid": True}, "pid", "expected an integer, got true"),
        (ProcessesGetParams, {"pid": 1.5}, "pid", "expected an integer"),
        (ProcessesGetParams, {}, "pid", "missing"),
        (ProcessesGetParams, {"pdi": 1}, "pdi", "did you mean 'pid'?"),
        (ProcessesListParams, {"after": [1]}, "after", "a list of 2 values"),
        (
            ProcessSignalParams,
            {"pid": 1, "start_time": 1, "signal": []},
            "signal",
            "expected a string or an integer",
        ),
        (
            QueryRows,
            {"columns": ["a"], "rows": [[{"x": 1}]], "truncated": False},
            "rows[0][0]",
            "expected",
        ),
        (  # deep in a refresh: decoding runs without paths first, then names the field
            ProcessesDelta,
            {
                "seq": 1,
                "added": [],
                "removed": [],
                "changed": [
                    {"pid": 1, "start_time": 1.0, "fields": [["rss", 1]]},
                    {"pid": 2, "start_time": 1.0, "fields": [["rss", 2], ["cpu", []]]},
                ],
            },
            "changed[1].fields[1][1]",
            "expected a string or an integer or a number or true or false or null",
        ),
    ],
)
def test_decoding_errors_name_the_field(
    cls: type, data: dict[str, object], path: str, words: str
) -> None:
    with pytest.raises(CodecError) as caught:
        from_wire(cls, data, strict=True)
    assert caught.value.path == path
    assert words in str(caught.value)


def test_a_health_status_decodes_nested_and_optional_parts() -> None:
    report = HealthReport(
        daemon_pid=1,
        daemon_uid=0,
        version="0.1",
        mode="system",
        privileged=True,
        event_source="netlink",
        started_at=1.0,
        updated_at=2.0,
        interval_s=1.0,
        ticks=3,
        last_scan_ms=1.0,
        avg_scan_ms=1.0,
        processes=10,
        new_per_second=0.5,
        denied_total=0,
        vanished_total=1,
        hash_dropped_total=0,
        store_bytes=4096,
        daemon_cpu_percent=0.3,
        daemon_rss_bytes=1 << 20,
        problems=("a", "b"),
    )
    status = DaemonStatus(report=report, clients=2, engine=None)
    assert from_wire(DaemonStatus, over_the_wire(status)) == status


def test_nan_is_refused_both_ways() -> None:
    with pytest.raises(ValueError):
        protocol.dumps({"x": math.nan})
    for text in (b'{"x": NaN}', b'{"x": Infinity}', b'{"x": -Infinity}'):
        with pytest.raises(ValueError):
            protocol.loads(text)


def test_a_lone_surrogate_is_escaped_not_fatal() -> None:
    line = protocol.dumps({"name": "bad\udcffbyte"})
    assert line.decode("utf-8") == '{"name":"bad\\udcffbyte"}'


# -- framing ---------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    st.lists(st.integers(1, 400), min_size=1, max_size=30),
)
def test_line_splitter_reassembles_lines_however_the_bytes_arrive(
    lines: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    splitter = LineSplitter(limit=1024)
    got: list[bytes] = []
    position = 0
    for cut in cuts * (len(stream) // max(sum(cuts), 1) + 1):
        got += splitter.feed(stream[position : position + cut])
        position += cut
        if position >= len(stream):
            break
    got += splitter.feed(stream[position:])
    assert got == lines
    assert splitter.pending == 0


def test_line_splitter_refuses_a_line_over_the_limit_even_unfinished() -> None:
    assert LineSplitter(limit=10).feed(b"123456789\n") == [b"123456789"]
    with pytest.raises(FrameTooLarge):
        LineSplitter(limit=10).feed(b"1234567890\n")
    splitter = LineSplitter(limit=10)
    splitter.feed(b"12345")
    with pytest.raises(FrameTooLarge):
        splitter.feed(b"67890")  # no newline yet, but it can no longer fit


def test_chunks_keep_every_item_in_order_and_each_under_budget() -> None:
    items = [bytes([65 + i % 26]) * (i * 37 % 500 + 1) for i in range(300)]
    runs = protocol.chunks(items, budget=2000)
    assert [item for run in runs for item in run] == items
    assert all(sum(len(i) + 1 for i in run) <= 2000 for run in runs)
    assert protocol.chunks([]) == [[]]


def test_messages_are_one_compact_line_of_json_rpc() -> None:
    line = protocol.request(3, "processes.get", {"pid": 1})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "processes.get",
        "params": {"pid": 1},
    }
    error = json.loads(protocol.error_response(None, protocol.ErrorCode.PARSE_ERROR, "no"))
    assert error == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "no"}}
    raw = json.loads(protocol.raw_response("a", b'{"x":[1]}'))
    assert raw == {"jsonrpc": "2.0", "id": "a", "result": {"x": [1]}}


# -- hostile nesting and numbers (issue 19) -------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "depth"),
    [
        (b"{}", 1),
        (b'[1,[2,{"a":"[[[["}]]]', 3),
        (b'"\\"[[[["', 0),  # an escaped quote does not end the string
        (b'{"a":"\\\\"}', 1),  # an escaped backslash does
        (b"[[]", 2),
        (b"]]][[", 0),  # a parser stops at the first `]`
    ],
)
def test_nesting_depth_counts_structure_not_text(line: bytes, depth: int) -> None:
    assert protocol.nesting_depth(line) == depth


@given(
    st.recursive(
        st.none() | st.integers() | hostile_text,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3)
        ),
        max_leaves=12,
    )
)
@settings(max_examples=200, deadline=None)
def test_nesting_depth_is_exact_for_valid_json(value: object) -> None:
    def depth(item: object) -> int:
        if isinstance(item, list):
            return 1 + max((depth(x) for x in item), default=0)
        if isinstance(item, dict):
            return 1 + max((depth(x) for x in item.values()), default=0)
        return 0

    assert protocol.nesting_depth(protocol.dumps(value)) == depth(value)


def test_deep_nesting_is_refused_before_parsing_not_a_recursion_error() -> None:
    with pytest.raises(protocol.TooDeep, match="nesting deeper than 64"):
        protocol.loads(b"[" * 100_000)
    with pytest.raises(protocol.TooDeep):
        protocol.loads(b"{" * 1000 + b'"a":1' + b"}" * 1000)
    nested = b"[" * 64 + b"]" * 64
    assert protocol.loads(nested) is not None
    # brackets inside strings are text: a long one is fine
    assert protocol.loads(b'{"text":"' + b"[" * 100_000 + b'"}') == {"text": "[" * 100_000}


def test_a_megabyte_of_digits_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        protocol.loads(b"1" * (1024 * 1024 - 1))


@pytest.mark.parametrize(
    ("cls", "params", "field"),
    [
        (ProcessesGetParams, {"pid": 2**64}, "pid"),
        (ProcessesGetParams, {"pid": -(2**63) - 1}, "pid"),
        (ProcessesGetParams, {"pid": 1, "start_time": 10**400}, "start_time"),
        (ProcessesGetParams, {"pid": 1, "start_time": math.inf}, "start_time"),
        (ProcessesGetParams, {"pid": 1, "start_time": -math.inf}, "start_time"),
        (ProcessesGetParams, {"pid": 1, "start_time": math.nan}, "start_time"),
        (ProcessSignalParams, {"pid": 1, "start_time": 1.0, "signal": 2**70}, "signal"),
        (ProcessesListParams, {"after": [1, 10**300]}, "after[1]"),
        (ProcessesListParams, {"limit": 2**63}, "limit"),
    ],
)
def test_integers_past_64_bits_and_infinities_name_their_field(
    cls: type, params: dict[str, object], field: str
) -> None:
    with pytest.raises(CodecError) as caught:
        from_wire(cls, params, strict=True)
    assert caught.value.path == field


def test_integers_at_the_64_bit_edges_are_taken() -> None:
    assert from_wire(ProcessesGetParams, {"pid": 2**63 - 1}, strict=True).pid == 2**63 - 1
    limit = from_wire(ProcessesListParams, {"limit": -(2**63)}, strict=True).limit
    assert limit == -(2**63)
    # a client decoding answers leniently takes what the daemon sent as it is
    assert from_wire(ProcessesGetParams, {"pid": 2**64}).pid == 2**64


@pytest.mark.timeout(30)  # a hang guard: the quadratic scan took ~30 min on this line
def test_an_unterminated_string_full_of_escaped_quotes_is_scanned_in_one_pass() -> None:
    hostile = b"[" * 65 + b'"' + b'\\"' * 500_000  # 1 MiB: every quote could restart a match
    with pytest.raises(ValueError):
        protocol.loads(hostile)
    assert protocol.nesting_depth(b'["a\\"]", ["b"]]') == 2  # brackets in strings do not count
    assert protocol.nesting_depth(b'[[["]]]"]]]') == 3
    assert protocol.nesting_depth(b'[["unterminated [[[[') == 2
