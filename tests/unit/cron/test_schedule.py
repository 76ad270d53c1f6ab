"""Cron expressions: validation messages, next times in UTC and in time zones across DST."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from mags.core.schedule import Schedule, parse_schedule
from mags.errors import ValidationError

NOW = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", 'cron_expression "61 * * * *": minute must be 0-59'),
        ("* 24 * * *", "hour must be 0-23"),
        ("0 0 0 * *", "day of month must be 1-31"),
        ("0 0 * 13 *", "month must be 1-12"),
        ("0 0 * * 8", "day of week must be 0-7"),
        ("*/0 * * * *", "minute step '0' must be a positive integer"),
        ("1,,2 * * * *", "minute has an empty list item"),
        ("0 0 * foo *", "month value 'foo' must be a number 1-12 or a name (jan...dec)"),
        ("* * * *", "must have 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("*/5 * * * * *", "got 6 (a seconds or year field is not supported)"),
        ("@reboot", "@reboot is not supported"),
        ("@often", "unknown nickname"),
        ("0 0 30 2 *", 'cron_expression "0 0 30 2 *": never matches a date'),
        ("", "cron_expression must be a non-empty string"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_schedule(expression, now=NOW)
    assert message in str(err.value)


def test_invalid_timezone() -> None:
    for bad in ("Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime", 5):
        with pytest.raises(ValidationError, match="timezone"):
            parse_schedule("* * * * *", bad)


def test_valid_expressions_are_normalized() -> None:
    assert parse_schedule("  0   */2 * * MON-FRI ").expression == "0 */2 * * MON-FRI"
    assert parse_schedule("@Daily").expression == "@daily"
    assert parse_schedule("0 0 L * *").timezone == "UTC"
    assert parse_schedule("0 9 * * *", "Europe/Berlin").timezone == "Europe/Berlin"


def test_next_times_in_utc() -> None:
    s = Schedule("*/15 * * * *")
    assert s.next_after(NOW) == NOW + 900  # strictly after, even on a fire time
    assert s.next_after(NOW + 1) == NOW + 900
    assert s.last_at_or_before(NOW + 899) == NOW
    assert s.last_at_or_before(NOW + 900) == NOW + 900
    assert Schedule("@hourly").next_after(NOW) == NOW + 3600
    assert s.fires_between(NOW, NOW + 3600) == (5, NOW + 3600)
    count, last = Schedule("* * * * *").fires_between(NOW, NOW + 7 * 86400, cap=100)
    assert count == 100 and last == NOW + 7 * 86400


def test_next_times_in_a_timezone() -> None:
    s = Schedule("0 9 * * *", "Asia/Tokyo")  # UTC+9, no DST
    nxt = datetime.fromtimestamp(s.next_after(NOW), UTC)
    assert nxt == datetime(2030, 1, 2, tzinfo=UTC)  # 09:00 in Tokyo is midnight UTC
    assert nxt.astimezone(ZoneInfo("Asia/Tokyo")).hour == 9


def _local_runs(expr: str, start: datetime, n: int) -> list[str]:
    s = Schedule(expr, "America/New_York")
    t, out = start.timestamp(), []
    for _ in range(n):
        nxt = s.next_after(t)
        assert nxt is not None
        t = nxt
        out.append(datetime.fromtimestamp(t, NY).isoformat())
    return out


def test_dst_spring_forward_runs_once_after_the_gap() -> None:
    # 2030-03-10: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day
    assert _local_runs("30 2 * * *", datetime(2030, 3, 9, 12, tzinfo=NY), 3) == [
        "2030-03-10T03:00:00-04:00",
        "2030-03-11T02:30:00-04:00",
        "2030-03-12T02:30:00-04:00",
    ]


def test_dst_fall_back_fixed_time_runs_once() -> None:
    # 2030-11-03: 01:00-02:00 happens twice; a daily 01:30 job runs once that day
    assert _local_runs("30 1 * * *", datetime(2030, 11, 2, 12, tzinfo=NY), 3) == [
        "2030-11-03T01:30:00-04:00",
        "2030-11-04T01:30:00-05:00",
        "2030-11-05T01:30:00-05:00",
    ]


def test_dst_fall_back_interval_schedule_ticks_through_both_hours() -> None:
    runs = _local_runs("*/30 * * * *", datetime(2030, 11, 3, 0, 50, tzinfo=NY), 5)
    assert runs == [
        "2030-11-03T01:00:00-04:00",
        "2030-11-03T01:30:00-04:00",
        "2030-11-03T01:00:00-05:00",
        "2030-11-03T01:30:00-05:00",
        "2030-11-03T02:00:00-05:00",
    ]
    # consecutive UTC times are always 30 minutes apart: nothing doubled, nothing skipped
    stamps = [datetime.fromisoformat(r).timestamp() for r in runs]
    assert {b - a for a, b in itertools.pairwise(stamps)} == {1800.0}
