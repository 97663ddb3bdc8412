"""Digest times, quiet hours and throttles: local time rules across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from notefly.domain import Message, Priority
from notefly.policy import plan_delivery
from notefly.schedule import (
    Frequency,
    QuietHours,
    Schedule,
    Throttle,
    next_due,
    parse_clock,
    parse_weekday,
    quiet_until,
)

BERLIN = "Europe/Berlin"
DAILY_10 = Schedule(Frequency.DAILY, parse_clock("10:00"))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(dt: datetime, zone: str = BERLIN) -> str:
    return dt.astimezone(ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M")


def test_a_daily_digest_stays_at_ten_local_across_the_autumn_change():
    # Berlin leaves summer time on 2026-10-25 at 03:00.
    times = []
    now = utc(2026, 10, 23, 12)
    for _ in range(4):
        now = next_due(DAILY_10, BERLIN, now)
        times.append(now)
    assert [local(t) for t in times] == [
        "Sat 2026-10-24 10:00",
        "Sun 2026-10-25 10:00",
        "Mon 2026-10-26 10:00",
        "Tue 2026-10-27 10:00",
    ]
    assert [t.hour for t in times] == [8, 9, 9, 9]  # UTC moves, local time does not


def test_a_daily_digest_stays_at_ten_local_across_the_spring_change():
    now = utc(2026, 3, 28, 12)  # the change is on 2026-03-29
    first = next_due(DAILY_10, BERLIN, now)
    second = next_due(DAILY_10, BERLIN, first)
    assert (local(first), local(second)) == ("Sun 2026-03-29 10:00", "Mon 2026-03-30 10:00")
    assert (first.hour, second.hour) == (8, 8)


def test_weekly_and_hourly_schedules():
    weekly = Schedule(Frequency.WEEKLY, parse_clock("10:00"), parse_weekday("Fri"))
    assert local(next_due(weekly, BERLIN, utc(2026, 11, 22, 8))) == "Fri 2026-11-27 10:00"
    # Exactly at the due time, the next one is a week later.
    due = next_due(weekly, BERLIN, utc(2026, 11, 22, 8))
    assert local(next_due(weekly, BERLIN, due)) == "Fri 2026-12-04 10:00"
    hourly = Schedule(Frequency.HOURLY)
    assert next_due(hourly, "Asia/Kolkata", utc(2026, 11, 22, 8, 10)) == utc(2026, 11, 22, 8, 30)


def test_schedules_survive_storage():
    for schedule in (
        Schedule(),
        Schedule(Frequency.HOURLY),
        DAILY_10,
        Schedule(Frequency.WEEKLY, parse_clock("07:30"), 6),
    ):
        assert Schedule.decode(schedule.encode()) == schedule


@pytest.mark.parametrize("bad", ["25:00", "9", "10:60", "noon"])
def test_bad_times_are_refused(bad):
    with pytest.raises(ValueError, match="time of day"):
        parse_clock(bad)


def test_quiet_hours_across_midnight():
    quiet = QuietHours(parse_clock("22:00"), parse_clock("07:00"))
    assert quiet_until(quiet, BERLIN, utc(2026, 11, 16, 20, 59)) is None  # 21:59 local
    assert local(quiet_until(quiet, BERLIN, utc(2026, 11, 16, 22, 0))) == "Tue 2026-11-17 07:00"
    assert local(quiet_until(quiet, BERLIN, utc(2026, 11, 17, 3, 0))) == "Tue 2026-11-17 07:00"
    assert quiet_until(quiet, BERLIN, utc(2026, 11, 17, 6, 0)) is None  # 07:00 local


def test_throttles_parse():
    assert Throttle.parse("5/1h") == Throttle(5, timedelta(hours=1))
    assert Throttle.parse("20 / 1d") == Throttle(20, timedelta(days=1))
    with pytest.raises(ValueError, match="5/1h"):
        Throttle.parse("five per hour")


def test_the_plan_of_one_delivery():
    now = utc(2026, 11, 16, 22, 30)  # 23:30 in Berlin
    quiet = QuietHours(parse_clock("22:00"), parse_clock("07:00"))
    normal = Message("m", "finance", "x", now)
    urgent = Message("m", "finance", "x", now, priority=Priority.URGENT)
    throttle = Throttle(2, timedelta(hours=1))

    def plan(message, schedule=Schedule(), sent=0, q=quiet):  # noqa: B008
        return plan_delivery(
            message, schedule, zone=BERLIN, quiet=q, throttle=throttle, sent_recently=sent, now=now
        )

    assert plan(urgent, DAILY_10, sent=9).now  # urgent pierces everything
    digest = plan(normal, DAILY_10)
    assert digest.digest
    assert local(digest.not_before) == "Tue 2026-11-17 10:00"
    held = plan(normal)
    assert not held.digest
    assert local(held.not_before) == "Tue 2026-11-17 07:00"
    assert held.note.startswith("quiet hours")
    folded = plan(normal, sent=2, q=None)
    assert folded.digest
    assert folded.not_before == now + timedelta(hours=1)
    assert "throttled" in folded.note
    assert plan(normal, sent=1, q=None).now
