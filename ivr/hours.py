"""Business hours and holidays in a time zone: is the contact center open at a moment?

Pure: the moment is an argument (an aware ``datetime``), so tests pass any time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class HoursFormatError(ValueError):
    """A weekly schedule or holiday written in a form this module does not read."""


@dataclass(frozen=True)
class OpeningInterval:
    """Open from ``start`` (inclusive) to ``end`` (exclusive); ``end`` None means midnight."""

    start: time
    end: time | None

    def contains(self, moment: time) -> bool:
        return self.start <= moment and (self.end is None or moment < self.end)


@dataclass(frozen=True)
class BusinessHours:
    timezone: ZoneInfo
    weekly: Mapping[int, tuple[OpeningInterval, ...]]
    """Weekday (0 = Monday) to its opening intervals; a missing day is closed."""
    holidays: frozenset[date] = field(default_factory=frozenset)

    def is_open(self, moment: datetime) -> bool:
        if moment.tzinfo is None:
            raise ValueError("business hours need an aware datetime")
        local = moment.astimezone(self.timezone)
        if local.date() in self.holidays:
            return False
        now = local.time().replace(tzinfo=None)
        return any(interval.contains(now) for interval in self.weekly.get(local.weekday(), ()))


def parse_days(text: str) -> list[int]:
    """``mon``, ``mon-fri`` or ``sat,sun`` to weekday numbers (0 = Monday)."""
    days: list[int] = []
    for part in text.lower().replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if first not in WEEKDAYS or (dash and last not in WEEKDAYS):
            raise HoursFormatError(f"{text!r} is not a day or a day range like mon-fri")
        start = WEEKDAYS.index(first)
        end = WEEKDAYS.index(last) if dash else start
        if end < start:
            raise HoursFormatError(f"{text!r}: a day range must run forwards (mon-fri)")
        days.extend(range(start, end + 1))
    return days


def _clock_time(text: str, whole: str) -> time:
    hours, colon, minutes = text.partition(":")
    if not (colon and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise HoursFormatError(f"{whole!r}: times must be HH:MM")
    if int(hours) == 24 and int(minutes) == 0:
        return time(0, 0)
    if not (0 <= int(hours) < 24 and 0 <= int(minutes) < 60):
        raise HoursFormatError(f"{whole!r}: {text} is not a time of day")
    return time(int(hours), int(minutes))


def parse_intervals(text: str) -> tuple[OpeningInterval, ...]:
    """``09:00-18:00``, ``09:00-13:00, 15:00-19:00`` or ``closed``; ``24:00`` means midnight."""
    if text.strip().lower() == "closed":
        return ()
    intervals = []
    for part in text.split(","):
        start_text, dash, end_text = part.strip().partition("-")
        if not dash:
            raise HoursFormatError(f"{text!r}: expected HH:MM-HH:MM or 'closed'")
        start = _clock_time(start_text.strip(), text)
        end_raw = end_text.strip()
        end: time | None = None if end_raw == "24:00" else _clock_time(end_raw, text)
        if end is not None and end <= start:
            raise HoursFormatError(f"{text!r}: an interval must end after it starts")
        intervals.append(OpeningInterval(start, end))
    return tuple(intervals)


def parse_holiday(value: object) -> date:
    """A holiday as YAML gives it: a date (unquoted 2025-12-25) or an ISO date string."""
    if isinstance(value, datetime):
        raise HoursFormatError(f"{value!r}: a holiday is a date, without a time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise HoursFormatError(f"{value!r} is not a date like 2025-12-25")
