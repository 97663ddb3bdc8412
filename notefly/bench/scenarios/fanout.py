"""2. Fan-out: a burst of messages to one category of 10,000 subscribers, each on 1 to 3
of sms/email/push (about 20,000 deliveries a message), against the plain loop on the
same data. Notefly's rate runs from the first accept to the last delivery recorded as
sent; the plain loop's from its start to its last commit."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from notefly.bench import loadgen, seed
from notefly.bench.deliverylog import wait_done
from notefly.bench.harness import Bench, Result, notefly
from notefly.bench.plain import plain_fanout
from notefly.bench.procs import tree_cpu_seconds
from notefly.bench.report import Row, Target, number
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


async def run(bench: Bench) -> Result:
    sizes = bench.sizes
    subscribers, count = sizes.fanout_subscribers, sizes.fanout_messages
    plain_dir = bench.scratch("fanout-plain")
    plain_db = plain_dir / "notefly.db"
    await seed.create_schema(plain_db)
    per_message = seed.seed_subscribers(plain_db, CATEGORY, subscribers, seed.some_channels())
    # Same data for Notefly: a copy of the seeded file, before the loop writes to it.
    pristine = plain_dir / "seeded.db"
    shutil.copyfile(plain_db, pristine)
    now = datetime.now(UTC)
    messages = [
        Message(id=f"plain_{i}", category_id=CATEGORY, body=BODY, title=TITLE, accepted_at=now)
        for i in range(count)
    ]
    bench.say(f"  plain loop: {count} messages x {number(per_message)} deliveries")
    plain = plain_fanout(plain_db, CATEGORY, messages)
    bench.say(f"  plain loop: {number(plain.rate)} deliveries/s")

    def seed_copy(db: object) -> None:
        shutil.copyfile(pristine, str(db))

    async with notefly(bench, "fanout", seed_copy) as node:
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
    sent = statuses.get("sent", 0)
    thread_cpu = since(threads_before, threads)
    result = Result(
        raw={
            "subscribers": subscribers,
            "messages": count,
            "deliveries_per_message": per_message,
            "plain": {
                "deliveries": plain.deliveries,
                "seconds": plain.seconds,
                "rate": plain.rate,
                "cpu_seconds": plain.cpu_seconds,
            },
            "notefly": {
                "statuses": statuses,
                "finished": done,
                "waited_seconds": waited,
                "cpu_seconds": cpu,
                "messages_by_worker": owners,
                "write_lock": {k: lock[k] - lock_before[k] for k in lock},
                "thread_cpu_seconds": thread_cpu,
            },
        }
    )
    if not done or span is None:
        result.rows.append(
            Row(
                SCENARIO,
                RATE[0],
                None,
                target=RATE[1],
                reason=f"not finished within {TIMEOUT_SECONDS} s: {statuses}",
            )
        )
        return result
    seconds = (span[1] - span[0]).total_seconds()
    rate = sent / seconds if seconds > 0 else 0.0
    result.raw["notefly"].update(seconds=seconds, rate=rate)
    other = {k: v for k, v in statuses.items() if k != "sent"}
    result.rows.append(
        Row(
            SCENARIO,
            RATE[0],
            rate / plain.rate,
            "x",
            RATE[1],
            detail=f"{number(rate)} vs {number(plain.rate)} deliveries/s, {count} messages x"
            f" {number(per_message)} deliveries" + (f", not sent: {other}" if other else ""),
        )
    )
    held, waited, transactions = (
        lock[k] - lock_before[k] for k in ("held", "waited", "transactions")
    )
    result.rows.append(
        lock_row(held, waited, transactions, seconds, sent, thread_cpu.get(WRITER_THREAD))
    )
    if sent and thread_cpu:
        result.rows.append(
            Row(
                SCENARIO,
                "CPU time per delivery by thread, all workers",
                sum(thread_cpu.values()) / sent * 1e6,
                "µs",
                detail=", ".join(
                    f"{SHOWN_AS.get(kind, kind)} {seconds / sent * 1e6:.1f}"
                    for kind, seconds in sorted(thread_cpu.items(), key=lambda kv: -kv[1])
                    if seconds / sent * 1e6 >= 0.05
                ),
            )
        )
    if sent and plain.deliveries:
        mine, theirs = cpu / sent * 1e6, plain.cpu_seconds / plain.deliveries * 1e6
        result.rows.append(
            Row(
                SCENARIO,
                "CPU time per delivery vs plain loop",
                mine / theirs,
                "x",
                detail=f"{number(mine)} vs {number(theirs)} µs, all Notefly processes; fan-out"
                f" parts by worker: {sorted(owners.values(), reverse=True)}",
            )
        )
    return result


async def worker_counters(url: str) -> tuple[dict[str, float], dict[str, float]]:
    """The workers' write-lock counters and their threads' CPU seconds by kind, from
    ``/metrics`` (any worker answers for all)."""
    response = await loadgen.get(url, "/metrics")
    if response.status != 200:
        raise RuntimeError(f"/metrics answered {response.status}")
    samples = _samples(response.body.decode())
    return _write_lock(samples), _thread_cpu(samples)


def write_lock_counters(text: str) -> dict[str, float]:
    """Seconds held and waited, and transactions, in a Prometheus exposition."""
    return _write_lock(_samples(text))


def thread_cpu_counters(text: str) -> dict[str, float]:
    """CPU seconds by kind of thread, in a Prometheus exposition."""
    return _thread_cpu(_samples(text))


def _samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


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
