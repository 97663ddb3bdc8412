"""Time rules of a subscription and of a user: digest schedules and quiet hours.

Pure functions of an injected ``now`` and the user's IANA time zone, so a daily digest
at 10:00 stays at 10:00 local time across daylight-saving changes and tests move time
by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class Frequency(StrEnum):
    IMMEDIATE = "immediate"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a subscription's notifications go out: at once, or collected in a digest."""

    frequency: Frequency = Frequency.IMMEDIATE
    at: time | None = None  # daily and weekly: local time of day (default 09:00)
    weekday: int | None = None  # weekly: 0 = Monday (default Monday)

    @property
    def immediate(self) -> bool:
        return self.frequency is Frequency.IMMEDIATE

    def encode(self) -> str:
        """Compact form for storage: 'immediate', 'hourly', 'daily@10:00', 'weekly@4@10:00'."""
        if self.frequency in (Frequency.IMMEDIATE, Frequency.HOURLY):
            return self.frequency.value
        at = (self.at or DEFAULT_AT).strftime("%H:%M")
        if self.frequency is Frequency.DAILY:
            return f"daily@{at}"
        return f"weekly@{self.weekday or 0}@{at}"

    @classmethod
    def decode(cls, value: str) -> Schedule:
        parts = value.split("@")
        frequency = Frequency(parts[0])
        if frequency is Frequency.DAILY:
            return cls(frequency, parse_clock(parts[1]))
        if frequency is Frequency.WEEKLY:
            return cls(frequency, parse_clock(parts[2]), int(parts[1]))
        return cls(frequency)


DEFAULT_AT = time(9, 0)


def parse_clock(value: str) -> time:
    """'HH:MM' (24 h) -> time; ValueError with a message for a person otherwise."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a time of day like 09:30")
    return time(int(match[1]), int(match[2]))


def parse_weekday(value: str | int) -> int:
    if isinstance(value, int) and 0 <= value <= 6:
        return value
    name = str(value).strip().lower()
    for index, day in enumerate(WEEKDAYS):
        if day.startswith(name) and len(name) >= 3:
            return index
    raise ValueError(f"{value!r} is not a weekday like 'friday'")


def _local(zone: str, now: datetime) -> datetime:
    return now.astimezone(ZoneInfo(zone))


def _at(day: datetime, clock: time) -> datetime:
    """``clock`` on ``day``'s date in ``day``'s zone, as UTC; DST-gap times move forward."""
    zone = day.tzinfo
    local = datetime(day.year, day.month, day.day, clock.hour, clock.minute, tzinfo=zone)
    # A wall time that does not exist (spring forward) round-trips to a later one.
    return local.astimezone(UTC)


def next_due(schedule: Schedule, zone: str, now: datetime) -> datetime:
    """The first digest time of ``schedule`` strictly after ``now``, in UTC."""
    local = _local(zone, now)
    if schedule.frequency is Frequency.IMMEDIATE:
        return now
    if schedule.frequency is Frequency.HOURLY:
        top = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return top.astimezone(UTC)
    at = schedule.at or DEFAULT_AT
    for days in range(0, 8):
        day = local + timedelta(days=days)
        if schedule.frequency is Frequency.WEEKLY and day.weekday() != (schedule.weekday or 0):
            continue
        due = _at(day, at)
        if due > now:
            return due
    raise AssertionError("a weekly schedule always has a time within eight days")


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time

    def encode(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @classmethod
    def decode(cls, value: str) -> QuietHours:
        start, end = value.split("-")
        return cls(parse_clock(start), parse_clock(end))


def quiet_until(quiet: QuietHours | None, zone: str, now: datetime) -> datetime | None:
    """When the quiet window that contains ``now`` ends (UTC), or None outside one.

    A window may cross midnight (22:00-07:00).
    """
    if quiet is None or quiet.start == quiet.end:
        return None
    local = _local(zone, now)
    wall = local.time().replace(second=0, microsecond=0, tzinfo=None)
    crosses_midnight = quiet.start > quiet.end
    inside = (
        (wall >= quiet.start or wall < quiet.end)
        if crosses_midnight
        else quiet.start <= wall < quiet.end
    )
    if not inside:
        return None
    end_day = local if wall < quiet.end else local + timedelta(days=1)
    return _at(end_day, quiet.end)


@dataclass(frozen=True, slots=True)
class Throttle:
    """At most ``count`` notifications per ``period`` on one channel for one user."""

    count: int
    period: timedelta

    @classmethod
    def parse(cls, value: str) -> Throttle:
        """'5/1h', '20/1d', '3/30m'."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*([smhd])\s*", value)
        if match is None or int(match[1]) < 1 or int(match[2]) < 1:
            raise ValueError(f"{value!r} is not a throttle like 5/1h (count/period)")
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[3]]
        return cls(int(match[1]), timedelta(**{unit: int(match[2])}))
