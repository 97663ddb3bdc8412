"""5. Digest load: 100,000 users with a daily digest due in the same minute; every
digest rendered and sent within 60 s.

Digests do not exist yet (another issue), so this scenario reports a FAIL that says
so, never a number. When they exist, ``measure`` is the place to fill in:

1. seed ``sizes.digest_users`` users whose daily digest is due at the same minute,
   each with a few notifications buffered since their last digest;
2. start Notefly (``harness.notefly``) with the clock of that minute reached;
3. wait (``deliverylog.wait_done``) until every digest delivery is recorded as sent;
4. judge the time from the minute it was due to the last one sent against ``SENT``.
"""

from __future__ import annotations

from notefly.bench.harness import Bench, Result
from notefly.bench.report import Row, Target, not_measured

SCENARIO = "5 digest"
SENT = ("100k daily digests sent", Target("<=", 60, "s"))
CHECKS = (SENT,)


class NotImplementedYet(Exception):
    """What the scenario needs from Notefly does not exist yet."""


async def run(bench: Bench) -> Result:
    try:
        seconds = await measure(bench)
    except NotImplementedYet as missing:
        return Result(
            [not_measured(SCENARIO, SENT[0], str(missing), SENT[1])],
            {"measured": False, "reason": str(missing)},
        )
    row = Row(
        SCENARIO,
        SENT[0],
        seconds,
        "s",
        SENT[1],
        detail=f"{bench.sizes.digest_users:,} users due in the same minute",
    )
    return Result([row], {"measured": True, "seconds": seconds})


async def measure(bench: Bench) -> float:
    """Seconds from the minute the digests were due to the last one sent."""
    raise NotImplementedYet("digests are not implemented")
