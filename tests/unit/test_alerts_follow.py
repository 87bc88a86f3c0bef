"""What `alerts follow` prints for each notification, and how (pure parts)."""

from __future__ import annotations

import csv
import io
import json

from daemoneye.commands.alerts_follow import (
    COLUMNS,
    TABLE_COLUMNS,
    TABLE_WIDTHS,
    FollowOptions,
    event_of,
    matches,
    row_of,
)
from daemoneye.models import Alert
from daemoneye.output import RowStream

HOSTILE = "x\x1b[2J\u202e=cmd"


def _alert(**changes: object) -> Alert:
    values: dict[str, object] = {
        "id": 7, "rule_id": "r", "severity": "high", "title": HOSTILE, "pid": 9,
        "start_time": 1.5, "first_seen": 10.0, "last_seen": 10.0, "count": 1,
        "state": "open", "state_changed_at": None, "state_changed_by": None, "row": (),
    }  # fmt: skip
    values.update(changes)
    return Alert(**values)  # type: ignore[arg-type]


def test_event_names_what_happened() -> None:
    assert event_of(_alert()) == ("raised", 10.0)
    assert event_of(_alert(count=3, last_seen=20.0)) == ("repeated", 20.0)
    acked = _alert(state="acknowledged", state_changed_at=30.0, state_changed_by="uid 0")
    assert event_of(acked) == ("acknowledged", 30.0)
    assert event_of(_alert(state="closed", state_changed_at=31.0)) == ("closed", 31.0)
    assert event_of(_alert(state="open", state_changed_at=32.0)) == ("reopened", 32.0)
    # seen again after it was acknowledged: a repeat, still acknowledged
    later = _alert(state="acknowledged", state_changed_at=30.0, count=2, last_seen=40.0)
    assert event_of(later) == ("repeated", 40.0)


def test_filters() -> None:
    assert matches(_alert(), FollowOptions(severity="medium"))
    assert not matches(_alert(severity="low"), FollowOptions(severity="medium"))
    assert not matches(_alert(), FollowOptions(rule="other"))
    assert not matches(_alert(), FollowOptions(state="closed"))
    assert matches(_alert(state="closed"), FollowOptions(state="closed", rule="r"))


def test_each_format_streams_escaped_rows() -> None:
    out = io.StringIO()
    stream = RowStream(TABLE_COLUMNS, "table", out, widths=TABLE_WIDTHS, max_width=120)
    stream.write(row_of(_alert(), table=True))
    heading, line = out.getvalue().splitlines()
    assert heading.split() == [c.upper() for c in TABLE_COLUMNS]
    assert "\x1b" not in line and "\\x1b[2J\\u202e=cmd" in line


def test_a_narrow_table_shares_the_room_between_rule_id_and_title() -> None:
    out = io.StringIO()
    stream = RowStream(
        TABLE_COLUMNS, "table", out, widths=TABLE_WIDTHS, max_width=80, flexible=("rule_id",)
    )
    stream.write(row_of(_alert(rule_id="a-very-long-rule-identifier-indeed", title="t" * 99), True))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "a-very-long" in lines[1] and lines[1].endswith("t…")
    out = io.StringIO()
    stream = RowStream(COLUMNS, "csv", out)
    stream.write(row_of(_alert(), table=False))
    stream.write(row_of(_alert(id=8), table=False))
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == list(COLUMNS) and len(rows) == 3
    assert rows[1][COLUMNS.index("title")] == "x\\x1b[2J\\u202e=cmd"
    for fmt in ("json", "ndjson"):
        out = io.StringIO()
        RowStream(COLUMNS, fmt, out).write(row_of(_alert(), table=False))
        decoded = json.JSONDecoder().raw_decode(out.getvalue())[0]
        assert decoded["title"] == HOSTILE and decoded["event"] == "raised"
        assert decoded["start_time"] == 1.5
