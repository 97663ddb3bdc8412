"""2. Fan-out: a burst of messages to one category of 10,000 subscribers, each on 1 to 3
of sms/email/push (about 20,000 deliveries a message), against the plain loop on the
same data. Notefly's rate runs from the first accept to the last delivery recorded as
sent; the plain loop's from its start to its last commit. The two take turns for a few
rounds, each on a fresh copy of the data, and the median round's ratio is judged: a
single pair of runs here spreads by about a tenth either way."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from notefly.bench import loadgen, seed
from notefly.bench.deliverylog import wait_done
from notefly.bench.harness import Bench, CopyOf, Result, notefly
from notefly.bench.plain import PlainResult, plain_fanout
from notefly.bench.procs import tree_cpu_seconds
from notefly.bench.report import Row, Target, number
from notefly.bench.stats import median_item
from notefly.domain import Message

SCENARIO = "2 fan-out"
SAMPLE_SECONDS = 1.0  # how often a worker counts its writes (broker.ops.SAMPLE_SECONDS)
CATEGORY = "bench-fanout"
RATE = ("deliveries/s vs plain loop", Target(">=", 1.0, "x"))
CHECKS = (RATE,)
TITLE, BODY = "Rates up", "The key rate rose by a quarter point; markets took it calmly."
TIMEOUT_SECONDS = 180
SHOWN_AS = {"MainThread": "event loop"}  # kinds of thread (notefly.threads) by their role
WRITER_THREAD = "sqlite-writer"  # the kind of thread that holds the write lock


@dataclass(slots=True)
class Round:
    """One round: the plain loop, then Notefly, each on a fresh copy of the data."""

    plain: PlainResult
    statuses: dict[str, int]
    finished: bool
    waited: float  # seconds spent waiting for the last delivery
    cpu: float  # CPU seconds of every Notefly process over the burst
    owners: dict[str, int]  # fan-out parts by worker
    lock: dict[str, float]  # write-lock counters over the burst
    thread_cpu: dict[str, float]  # CPU seconds by kind of thread over the burst
    seconds: float | None = None  # first accept to last delivery recorded as sent

    @property
    def sent(self) -> int:
        return self.statuses.get("sent", 0)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    @property
    def ratio(self) -> float:
        return self.rate / self.plain.rate if self.plain.rate else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "plain": {
                "deliveries": self.plain.deliveries,
                "seconds": self.plain.seconds,
                "rate": self.plain.rate,
                "cpu_seconds": self.plain.cpu_seconds,
            },
            "notefly": {
                "statuses": self.statuses,
                "finished": self.finished,
                "waited_seconds": self.waited,
                "cpu_seconds": self.cpu,
                "messages_by_worker": self.owners,
                "write_lock": self.lock,
                "thread_cpu_seconds": self.thread_cpu,
                "seconds": self.seconds,
                "rate": self.rate,
            },
            "ratio": self.ratio,
        }


async def run(bench: Bench) -> Result:
    sizes = bench.sizes
    subscribers, count = sizes.fanout_subscribers, sizes.fanout_messages
    plain_dir = bench.scratch("fanout-plain")
    pristine = plain_dir / "seeded.db"
    await seed.create_schema(pristine)
    per_message = seed.seed_subscribers(pristine, CATEGORY, subscribers, seed.some_channels())
    rounds: list[Round] = []
    for index in range(1, sizes.fanout_rounds + 1):
        bench.say(f"  round {index}: {count} messages x {number(per_message)} deliveries")
        this = await _round(bench, pristine, plain_dir / f"plain-{index}.db", index)
        rounds.append(this)
        rate = f"{number(this.rate)} deliveries/s" if this.finished else "not finished"
        bench.say(f"  round {index}: plain loop {number(this.plain.rate)}, notefly {rate}")
        if not this.finished:
            break
    result = Result(
        raw={
            "subscribers": subscribers,
            "messages": count,
            "deliveries_per_message": per_message,
            "rounds": [r.to_json() for r in rounds],
        }
    )
    unfinished = [r for r in rounds if not r.finished]
    if unfinished:
        result.rows.append(
            Row(
                SCENARIO,
                RATE[0],
                None,
                target=RATE[1],
                reason=f"not finished within {TIMEOUT_SECONDS} s: {unfinished[0].statuses}",
            )
        )
        return result
    result.rows += rows_of(rounds, count, per_message)
    return result


def median_round(rounds: list[Round]) -> Round:
    """The round whose ratio is the median (the lower of the two middle ones)."""
    return median_item(rounds, key=lambda r: r.ratio)


def rows_of(rounds: list[Round], count: int, per_message: int) -> list[Row]:
    """The rate row judges the median of the rounds' ratios: each round sets Notefly
    against the plain loop run just before it, so that both see the same stretch of
    a noisy machine. The other rows describe the median round."""
    middle = median_round(rounds)
    ratios = ", ".join(f"{r.ratio:.2f}x" for r in rounds)
    other = {k: v for k, v in middle.statuses.items() if k != "sent"}
    detail = f"{number(middle.rate)} vs {number(middle.plain.rate)} deliveries/s"
    if len(rounds) > 1:
        detail = f"median of {len(rounds)} rounds ({ratios}); that round {detail}"
    detail += f", {count} messages x {number(per_message)} deliveries"
    if other:
        detail += f", not sent: {other}"
    rows = [Row(SCENARIO, RATE[0], middle.ratio, "x", RATE[1], detail=detail)]
    sent, lock, thread_cpu = middle.sent, middle.lock, middle.thread_cpu
    rows.append(
        lock_row(
            lock["held"],
            lock["waited"],
            lock["transactions"],
            middle.seconds or 0.0,
            sent,
            thread_cpu.get(WRITER_THREAD),
        )
    )
    if sent and thread_cpu:
        rows.append(
            Row(
                SCENARIO,
                "CPU time per delivery by thread, all workers",
                sum(thread_cpu.values()) / sent * 1e6,
                "µs",
                detail=", ".join(
                    f"{SHOWN_AS.get(kind, kind)} {used / sent * 1e6:.1f}"
                    for kind, used in sorted(thread_cpu.items(), key=lambda kv: -kv[1])
                    if used / sent * 1e6 >= 0.05
                ),
            )
        )
    plain = middle.plain
    if sent and plain.deliveries:
        mine, theirs = middle.cpu / sent * 1e6, plain.cpu_seconds / plain.deliveries * 1e6
        rows.append(
            Row(
                SCENARIO,
                "CPU time per delivery vs plain loop",
                mine / theirs,
                "x",
                detail=f"{number(mine)} vs {number(theirs)} µs, all Notefly processes; fan-out"
                f" parts by worker: {sorted(middle.owners.values(), reverse=True)}",
            )
        )
    return rows


async def _round(bench: Bench, pristine: Path, plain_db: Path, index: int) -> Round:
    count = bench.sizes.fanout_messages
    shutil.copyfile(pristine, plain_db)
    now = datetime.now(UTC)
    messages = [
        Message(
            id=f"plain_{index}_{i}", category_id=CATEGORY, body=BODY, title=TITLE, accepted_at=now
        )
        for i in range(count)
    ]
    plain = plain_fanout(plain_db, CATEGORY, messages)

    async with notefly(bench, f"fanout-{index}", CopyOf(pristine)) as node:
        bodies = [
            json.dumps({"category": CATEGORY, "title": TITLE, "body": BODY}).encode()
            for _ in range(count)
        ]
        # Every worker has counted what it did while starting (it counts each second).
        await asyncio.sleep(SAMPLE_SECONDS + 0.2)
        cpu_before = tree_cpu_seconds(node.server.pid)
        lock_before, threads_before = await worker_counters(node.url)
        answers = await loadgen.burst(node.url, "/pub", bodies)
        refused = [a.status for a in answers if a.status != 202]
        if refused:
            raise RuntimeError(f"publish answered {refused}")
        done, waited = await wait_done(node.log, TIMEOUT_SECONDS, 0.25, expect_messages=count)
        cpu = tree_cpu_seconds(node.server.pid) - cpu_before
        await asyncio.sleep(SAMPLE_SECONDS + 0.2)  # every worker has counted its last writes
        lock, threads = await worker_counters(node.url)
        statuses = node.log.by_status()
        span = node.log.span()
        owners = node.log.fanout_owners()
    finished = done and span is not None
    return Round(
        plain=plain,
        statuses=statuses,
        finished=finished,
        waited=waited,
        cpu=cpu,
        owners=owners,
        lock={k: lock[k] - lock_before[k] for k in lock},
        thread_cpu=since(threads_before, threads),
        seconds=(span[1] - span[0]).total_seconds() if finished and span else None,
    )


async def worker_counters(url: str) -> tuple[dict[str, float], dict[str, float]]:
    """The workers' write-lock counters and their threads' CPU seconds by kind, from
    ``/metrics`` (any worker answers for all)."""
    response = await loadgen.get(url, "/metrics")
    if response.status != 200:
        raise RuntimeError(f"/metrics answered {response.status}")
    return counters(response.body.decode())


def counters(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """In a Prometheus exposition, parsed once: the write lock's seconds held and
    waited and its transactions, and CPU seconds by kind of thread."""
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return _write_lock(samples), _thread_cpu(samples)


def _write_lock(samples: list[Sample]) -> dict[str, float]:
    found = {s.name: s.value for s in samples}
    return {
        "held": found.get("notefly_store_write_lock_held_seconds_total", 0.0),
        "waited": found.get("notefly_store_write_lock_wait_seconds_total", 0.0),
        "transactions": found.get("notefly_store_write_transactions_total", 0.0),
    }


def _thread_cpu(samples: list[Sample]) -> dict[str, float]:
    return {
        s.labels["thread"]: s.value for s in samples if s.name == "notefly_thread_cpu_seconds_total"
    }


def lock_row(
    held: float,
    waited: float,
    transactions: float,
    seconds: float,
    sent: int,
    writer_cpu: float | None,
) -> Row:
    """The write lock's use over the fan-out. Next to the time it was held, the CPU
    time of the threads that hold it (the writers'), nearly all of it spent holding
    it: the rest of the time held, they waited for a core or for the GIL."""
    detail = f"{held:.2f} s of the {seconds:.2f} s fan-out"
    if sent:
        detail += f", {held / sent * 1e6:.1f} µs a delivery"
        if writer_cpu is not None and held > 0:
            detail += (
                f" (the writer threads' CPU time {writer_cpu / sent * 1e6:.1f} µs,"
                f" {writer_cpu / held:.0%} of it)"
            )
    detail += f"; waited {waited:.2f} s; {transactions:.0f} transactions"
    return Row(
        SCENARIO, "SQLite write lock held, all workers", held / seconds * 100, "%", detail=detail
    )


def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What each kind added between two readings."""
    return {kind: seconds - before.get(kind, 0.0) for kind, seconds in after.items()}
