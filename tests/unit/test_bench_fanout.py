"""The fan-out scenario's judgement: counters read from /metrics, the rounds of the plain
loop and Notefly, and the rows of the report."""

from __future__ import annotations

from notefly.bench.plain import PlainResult
from notefly.bench.report import FAIL, INFO, PASS
from notefly.bench.scenarios.fanout import (
    Round,
    counters,
    lock_row,
    median_round,
    rows_of,
    since,
)
from notefly.metrics import Metrics
from notefly.ports import WriteLockUse


def a_round(plain_rate: float, rate: float, *, sent: int = 100_000) -> Round:
    """A finished round: the plain loop at ``plain_rate``, Notefly at ``rate``."""
    return Round(
        plain=PlainResult(sent, sent / plain_rate, sent / plain_rate * 0.95),
        statuses={"sent": sent},
        finished=True,
        waited=0.5,
        cpu=sent * 24e-6,
        owners={"w0": 3, "w1": 2},
        lock={"held": sent * 14e-6, "waited": 1.0, "transactions": 75},
        thread_cpu={"sqlite-writer": sent * 8e-6, "MainThread": sent * 5e-6},
        seconds=sent / rate,
    )


def test_the_fanout_scenario_reads_the_write_lock_counters():
    metrics = Metrics()
    metrics.add_write_lock_use(WriteLockUse(0.5, 2.25, 40))
    text = metrics.exposition()[0].decode()
    assert counters(text)[0] == {"held": 2.25, "waited": 0.5, "transactions": 40}
    assert counters("")[0] == {"held": 0.0, "waited": 0.0, "transactions": 0.0}


def test_the_fanout_scenario_reads_the_threads_cpu_time_by_kind():
    metrics = Metrics()
    metrics.add_thread_cpu({"MainThread": 0.5, "sqlite-writer": 0.25})
    before = counters(metrics.exposition()[0].decode())[1]
    assert before == {"MainThread": 0.5, "sqlite-writer": 0.25}
    metrics.add_thread_cpu({"MainThread": 1.0, "sqlite-writer": 0.25, "shard-email": 2.0})
    after = counters(metrics.exposition()[0].decode())[1]
    assert since(before, after) == {"MainThread": 0.5, "sqlite-writer": 0.0, "shard-email": 2.0}
    assert counters("")[1] == {}


def test_the_fanout_lock_row_sets_the_writers_cpu_beside_the_time_held():
    row = lock_row(1.4, 1.5, 74, 1.75, 100_000, 0.77)
    assert row.value == 80.0
    assert row.detail == (
        "1.40 s of the 1.75 s fan-out, 14.0 µs a delivery (the writer threads' CPU time"
        " 7.7 µs, 55% of it); waited 1.50 s; 74 transactions"
    )
    # Without the threads' figures (no /proc), or nothing sent: what is known.
    assert lock_row(1.4, 1.5, 74, 1.75, 100_000, None).detail == (
        "1.40 s of the 1.75 s fan-out, 14.0 µs a delivery; waited 1.50 s; 74 transactions"
    )
    assert lock_row(0.0, 0.0, 0, 1.0, 0, 0.5).detail == (
        "0.00 s of the 1.00 s fan-out; waited 0.00 s; 0 transactions"
    )


def test_the_rate_row_judges_the_median_round_and_names_every_ratio():
    rounds = [a_round(80_000, 64_000), a_round(80_000, 56_000), a_round(75_000, 90_000)]
    assert [round(r.ratio, 2) for r in rounds] == [0.8, 0.7, 1.2]
    assert median_round(rounds) is rounds[0]
    rate, lock, threads, cpu = rows_of(rounds, 5, 20_000)
    assert rate.verdict == FAIL
    assert round(rate.value, 2) == 0.8
    assert rate.detail == (
        "median of 3 rounds (0.80x, 0.70x, 1.20x); that round 64,000 vs 80,000"
        " deliveries/s, 5 messages x 20,000 deliveries"
    )
    # The other rows describe that same round.
    assert lock.verdict == INFO
    assert lock.detail.startswith("1.40 s of the 1.56 s fan-out, 14.0 µs a delivery")
    assert threads.detail == "sqlite-writer 8.0, event loop 5.0"
    assert cpu.detail.endswith("fan-out parts by worker: [3, 2]")


def test_one_round_is_judged_alone_and_a_faster_notefly_passes():
    [alone] = rounds = [a_round(50_000, 60_000)]
    assert median_round(rounds) is alone
    rate = rows_of(rounds, 5, 20_000)[0]
    assert rate.verdict == PASS
    assert rate.detail == "60,000 vs 50,000 deliveries/s, 5 messages x 20,000 deliveries"


def test_with_an_even_count_the_lower_middle_round_is_judged():
    rounds = [a_round(100, 90), a_round(100, 60), a_round(100, 70), a_round(100, 80)]
    assert median_round(rounds) is rounds[2]


def test_deliveries_not_sent_are_named_in_the_rate_row():
    middle = a_round(80_000, 60_000)
    middle.statuses["failed"] = 3
    rate = rows_of([middle], 5, 20_000)[0]
    assert rate.detail.endswith(", not sent: {'failed': 3}")
