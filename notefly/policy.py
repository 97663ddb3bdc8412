"""How one delivery goes out: at once, later, or collected for a digest.

Decided at fan-out time from the subscription's schedule, the user's quiet hours and
the channel's throttle, and written onto the delivery row, so that the decision
survives restarts and any node can carry it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from notefly.domain import Message, Priority
from notefly.schedule import QuietHours, Schedule, Throttle, next_due, quiet_until


@dataclass(frozen=True, slots=True)
class Plan:
    digest: bool = False  # collected for a digest instead of sent on its own
    not_before: datetime | None = None  # goes out (or into its digest) from then on
    note: str | None = None  # what the delivery row says about it

    @property
    def now(self) -> bool:
        return not self.digest and self.not_before is None


AT_ONCE = Plan()


def plan_delivery(
    message: Message,
    schedule: Schedule,
    *,
    zone: str,
    quiet: QuietHours | None,
    throttle: Throttle | None,
    sent_recently: int,
    now: datetime,
) -> Plan:
    """``sent_recently``: this user's immediate deliveries on this channel within the
    throttle's period, this one not counted."""
    if message.priority is Priority.URGENT:  # urgent pierces digests, quiet hours, throttle
        return AT_ONCE
    if not schedule.immediate:
        return Plan(digest=True, not_before=next_due(schedule, zone, now))
    if throttle is not None and sent_recently >= throttle.count:
        return Plan(
            digest=True,
            not_before=now + throttle.period,
            note=f"throttled: more than {throttle.count} in {_span(throttle)};"
            " folded into the next digest",
        )
    until = quiet_until(quiet, zone, now)
    if until is not None:
        return Plan(not_before=until, note=f"quiet hours: held until {until.isoformat()}")
    return AT_ONCE


def _span(throttle: Throttle) -> str:
    seconds = int(throttle.period.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''}" if count > 1 else f"1 {unit}"
    return f"{seconds} seconds"
