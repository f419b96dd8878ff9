"""Six-field NCRONTAB schedules, as the Functions timer trigger reads them (UTC).

`{second} {minute} {hour} {day} {month} {day-of-week}`; each field is `*`, a value, a range `a-b`,
a list `a,b,c`, or a step `*/n`, `a-b/n`, `a/n`. Months and days of the week also accept their
three-letter English names (`JAN`, `MON`). Day of week runs 0-6 with Sunday = 0.

Like NCrontab (the library the runtime uses), a time matches only when the day of month AND the
day of week both match; classic Vixie cron would accept either.
"""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

FIELD_NAMES = ("second", "minute", "hour", "day", "month", "day-of-week")
_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_NAMES = {4: _MONTHS, 5: _WEEKDAYS}
_SEARCH_YEARS = 30  # a Feb-29-on-a-Monday schedule recurs within 28 years


class CronError(ValueError):
    """An expression the timer trigger would refuse; the message says which part and why."""


@dataclass(frozen=True)
class NCrontab:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (aware, or naive meaning UTC), in UTC."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        t = moment.astimezone(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
        last_year = t.year + _SEARCH_YEARS
        while t.year <= last_year:
            if t.month not in self.months:
                t = _first_of_next_month(t)
            elif t.day not in self.days or (t.weekday() + 1) % 7 not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise CronError(f"NCRONTAB expression {self.expression!r} has no occurrence within {_SEARCH_YEARS} years")

    def __str__(self) -> str:
        return self.expression


def parse(expression: str) -> NCrontab:
    """Parse a six-field NCRONTAB expression or raise CronError naming the faulty field."""
    fields = expression.split()
    if len(fields) != 6:
        raise CronError(
            f"invalid NCRONTAB expression {expression!r}: expected 6 fields "
            f"{{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}, got {len(fields)}")
    try:
        sets = [_parse_field(text, index) for index, text in enumerate(fields)]
    except CronError as exc:
        raise CronError(f"invalid NCRONTAB expression {expression!r}: {exc}") from None
    schedule = NCrontab(" ".join(fields), *map(frozenset, sets))
    if not any(day <= _longest_month(month) for month in schedule.months for day in schedule.days):
        raise CronError(f"invalid NCRONTAB expression {expression!r}: day and month never meet")
    return schedule


def _parse_field(text: str, index: int) -> set[int]:
    name, (low, high) = FIELD_NAMES[index], _RANGES[index]
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name} field {text!r} has an empty list item")
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            step = _number(step_text, index, name, text)
            if step < 1:
                raise CronError(f"{name} field {text!r}: step must be at least 1")
        if span == "*":
            start, end = low, high
        elif "-" in span:
            first, _, last = span.partition("-")
            start, end = _value(first, index, name, text), _value(last, index, name, text)
            if start > end:
                raise CronError(f"{name} field {text!r}: range {start}-{end} runs backwards")
        else:
            start = _value(span, index, name, text)
            end = high if step_text else start  # `a/n` means from a to the end, every n
        values.update(range(start, end + 1, step))
    return values


def _value(token: str, index: int, name: str, field: str) -> int:
    named = _NAMES.get(index, {}).get(token.upper())
    value = named if named is not None else _number(token, index, name, field)
    low, high = _RANGES[index]
    if not low <= value <= high:
        raise CronError(f"{name} field {field!r}: {value} is out of range {low}-{high}")
    return value


def _number(token: str, index: int, name: str, field: str) -> int:
    if not token.isdigit():
        raise CronError(f"{name} field {field!r}: {token!r} is not a number")
    return int(token)


def _longest_month(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def _first_of_next_month(t: datetime) -> datetime:
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
