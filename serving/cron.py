"""Cron schedules as Knative's PingSource reads them (robfig/cron v3 with optional seconds and descriptors),
and the next time each one fires: the PingSource runtime (`eventing.ping`) sleeps until that time, and the
YAML validation (`serving.events`) reports a schedule's problem the way Knative's webhook would.

Grammar: five fields `minute hour day-of-month month day-of-week`, or six with a seconds field first (Knative
parses with robfig's `SecondOptional`); each field a comma list of `*`, `?`, `N`, `N-M`, with `/step`, month
names JAN-DEC and day names SUN-SAT in any case (Sunday is 0; robfig refuses 7). Or a descriptor: `@yearly`,
`@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`, `@every <Go duration>`. Either may
follow a `CRON_TZ=Zone ` or `TZ=Zone ` prefix; without one the zone is UTC (as in Knative's adapter pod).

Day-of-month and day-of-week combine as in robfig: when either field contains `*` or `?` (without a step over
1), a day must match both; otherwise a day matching either fires.

Everything Knative accepts is accepted here with the same meaning, except a schedule that can never fire
(`0 0 30 2 *`, a field that is only commas), which Knative accepts and then silently never runs.
"""

from __future__ import annotations

import calendar
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Final

from serving.duration import DurationError, parse_duration_nanos

_NUMBER_RE: Final = re.compile(r"[+-]?[0-9]+")
"""Go's `strconv.Atoi`, which robfig uses: an optional sign, ASCII digits only."""
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_SEARCH_YEARS: Final = 10
"""How far `next_after` looks before giving up. robfig stops after 5 years; every schedule that parses here
fires at least once in 8 years (February 29 skips 2100), so 10 is never reached with real zone rules."""


class CronError(ValueError):
    """`text` is not a schedule Knative would run; `field` names the part at fault (`minute`, `day-of-week`,
    `timezone`, `schedule` for the whole text, ...), and the message says which value and why."""

    def __init__(self, text: str, field: str, message: str) -> None:
        self.text = text
        self.field = field
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class _Bounds:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    note: str = ""


_MONTH_NAMES: Final = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_SECOND: Final = _Bounds("second", 0, 59)
_MINUTE: Final = _Bounds("minute", 0, 59)
_HOUR: Final = _Bounds("hour", 0, 23)
_DOM: Final = _Bounds("day-of-month", 1, 31)
_MONTH: Final = _Bounds(
    "month",
    1,
    12,
    {name: i + 1 for i, name in enumerate(_MONTH_NAMES)},
)
_DOW: Final = _Bounds(
    "day-of-week",
    0,
    6,
    {name: i for i, name in enumerate(_DAY_NAMES)},
    note=" (Sunday is 0 or SUN; 7 is not accepted)",
)
_FIELDS: Final = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)
_ALL_DAYS: Final = sum(1 << d for d in range(1, 32))
_ALL_WEEKDAYS: Final = 0b1111111
_ALL_MONTHS: Final = 0b1111111111110

# robfig's descriptors as (seconds, minutes, hours, days, months, weekdays, day_star, weekday_star).
_DESCRIPTORS: Final = {
    "@yearly": (1, 1, 1, 1 << 1, 1 << 1, _ALL_WEEKDAYS, False, True),
    "@annually": (1, 1, 1, 1 << 1, 1 << 1, _ALL_WEEKDAYS, False, True),
    "@monthly": (1, 1, 1, 1 << 1, _ALL_MONTHS, _ALL_WEEKDAYS, False, True),
    "@weekly": (1, 1, 1, _ALL_DAYS, _ALL_MONTHS, 1, True, False),
    "@daily": (1, 1, 1, _ALL_DAYS, _ALL_MONTHS, _ALL_WEEKDAYS, True, True),
    "@midnight": (1, 1, 1, _ALL_DAYS, _ALL_MONTHS, _ALL_WEEKDAYS, True, True),
    "@hourly": (1, 1, (1 << 24) - 1, _ALL_DAYS, _ALL_MONTHS, _ALL_WEEKDAYS, True, True),
}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule: bit masks of the values each field allows (bit N set: value N), or a fixed period.

    Immutable and cheap to compare, so a runtime can tell whether a source's schedule changed.
    """

    text: str
    """The schedule as written (without a zone given separately)."""
    zone: tzinfo
    """Where the fields are read: the `CRON_TZ=`/`TZ=` zone, else `default_tz`, else UTC."""
    seconds: int = 1
    minutes: int = 1
    hours: int = 1
    days: int = _ALL_DAYS
    months: int = _ALL_MONTHS
    weekdays: int = _ALL_WEEKDAYS
    """Bit 0 is Sunday, as Go's `time.Weekday`."""
    day_star: bool = True
    """The day-of-month field holds `*` or `?` (robfig's star bit): days then need both day fields."""
    weekday_star: bool = True
    every: int | None = None
    """`@every`: whole seconds between firings (robfig drops fractions of a second; at least one)."""

    @property
    def zone_name(self) -> str:
        return str(self.zone)

    def next_after(self, moment: datetime) -> datetime:
        """The first firing strictly after `moment` (aware), as an aware datetime in the schedule's zone.

        The first instant whose wall clock in the zone matches, as robfig's `SpecSchedule.Next` finds it, so
        daylight saving behaves as in Knative: a time a jump forward skips does not fire that day (02:30 on
        New York's spring-forward night: the next firing is 02:30 the day after), and a time the jump back
        repeats fires twice, once in each offset (01:30 EDT, then 01:30 EST). Where clocks change at
        midnight (Havana, Tehran) or by half an hour (Lord Howe) robfig can miss firings, and across a day a
        zone skipped (Apia, 2011-12-30) it loops forever; here those days fire as the wall clock says.
        `@every` fires its period after `moment` with the fraction of a second dropped, as robfig does.

        Compare results as instants (`.timestamp()`, or after `.astimezone(UTC)`): Python never finds a time
        in a repeated hour equal to a time in another zone.
        """
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"next_after needs an aware datetime, got {moment.isoformat()}")
        start = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)
        if self.every is not None:
            return datetime.fromtimestamp(start + self.every, self.zone)
        return datetime.fromtimestamp(_next(self, start + 1), self.zone)


def _offset(zone: tzinfo, ts: int) -> int:
    offset = datetime.fromtimestamp(ts, zone).utcoffset()
    assert offset is not None  # every tzinfo here is a fixed or IANA zone
    return offset // timedelta(seconds=1)


def _next(s: Schedule, t: int) -> int:
    """The first instant at or after `t` (Unix seconds) whose wall clock in the zone matches every field.

    Field by field, coarsest first: a field that does not match moves `t` to the first instant whose wall
    clock reaches the field's next allowed value, and every field is checked again from there. Each step
    costs a few zone lookups, so a year's search takes a handful of steps, not a scan.
    """
    zone = s.zone
    limit = datetime.fromtimestamp(t, zone).year + _SEARCH_YEARS
    while True:
        local = datetime.fromtimestamp(t, zone)
        if local.year > limit:
            raise CronError(s.text, "schedule", f"schedule {s.text!r} has no time in {_SEARCH_YEARS} years")
        wall = _candidate(s, local)
        if wall is None:
            return t
        after = _fall_back_between(zone, t, _reach(zone, t, wall))
        t = after if after > t else t + 1  # progress even if zone data is stranger than any known zone


def _candidate(s: Schedule, w: datetime) -> int | None:
    """None if wall clock `w` matches; else the wall time (seconds, read as UTC) where the first field that
    does not match takes its next allowed value, finer fields at their start."""
    if not s.months >> w.month & 1:
        month = _next_bit(s.months, w.month, 13)
        if month == 13:
            return _wall(w.year + 1, _next_bit(s.months, 0, 13), 1)
        return _wall(w.year, month, 1)
    day = w.day
    if not _day_matches(s, w.year, w.month, day):
        last = calendar.monthrange(w.year, w.month)[1]
        day = next((d for d in range(day + 1, last + 1) if _day_matches(s, w.year, w.month, d)), last + 1)
        return _wall(w.year, w.month, day)  # day `last + 1` is the 1st of the next month
    midnight = _wall(w.year, w.month, day)
    for mask, value, top, unit, base in (
        (s.hours, w.hour, 24, 3600, midnight),
        (s.minutes, w.minute, 60, 60, midnight + w.hour * 3600),
        (s.seconds, w.second, 60, 1, midnight + w.hour * 3600 + w.minute * 60),
    ):
        if not mask >> value & 1:
            return base + _next_bit(mask, value, top) * unit  # `top` carries into the coarser field
    return None


def _wall(year: int, month: int, day: int) -> int:
    return (date(year, month, 1).toordinal() - _EPOCH_ORDINAL + day - 1) * 86400


def _reach(zone: tzinfo, t: int, wall: int) -> int:
    """The first instant at or after `t` whose wall clock shows `wall`, or, when a jump forward skips
    `wall`, the instant of that jump (its wall clock is the first one past `wall`)."""
    naive = datetime.fromtimestamp(wall, UTC).replace(tzinfo=None)
    first = int(naive.replace(tzinfo=zone).timestamp())
    second = int(naive.replace(tzinfo=zone, fold=1).timestamp())
    if first <= second:  # `wall` exists, once or (in a jump back) twice
        return next((i for i in (first, second) if i >= t), second)
    # In a gap, fold=0 reads `wall` with the offset before the jump and fold=1 with the one after, so the
    # jump lies in (second, first]: find its instant.
    after_jump = _offset(zone, first)
    low, high = second, first
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(zone, middle) == after_jump:
            high = middle
        else:
            low = middle
    return max(high, t)


def _fall_back_between(zone: tzinfo, t: int, after: int) -> int:
    """`after`, or the instant of a jump back within a day after `t` if one comes first.

    The wall times a jump back repeats may include some before `t`'s wall clock, which no field check has
    seen; moving to the jump lets the search see them (01:30 EST after 01:45 EDT). Jumps further than a day
    away repeat only wall times between `t` and `after`, which the checks already ruled out.
    """
    probe = min(after, t + 86400)
    before = _offset(zone, t)
    if _offset(zone, probe) >= before:
        return after
    low, high = t, probe
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(zone, middle) < before:
            high = middle
        else:
            low = middle
    return high


def _weekday(year: int, month: int, day: int) -> int:
    return (date(year, month, day).weekday() + 1) % 7


def _day_matches(s: Schedule, year: int, month: int, day: int) -> bool:
    dom = bool(s.days >> day & 1)
    dow = bool(s.weekdays >> _weekday(year, month, day) & 1)
    if s.day_star or s.weekday_star:
        return dom and dow
    return dom or dow


def _next_bit(mask: int, after: int, limit: int) -> int:
    """The smallest value in (after, limit) whose bit is set in `mask`, else `limit`."""
    for value in range(after + 1, limit):
        if mask >> value & 1:
            return value
    return limit


def parse_schedule(text: str, default_tz: str | None = None) -> Schedule:
    """Parse `text` as Knative's PingSource adapter does; raises `CronError`.

    `default_tz` is the PingSource's `spec.timezone`: Knative prepends `CRON_TZ=<timezone> ` to the schedule,
    so a zone named both there and in the schedule's own prefix is an error, as in Knative. Surrounding
    whitespace is ignored.
    """
    spec = text.strip()
    if not spec:
        raise CronError(text, "schedule", "the schedule is empty")
    zone: tzinfo = UTC
    if default_tz is not None:
        zone = _zone(text, default_tz)
    if spec.startswith(("TZ=", "CRON_TZ=")):
        space = spec.find(" ")
        if space < 0:
            raise CronError(
                text, "schedule", f"schedule {text!r}: a space and the schedule must follow the zone"
            )
        if default_tz is not None:
            raise CronError(
                text, "schedule", f"schedule {text!r} names its own zone while spec.timezone is also set"
            )
        zone = _zone(text, spec[spec.index("=") + 1 : space])
        spec = spec[space:].strip()
        if spec.startswith(("TZ=", "CRON_TZ=")):
            raise CronError(text, "schedule", f"schedule {text!r} names its time zone twice")
    if spec.startswith("@"):
        return _descriptor(text, spec, zone)
    fields = spec.split()
    if len(fields) == 5:
        fields.insert(0, "0")
    elif len(fields) != 6:
        raise CronError(
            text,
            "schedule",
            f"schedule {text!r} has {len(fields)} field{'s' if len(fields) != 1 else ''}; expected 5 "
            "(minute hour day-of-month month day-of-week), or 6 with seconds first",
        )
    masks = [_field(text, value, bounds) for value, bounds in zip(fields, _FIELDS, strict=True)]
    schedule = Schedule(
        text=text,
        zone=zone,
        seconds=masks[0][0],
        minutes=masks[1][0],
        hours=masks[2][0],
        days=masks[3][0],
        months=masks[4][0],
        weekdays=masks[5][0],
        day_star=masks[3][1],
        weekday_star=masks[5][1],
    )
    _check_fires(schedule, fields)
    return schedule


def schedule_problem(text: str, default_tz: str | None = None) -> str | None:
    """What Knative's PingSource webhook would say about `spec.schedule` (and `spec.timezone`), or None.

    Stricter than `parse_schedule` in one way, as Knative is: PingSource refuses `@every`.
    """
    if "@every" in text:
        return f"schedule {text!r}: PingSource does not accept @every; use a cron schedule like '*/5 * * * *'"
    try:
        parse_schedule(text, default_tz)
    except CronError as error:
        return str(error)
    return None


def _zone(text: str, name: str) -> tzinfo:
    if not name:
        raise CronError(text, "timezone", f"schedule {text!r}: the time zone name is empty")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(
            text, "timezone", f"time zone {name!r} is not an IANA zone name such as 'Europe/Paris' or 'UTC'"
        ) from None


def _descriptor(text: str, spec: str, zone: tzinfo) -> Schedule:
    masks = _DESCRIPTORS.get(spec)
    if masks is not None:
        seconds, minutes, hours, days, months, weekdays, day_star, weekday_star = masks
        return Schedule(
            text=text,
            zone=zone,
            seconds=seconds,
            minutes=minutes,
            hours=hours,
            days=days,
            months=months,
            weekdays=weekdays,
            day_star=day_star,
            weekday_star=weekday_star,
        )
    if spec.startswith("@every "):
        duration = spec[len("@every ") :]
        try:
            nanos = parse_duration_nanos(duration)
        except DurationError as error:
            raise CronError(text, "schedule", f"schedule {text!r}: {error}") from None
        if nanos <= 0:
            raise CronError(text, "schedule", f"schedule {text!r}: @every needs a positive duration")
        return Schedule(text=text, zone=zone, every=max(nanos // 1_000_000_000, 1))
    known = ", ".join(sorted(_DESCRIPTORS))
    raise CronError(
        text, "schedule", f"schedule {text!r}: unknown descriptor (known: {known}, @every <duration>)"
    )


def _field(text: str, value: str, bounds: _Bounds) -> tuple[int, bool]:
    """The bit mask of one field and whether it holds robfig's star (`*` or `?` with a step of at most 1)."""
    mask = 0
    star = False
    for item in value.split(","):
        if item:  # robfig drops empty list items (`5,` is `5`)
            bits, item_star = _range(text, value, item, bounds)
            mask |= bits
            star = star or item_star
    if not mask:
        raise CronError(text, bounds.name, f"{bounds.name} field {value!r}: no values")
    return mask, star


def _range(text: str, value: str, item: str, b: _Bounds) -> tuple[int, bool]:
    def fail(reason: str) -> CronError:
        return CronError(text, b.name, f"{b.name} field {value!r}: {reason}")

    range_and_step = item.split("/")
    if len(range_and_step) > 2:
        raise fail(f"{item!r} has more than one '/'")
    low_high = range_and_step[0].split("-")
    if low_high[0] in ("*", "?"):  # robfig ignores anything after `*-`, so `*-5` is `*`
        start, end, star = b.low, b.high, True
    elif len(low_high) > 2:
        raise fail(f"{item!r} has more than one '-'")
    else:
        start = _number(low_high[0], b, item, fail)
        end = _number(low_high[1], b, item, fail) if len(low_high) == 2 else start
        star = False
    step = 1
    if len(range_and_step) == 2:
        step_text = range_and_step[1]
        if not _NUMBER_RE.fullmatch(step_text):
            raise fail(f"the step in {item!r} is not a number")
        step = int(step_text) if len(step_text) < 19 else 1 << 63
        if len(low_high) == 1:  # `N/step` means N through the field's maximum
            end = b.high
        if step > 1:
            star = False
    for number in (start, end):
        if not b.low <= number <= b.high:
            raise fail(f"{number} is out of range {b.low}-{b.high}{b.note}")
    if start > end:
        raise fail(f"range {item!r} runs backwards (ranges do not wrap around)")
    if step < 1:
        raise fail(f"the step in {item!r} must be at least 1")
    return sum(1 << v for v in range(start, end + 1, step)), star


def _number(part: str, b: _Bounds, item: str, fail: Callable[[str], CronError]) -> int:
    if b.names is not None and part.lower() in b.names:
        return b.names[part.lower()]
    if not _NUMBER_RE.fullmatch(part):
        if not part:
            raise fail(f"{item!r} is missing a number")
        kind = {"month": " nor a month name (JAN-DEC)", "day-of-week": " nor a day name (SUN-SAT)"}
        raise fail(f"{part!r} is not a number{kind.get(b.name, '')}")
    number = int(part) if len(part) < 19 else 1 << 63
    if number < 0:
        raise fail(f"{number} is out of range {b.low}-{b.high}{b.note}")
    return number


def _check_fires(s: Schedule, fields: list[str]) -> None:
    """Refuse day fields that no date satisfies (robfig would accept them and never fire)."""
    dated = any(
        s.days >> day & 1 and day <= (29 if month == 2 else calendar.monthrange(2001, month)[1])
        for month in range(1, 13)
        if s.months >> month & 1
        for day in range(1, 32)
    )
    fires = dated if s.day_star or s.weekday_star else dated or bool(s.weekdays)
    if not fires:
        raise CronError(
            s.text,
            "day-of-month",
            f"day-of-month field {fields[3]!r} never falls in month field {fields[4]!r}: the schedule would "
            "never fire",
        )
