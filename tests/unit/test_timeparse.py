"""The one time parser: every written form lands on the moment it names, in the zone it names
(or the local one), across DST changes; anything else is refused with the accepted forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemoneye.timeparse import TIME_EXAMPLES, TimeParseError, parse_time

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-12-07 03:43:51 in Berlin (CET, +01:00)
NOW = datetime(2026, 12, 7, 3, 43, 51, tzinfo=BERLIN).timestamp()

moments = st.integers(0, 4_000_000_000).map(float)


def berlin(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("10m ago", NOW - 600),
        ("-2h", NOW - 7200),
        ("- 2h", NOW - 7200),
        ("15m", NOW - 900),
        ("1h30m ago", NOW - 5400),
        ("03:12", berlin(2026, 12, 7, 3, 12)),
        ("03:12:07", berlin(2026, 12, 7, 3, 12, 7)),
        ("3:12", berlin(2026, 12, 7, 3, 12)),
        ("today", berlin(2026, 12, 7)),
        ("today 01:00", berlin(2026, 12, 7, 1)),
        ("yesterday 23:40", berlin(2026, 12, 6, 23, 40)),
        ("Yesterday", berlin(2026, 12, 6)),
        ("2026-12-07", berlin(2026, 12, 7)),
        ("2026-12-07 03:12", berlin(2026, 12, 7, 3, 12)),
        ("2026-12-07T03:12:07.5", berlin(2026, 12, 7, 3, 12, 7) + 0.5),
        ("2026-12-07T03:12Z", datetime(2026, 12, 7, 3, 12, tzinfo=UTC).timestamp()),
        ("2026-12-07 03:12 UTC", datetime(2026, 12, 7, 3, 12, tzinfo=UTC).timestamp()),
        ("2026-12-07T03:12:00+05:30", datetime(2026, 12, 6, 21, 42, tzinfo=UTC).timestamp()),
        ("2026-12-07 03:12 -0100", datetime(2026, 12, 7, 4, 12, tzinfo=UTC).timestamp()),
        ("03:12 utc", datetime(2026, 12, 7, 3, 12, tzinfo=UTC).timestamp()),
        (
            "2026-12-07 03:12 America/New_York",
            datetime(2026, 12, 7, 8, 12, tzinfo=UTC).timestamp(),
        ),
    ],
)
def test_each_form_names_its_moment(text: str, expected: float) -> None:
    assert parse_time(text, NOW, BERLIN) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "soon",
        "25:00",
        "03:61",
        "2026-13-01",
        "2026-12-07 03:12 Mars/Base",
        "03:12 ago",
        "-03:12",
        "yesterday 2026-12-07",
        "x" * 200,
        "2026-12-07 03:12 +24:00",
    ],
)
def test_other_text_is_refused_naming_it_and_the_forms(text: str) -> None:
    with pytest.raises(TimeParseError) as caught:
        parse_time(text, NOW, BERLIN)
    message = str(caught.value)
    assert repr(text[:40])[1:-1] in message
    assert TIME_EXAMPLES in message


def test_a_repeated_local_hour_means_the_first_and_a_skipped_one_lands_after_the_gap() -> None:
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()  # 02:30 CEST
    assert parse_time("2026-10-25 02:30", NOW, BERLIN) == first
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 never happens, read at +01:00.
    after_gap = datetime(2026, 3, 29, 1, 30, tzinfo=UTC).timestamp()  # 03:30 CEST
    assert parse_time("2026-03-29 02:30", NOW, BERLIN) == after_gap


def test_yesterday_across_a_dst_change_is_the_calendar_day_not_24_hours() -> None:
    now = datetime(2026, 3, 29, 12, 0, tzinfo=BERLIN).timestamp()
    assert parse_time("yesterday 12:00", now, BERLIN) == now - 23 * 3600


@given(moments, st.integers(-14 * 60, 14 * 60))
def test_an_iso_time_with_an_offset_round_trips(moment: float, offset_minutes: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    written = datetime.fromtimestamp(moment, zone).isoformat()
    assert parse_time(written, NOW, BERLIN) == moment


@given(moments)
def test_a_local_date_and_minute_round_trips_outside_the_repeated_hour(moment: float) -> None:
    local = datetime.fromtimestamp(moment, BERLIN)
    if local.fold or local.replace(fold=1).utcoffset() != local.utcoffset():
        return  # the repeated hour: covered by the DST test above
    written = local.strftime("%Y-%m-%d %H:%M:%S")
    assert parse_time(written, NOW, BERLIN) == moment


@given(st.integers(0, 10**7), st.sampled_from(["s", "m", "h", "d", "w"]))
def test_relative_forms_agree(count: int, unit: str) -> None:
    size = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    expected = NOW - count * size
    assert parse_time(f"{count}{unit} ago", NOW, BERLIN) == expected
    assert parse_time(f"-{count}{unit}", NOW, BERLIN) == expected
    assert parse_time(f"{count}{unit}", NOW, BERLIN) == expected


@given(st.text(max_size=60))
def test_any_text_is_a_moment_or_a_time_parse_error(text: str) -> None:
    try:
        value = parse_time(text, NOW, BERLIN)
    except TimeParseError:
        return
    assert isinstance(value, float)


def test_without_a_zone_the_system_local_zone_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        expected = datetime(2026, 12, 6, 21, 42, tzinfo=UTC).timestamp()
        assert parse_time("2026-12-07 03:12", NOW) == expected
        with pytest.raises(TimeParseError):  # before year 1 in UTC: mktime refuses it
            parse_time("0001-01-01", NOW)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
