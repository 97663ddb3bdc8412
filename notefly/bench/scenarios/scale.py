"""4. Scale: one broadcast to every subscriber, 100,000 then 1,000,000 (``--quick``:
10,000 then 100,000), one channel each. The memory and the live threads of every
process are sampled from start to stop; the fan-out time of the large audience is
compared with the small one's (linear: at most 11 times for 10 times the audience).
The small broadcast, about two seconds long, is run a few times and its median time
taken: a single run of it here spread by a tenth or more, which swung the ratio
across its target."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notefly.bench import loadgen, seed
from notefly.bench.deliverylog import wait_done
from notefly.bench.harness import Bench, CopyOf, Result, notefly
from notefly.bench.procs import UseSampler
from notefly.bench.report import Row, Target, number
from notefly.bench.stats import median_item
from notefly.config import Settings

SCENARIO = "4 scale"
CATEGORY = "bench-scale"
MB = 1_000_000
RSS = ("peak RSS of every process", Target("<", 1000, "MB"))
LINEAR = ("fan-out time, 10x audience", Target("<=", 11, "x"))
CHECKS = (RSS, LINEAR)  # the thread check's bound depends on the configuration
FIXED_THREADS = 8  # main, store writer and reader, the supervisor's, a little slack


@dataclass(frozen=True, slots=True)
class Broadcast:
    audience: int
    finished: bool
    seconds: float | None  # first accept to the last delivery recorded as sent
    elapsed: float | None  # the same, for what was sent when it was stopped
    statuses: dict[str, int]
    peak_rss_mb: dict[int, float]  # by pid
    threads: dict[int, int]  # the most seen at once, by pid

    @property
    def rate(self) -> float | None:
        if not self.seconds:
            return None
        return self.statuses.get("sent", 0) / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "audience": self.audience,
            "finished": self.finished,
            "seconds": self.seconds,
            "elapsed": self.elapsed,
            "rate": self.rate,
            "statuses": self.statuses,
            "peak_rss_mb": self.peak_rss_mb,
            "threads": self.threads,
        }


def thread_bound(settings: Settings, categories: int, cpus: int) -> int:
    """The live threads a node may have, from its configuration alone: one per shard
    actor and category actor, asyncio's default executor (min(32, cpus + 4)), and a
    few fixed ones. Never a function of the number of users."""
    shards = settings.shards_per_channel * len(settings.channels)
    return shards + categories + min(32, cpus + 4) + FIXED_THREADS


def _shards(settings: Settings) -> str:
    count = settings.shards_per_channel
    return f"{count} shard" if count == 1 else f"{count} shards"


async def run(bench: Bench) -> Result:
    smalls: list[Broadcast] = []
    # The small runs start from one seeding: the first seeds, the others copy it.
    seeded = bench.scratch("scale-seeded") / "seeded.db"
    for index in range(1, bench.sizes.scale_small_runs + 1):
        small = await _broadcast(
            bench,
            bench.sizes.scale_small,
            until=time.monotonic() + 240,
            run=index,
            seed_data=seeding(bench.sizes.scale_small, keep=seeded),
        )
        bench.say(_line(small))
        smalls.append(small)
        if not small.finished:
            break
    small = median_broadcast(smalls)
    result = Result(raw={"small": small.to_json(), "small_runs": [b.to_json() for b in smalls]})
    # The large broadcast gets what is left of the run's time, and is stopped then.
    large = await _broadcast(bench, bench.sizes.scale_large, until=bench.deadline - 15)
    bench.say(_line(large))
    result.raw["large"] = large.to_json()
    settings = Settings.from_env(bench.env)
    bound = thread_bound(settings, categories=1, cpus=bench.cpus)
    threads = ("live threads per process", Target("<=", bound))
    label = f"{_size(large.audience)} broadcast"
    if not large.finished:  # what was seen until it was stopped still counts, and says so
        sent = large.statuses.get("sent", 0)
        label += f" (stopped at {number(sent)} sent)"
    rss = max(large.peak_rss_mb.values(), default=None)
    result.rows.append(
        Row(
            SCENARIO,
            f"{RSS[0]}, {label}",
            rss,
            "MB",
            RSS[1],
            detail="by process: " + ", ".join(f"{number(v)}" for v in large.peak_rss_mb.values()),
            reason="no process was sampled",
        )
    )
    result.rows.append(
        Row(
            SCENARIO,
            f"{threads[0]}, {label}",
            max(large.threads.values(), default=None),
            "",
            threads[1],
            detail=f"{_size(small.audience)}: {max(small.threads.values(), default=0)};"
            f" bound: {len(settings.channels)} channels x {_shards(settings)}"
            f" + executor + fixed",
            reason="no process was sampled",
        )
    )
    result.rows.append(linear_row(smalls, large))
    return result


def median_broadcast(runs: Sequence[Broadcast]) -> Broadcast:
    """The run of median time (the lower of the two middle ones); an unfinished run
    if there is one, so that the report says it did not finish."""
    unfinished = [b for b in runs if not b.finished or b.seconds is None]
    if unfinished:
        return unfinished[0]
    return median_item(runs, key=lambda b: b.seconds or 0.0)


def linear_row(small_runs: Sequence[Broadcast], large: Broadcast) -> Row:
    """Fan-out time of the large audience against the small one's: the median of
    ``small_runs`` (``median_broadcast``). A large broadcast stopped unfinished still
    fails when the time it took already exceeds the target."""
    small = median_broadcast(small_runs)
    measure = f"{LINEAR[0]} ({_size(large.audience)} / {_size(small.audience)})"
    if large.seconds and small.seconds:
        detail = (
            f"{number(large.seconds)} s vs {number(small.seconds)} s;"
            f" {number(large.rate or 0)} vs {number(small.rate or 0)} deliveries/s"
        )
        if len(small_runs) > 1:
            times = ", ".join(f"{number(b.seconds or 0)}" for b in small_runs)
            detail += f"; {_size(small.audience)}: median of {len(small_runs)} runs ({times} s)"
        return Row(SCENARIO, measure, large.seconds / small.seconds, "x", LINEAR[1], detail)
    if small.seconds and large.elapsed and large.elapsed / small.seconds > LINEAR[1].threshold:
        detail = (
            f"at least: stopped at {number(large.statuses.get('sent', 0))} sent after"
            f" {number(large.elapsed)} s, vs {number(small.seconds)} s for"
            f" {_size(small.audience)}"
        )
        return Row(SCENARIO, measure, large.elapsed / small.seconds, "x", LINEAR[1], detail)
    unfinished = large if not large.finished else small
    reason = f"{_size(unfinished.audience)} did not finish: {unfinished.statuses}"
    return Row(SCENARIO, measure, None, "x", LINEAR[1], reason=reason)


def seeding(audience: int, *, keep: Path | None = None) -> Callable[[Path], None]:
    """What fills a new database with ``audience`` subscribers of one channel each. With
    ``keep``: the first run seeds and leaves a copy there, and a run asked for once that
    copy exists copies it (the same data, neither seeded nor migrated again)."""
    if keep is not None and keep.exists():
        return CopyOf(keep)

    def seed_data(db: Path) -> None:
        seed.seed_subscribers(db, CATEGORY, audience, seed.one_channel)
        if keep is not None:
            shutil.copyfile(db, keep)

    return seed_data


async def _broadcast(
    bench: Bench,
    audience: int,
    *,
    until: float,
    run: int = 1,
    seed_data: Callable[[Path], None] | None = None,
) -> Broadcast:
    seed_audience = seed_data or seeding(audience)
    copied = isinstance(seed_audience, CopyOf)
    bench.say(f"  {'copying' if copied else 'seeding'} {number(audience)} subscribers")
    started = time.monotonic()
    async with notefly(bench, f"scale-{audience}-{run}", seed_audience, sample=True) as node:
        ready = f"{'copied' if copied else 'seeded'} and started in"
        bench.say(f"  broadcast to {number(audience)} ({ready} {time.monotonic() - started:.0f} s)")
        body = json.dumps({"category": CATEGORY, "title": "Broadcast", "body": "To everyone."})
        answers = await loadgen.burst(node.url, "/pub", [body.encode()])
        if answers[0].status != 202:
            raise RuntimeError(f"publish answered {answers[0].status}")
        within = max(30.0, until - time.monotonic())
        done, _ = await wait_done(node.log, within, 1.0, expect_messages=1)
        statuses = node.log.by_status()
        span = node.log.span()
        sampler: UseSampler = node.sampler
        sampler.sample()
    elapsed = (span[1] - span[0]).total_seconds() if span else None
    seconds = elapsed if done else None
    return Broadcast(
        audience,
        done,
        seconds,
        elapsed,
        statuses,
        {pid: u.peak_rss_kib * 1024 / MB for pid, u in sampler.peaks.items()},
        {pid: u.threads for pid, u in sampler.peaks.items()},
    )


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def _line(b: Broadcast) -> str:
    if not b.finished:
        return f"  {_size(b.audience)}: not finished {b.statuses}"
    return (
        f"  {_size(b.audience)}: {number(b.seconds or 0)} s,"
        f" {number(b.rate or 0)} deliveries/s, peak RSS"
        f" {number(max(b.peak_rss_mb.values(), default=0))} MB,"
        f" threads {max(b.threads.values(), default=0)}"
    )
