"""Cron schedules as Knative's PingSource reads them: what parses, what is refused and why, and when each
schedule fires next (robfig/cron's own test cases, daylight saving included), checked against a brute-force
minute scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.cron import CronError, Schedule, parse_schedule, schedule_problem


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def next_times(schedule: str, start: str, count: int = 1) -> list[str]:
    """The next `count` firings after `start`, in UTC, as a user reads them in a log."""
    parsed = parse_schedule(schedule)
    moment = at(start)
    found = []
    for _ in range(count):
        moment = parsed.next_after(moment)
        found.append(moment.astimezone(UTC).isoformat().replace("+00:00", "Z"))
    return found


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        pytest.param("61 * * * *", "minute", "minute field '61': 61 is out of range 0-59", id="minute-range"),
        pytest.param("* 24 * * *", "hour", "hour field '24': 24 is out of range 0-23", id="hour-range"),
        pytest.param(
            "* * 0 * *", "day-of-month", "day-of-month field '0': 0 is out of range 1-31", id="dom-0"
        ),
        pytest.param("* * * 13 *", "month", "month field '13': 13 is out of range 1-12", id="month-range"),
        pytest.param(
            "* * * * 7",
            "day-of-week",
            "day-of-week field '7': 7 is out of range 0-6 (Sunday is 0",
            id="sunday-7",
        ),
        pytest.param(
            "* * * * MON-7", "day-of-week", "7 is out of range 0-6 (Sunday is 0 or SUN", id="range-to-7"
        ),
        pytest.param("*/0 * * * *", "minute", "the step in '*/0' must be at least 1", id="step-zero"),
        pytest.param("*/x * * * *", "minute", "the step in '*/x' is not a number", id="step-word"),
        pytest.param("*/-1 * * * *", "minute", "the step in '*/-1' must be at least 1", id="step-negative"),
        pytest.param("1/2/3 * * * *", "minute", "'1/2/3' has more than one '/'", id="two-slashes"),
        pytest.param("1-2-3 * * * *", "minute", "'1-2-3' has more than one '-'", id="two-hyphens"),
        pytest.param("-5 * * * *", "minute", "'-5' is missing a number", id="negative"),
        pytest.param("30-10 * * * *", "minute", "range '30-10' runs backwards", id="backwards"),
        pytest.param("* * * * FRI-MON", "day-of-week", "range 'FRI-MON' runs backwards", id="no-wrap"),
        pytest.param("a * * * *", "minute", "'a' is not a number", id="word"),
        pytest.param("* * * foo *", "month", "'foo' is not a number nor a month name (JAN-DEC)", id="month"),
        pytest.param("* * * * monday", "day-of-week", "nor a day name (SUN-SAT)", id="long-day-name"),
        pytest.param("* * * JAN-FOO *", "month", "'FOO' is not a number", id="range-end-word"),
        pytest.param(", * * * *", "minute", "minute field ',': no values", id="only-commas"),
        pytest.param("5 4 3 2", "schedule", "has 4 fields; expected 5", id="four-fields"),
        pytest.param("0 5 4 3 2 1 0", "schedule", "has 7 fields", id="seven-fields"),
        pytest.param("", "schedule", "the schedule is empty", id="empty"),
        pytest.param("@fortnightly", "schedule", "unknown descriptor", id="descriptor"),
        pytest.param("@DAILY", "schedule", "unknown descriptor", id="descriptor-case"),
        pytest.param("@every", "schedule", "unknown descriptor", id="every-alone"),
        pytest.param("@every 5", "schedule", "missing a unit after 5", id="every-unitless"),
        pytest.param("@every -1m", "schedule", "@every needs a positive duration", id="every-negative"),
        pytest.param(
            "CRON_TZ=Mars/Olympus 0 * * * *", "timezone", "'Mars/Olympus' is not an IANA zone", id="zone"
        ),
        pytest.param("TZ=America 0 * * * *", "timezone", "'America' is not an IANA zone", id="zone-dir"),
        pytest.param("TZ=../etc/passwd 0 * * * *", "timezone", "is not an IANA zone", id="zone-path"),
        pytest.param("TZ= 0 * * * *", "timezone", "the time zone name is empty", id="zone-empty"),
        pytest.param("CRON_TZ=UTC", "schedule", "a space and the schedule must follow", id="zone-alone"),
        pytest.param("TZ=UTC CRON_TZ=UTC 0 * * * *", "schedule", "names its time zone twice", id="two-zones"),
        pytest.param(
            "0 0 30 2 *",
            "day-of-month",
            "'30' never falls in month field '2': the schedule would never fire",
            id="feb-30",
        ),
        pytest.param("0 0 31 APR,JUN *", "day-of-month", "never fire", id="april-31"),
    ],
)
def test_refused_schedules_name_the_field_and_the_reason(text: str, field: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_schedule(text)
    assert caught.value.field == field
    assert message in str(caught.value)
    if "@every" not in text:  # PingSource refuses @every before reading it (next test)
        assert schedule_problem(text) == str(caught.value)


@pytest.mark.parametrize(
    ("text", "start", "expected"),
    [
        pytest.param("0 9 * * mon-FRI", "2012-07-07T00:00Z", "2012-07-09T09:00:00Z", id="day-names-any-case"),
        pytest.param("0 9 ? Jul Sun", "2012-07-01T10:00Z", "2012-07-08T09:00:00Z", id="question-mark"),
        pytest.param("+5 * * * *", "2012-01-01T00:00Z", "2012-01-01T00:05:00Z", id="plus-sign-as-go-atoi"),
        pytest.param("05, * * * *", "2012-01-01T00:00Z", "2012-01-01T00:05:00Z", id="empty-item-dropped"),
        pytest.param("*-5 * * * *", "2012-01-01T00:10Z", "2012-01-01T00:11:00Z", id="star-ignores-range"),
        pytest.param("5/20 * * * *", "2012-01-01T00:30Z", "2012-01-01T00:45:00Z", id="start-and-step"),
        pytest.param("0 0 */2 * SUN", "2012-07-16T00:00Z", "2012-07-17T00:00:00Z", id="step-drops-star-or"),
        pytest.param("0 0 * * SUN", "2012-07-16T00:00Z", "2012-07-22T00:00:00Z", id="star-and"),
        pytest.param("0 0 1,15 * SUN", "2012-06-10T00:00:01Z", "2012-06-15T00:00:00Z", id="both-set-or"),
        pytest.param("  @hourly  ", "2012-01-01T00:10Z", "2012-01-01T01:00:00Z", id="outer-spaces"),
        pytest.param("@midnight", "2012-01-01T00:10Z", "2012-01-02T00:00:00Z", id="midnight"),
        pytest.param("@weekly", "2012-07-10T00:00Z", "2012-07-15T00:00:00Z", id="weekly-is-sunday"),
        pytest.param("@monthly", "2012-07-10T00:00Z", "2012-08-01T00:00:00Z", id="monthly"),
        pytest.param("@annually", "2012-07-10T00:00Z", "2013-01-01T00:00:00Z", id="annually"),
        pytest.param(
            "TZ=Asia/Kolkata @daily", "2012-07-10T00:00Z", "2012-07-10T18:30:00Z", id="tz-descriptor"
        ),
        pytest.param("@every 1h30m", "2012-07-10T00:10:00.5Z", "2012-07-10T01:40:00Z", id="every"),
        pytest.param("@every 1500ms", "2012-07-10T00:10:00.5Z", "2012-07-10T00:10:01Z", id="every-whole-sec"),
    ],
)
def test_accepted_forms_fire_as_knative_fires_them(text: str, start: str, expected: str) -> None:
    # Expected times are robfig/cron v3's (NewParser(SecondOptional|Minute|Hour|Dom|Month|Dow|Descriptor)).
    assert next_times(text, start) == [expected]


@pytest.mark.parametrize(
    ("text", "start", "expected"),
    [
        # robfig/cron spec_test.go TestNext, with its seconds field (Knative's parser takes one as optional).
        pytest.param("0 0/15 * * * *", "2012-07-09T14:59:59Z", "2012-07-09T15:00:00Z", id="quarter"),
        pytest.param("0 20-35/15 * * * *", "2012-07-09T15:45Z", "2012-07-09T16:20:00Z", id="wrap-hour"),
        pytest.param("15/35 20-35/15 * * * *", "2012-07-09T23:35:51Z", "2012-07-10T00:20:15Z", id="wrap-day"),
        pytest.param(
            "15/35 20-35/15 1/2 */2 * *", "2012-07-09T23:35:51Z", "2012-07-11T01:20:15Z", id="odd-days"
        ),
        pytest.param("0 0 0 9 Apr-Oct ?", "2012-07-09T23:35Z", "2012-08-09T00:00:00Z", id="wrap-month"),
        pytest.param(
            "0 0 0 */5 Apr,Aug,Oct Mon", "2012-07-09T23:35Z", "2012-08-01T00:00:00Z", id="dom-or-dow"
        ),
        pytest.param("0 0 0 * Feb Mon/2", "2012-07-09T23:35Z", "2013-02-01T00:00:00Z", id="wrap-year"),
        pytest.param("0 * * * * *", "2012-12-31T23:59:45Z", "2013-01-01T00:00:00Z", id="wrap-everything"),
        pytest.param("0 0 0 29 Feb ?", "2012-07-09T23:35Z", "2016-02-29T00:00:00Z", id="leap-day"),
        # Daylight saving: 2 am EST (-5) jumps to 3 am EDT (-4); 2 am EDT falls back to 1 am EST.
        pytest.param(
            "TZ=America/New_York 0 30 2 11 Mar ?",
            "2012-03-11T00:00-05:00",
            "2013-03-11T06:30:00Z",
            id="skipped",
        ),
        pytest.param(
            "TZ=America/New_York 0 0 * * * ?",
            "2012-03-11T01:00-05:00",
            "2012-03-11T07:00:00Z",
            id="hourly-jump",
        ),
        pytest.param(
            "TZ=America/New_York 0 0 2 * * ?",
            "2012-03-11T00:00-05:00",
            "2012-03-12T06:00:00Z",
            id="2am-skipped",
        ),
        pytest.param(
            "TZ=America/New_York 0 30 1 04 Nov ?",
            "2012-11-04T01:45-04:00",
            "2012-11-04T06:30:00Z",
            id="again",
        ),
        pytest.param(
            "TZ=America/New_York 0 0 1 * * ?",
            "2012-11-04T01:00-04:00",
            "2012-11-04T06:00:00Z",
            id="1am-twice",
        ),
        pytest.param(
            "TZ=America/New_York 0 0 1 * * ?", "2012-11-04T01:00-05:00", "2012-11-05T06:00:00Z", id="1am-then"
        ),
        pytest.param(
            "TZ=America/New_York 0 0 3 3 * ?",
            "2012-11-04T00:00-04:00",
            "2012-12-03T08:00:00Z",
            id="monthly-dst",
        ),
        # Midnight does not exist in Sao Paulo on the day its daylight saving starts.
        pytest.param(
            "TZ=America/Sao_Paulo 0 0 9 10 * ?",
            "2018-10-17T05:00-04:00",
            "2018-11-10T11:00:00Z",
            id="sao-paulo",
        ),
        pytest.param(
            "TZ=America/Sao_Paulo 0 0 9 22 * ?",
            "2018-02-14T05:00-05:00",
            "2018-02-22T12:00:00Z",
            id="sao-paulo-2",
        ),
    ],
)
def test_next_times_match_robfig(text: str, start: str, expected: str) -> None:
    assert next_times(text, start) == [expected]


def test_a_repeated_hour_fires_in_both_offsets_and_a_skipped_one_not_at_all() -> None:
    ny = "CRON_TZ=America/New_York 30 1,2 * * *"
    assert next_times(ny, "2012-11-04T00:00-04:00", 4) == [
        "2012-11-04T05:30:00Z",  # 01:30 EDT
        "2012-11-04T06:30:00Z",  # 01:30 EST, the same wall time an hour later
        "2012-11-04T07:30:00Z",  # 02:30 EST
        "2012-11-05T06:30:00Z",
    ]
    assert next_times(ny, "2012-03-11T00:00-05:00", 3) == [
        "2012-03-11T06:30:00Z",  # 01:30 EST; 02:30 does not exist that night
        "2012-03-12T05:30:00Z",
        "2012-03-12T06:30:00Z",
    ]


@pytest.mark.parametrize(
    ("text", "start", "expected"),
    [
        # robfig skips 2013 here: from 1 April (midnight is skipped in Havana) it keeps stepping at 23:00.
        pytest.param(
            "TZ=America/Havana @yearly",
            "2012-01-01T05:00Z",
            ["2013-01-01T05:00:00Z", "2014-01-01T05:00:00Z"],
            id="havana-every-year",
        ),
        # robfig never returns here: Apia skipped 30 December 2011 when it crossed the date line.
        pytest.param(
            "CRON_TZ=Pacific/Apia * * 4 * *",
            "2011-12-27T15:41:16Z",
            ["2012-01-03T10:00:00Z", "2012-01-03T10:01:00Z"],
            id="apia-missing-day",
        ),
        # Lord Howe moves by half an hour; robfig misses the midnight after the change.
        pytest.param(
            "TZ=Australia/Lord_Howe @midnight",
            "2016-10-01T00:00Z",
            ["2016-10-01T13:30:00Z", "2016-10-02T13:00:00Z"],
            id="lord-howe-half-hour",
        ),
    ],
)
def test_zones_that_trouble_robfig_fire_by_the_wall_clock(text: str, start: str, expected: list[str]) -> None:
    assert next_times(text, start, len(expected)) == expected


def test_the_zone_comes_from_the_prefix_or_spec_timezone_and_defaults_to_utc() -> None:
    moment = at("2024-06-01T12:00Z")
    assert parse_schedule("0 9 * * *").next_after(moment).isoformat() == "2024-06-02T09:00:00+00:00"
    paris = parse_schedule("0 9 * * *", default_tz="Europe/Paris").next_after(moment)
    assert paris.isoformat() == "2024-06-02T09:00:00+02:00"
    assert paris.tzinfo == ZoneInfo("Europe/Paris")
    assert parse_schedule("TZ=Europe/Paris 0 9 * * *").next_after(moment) == paris
    with pytest.raises(CronError, match=r"names its own zone while spec\.timezone is also set"):
        parse_schedule("TZ=Europe/Paris 0 9 * * *", default_tz="Europe/Paris")
    with pytest.raises(CronError, match="'Europe/Pariss' is not an IANA zone") as caught:
        parse_schedule("0 9 * * *", default_tz="Europe/Pariss")
    assert caught.value.field == "timezone"


def test_pingsource_refuses_every_as_knatives_webhook_does() -> None:
    assert parse_schedule("@every 5m").every == 300
    problem = schedule_problem("@every 5m")
    assert problem is not None
    assert "PingSource does not accept @every" in problem
    assert schedule_problem("CRON_TZ=UTC @every 1h") is not None
    assert schedule_problem("*/5 * * * *") is None
    assert schedule_problem("0 9 * * *", "Europe/Oslo") is None
    assert schedule_problem("0 9 * * *", "Europe/Olso") is not None


def test_same_text_gives_equal_schedules_so_a_runtime_can_skip_unchanged_ones() -> None:
    assert parse_schedule("*/5 * * * *") == parse_schedule("*/5 * * * *")
    assert parse_schedule("*/5 * * * *") != parse_schedule("*/10 * * * *")
    assert parse_schedule("0 * * * *", "Asia/Tokyo").zone_name == "Asia/Tokyo"
    assert parse_schedule("0 * * * *").zone_name == "UTC"


def test_next_after_needs_an_aware_moment() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_schedule("* * * * *").next_after(datetime(2024, 1, 1))


def test_a_sparse_schedule_is_found_without_scanning() -> None:
    """Leap days eight years apart (2096, then 2104): the search jumps field by field."""
    schedule = parse_schedule("0 0 29 2 *")
    assert schedule.next_after(at("2096-03-01T00:00Z")).isoformat() == "2104-02-29T00:00:00+00:00"


# Brute force: every minute in a window, read on the zone's wall clock.
ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Havana"]
WINDOW = timedelta(hours=40)


def fires(schedule: Schedule, instant: datetime) -> bool:
    wall = instant.astimezone(schedule.zone)
    day_of_month = bool(schedule.days >> wall.day & 1)
    day_of_week = bool(schedule.weekdays >> (wall.isoweekday() % 7) & 1)
    days = (
        day_of_month and day_of_week
        if schedule.day_star or schedule.weekday_star
        else day_of_month or day_of_week
    )
    return bool(schedule.minutes >> wall.minute & 1 and schedule.hours >> wall.hour & 1) and bool(
        schedule.months >> wall.month & 1 and days
    )


def field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    item = st.one_of(
        value.map(str),
        st.tuples(value, value).map(lambda p: f"{min(p)}-{max(p)}"),
        st.tuples(value, st.integers(1, high)).map(lambda p: f"{p[0]}/{p[1]}"),
        st.integers(2, high).map(lambda step: f"*/{step}"),
    )
    return st.one_of(st.just("*"), st.lists(item, min_size=1, max_size=3).map(",".join))


@settings(max_examples=150, deadline=None)
@given(
    minute=field(0, 59),
    hour=field(0, 23),
    day=st.one_of(st.just("*"), field(1, 31)),
    month=st.one_of(st.just("*"), field(1, 12)),
    weekday=st.one_of(st.just("*"), field(0, 6)),
    zone=st.sampled_from(ZONES),
    start=st.datetimes(datetime(2010, 1, 1), datetime(2030, 12, 31), timezones=st.just(UTC)),
)
def test_next_after_is_the_first_matching_minute_of_a_brute_force_scan(
    minute: str, hour: str, day: str, month: str, weekday: str, zone: str, start: datetime
) -> None:
    try:
        schedule = parse_schedule(f"{minute} {hour} {day} {month} {weekday}", zone)
    except CronError:
        return  # a day that never comes (31 April); covered by the table above
    found = schedule.next_after(start).astimezone(UTC)
    assert found > start
    assert found.second == 0
    assert fires(schedule, found)
    minute_start = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    scan = minute_start
    while scan < min(found, start + WINDOW):
        assert not fires(schedule, scan), f"missed {scan.astimezone(schedule.zone)}"
        scan += timedelta(minutes=1)
