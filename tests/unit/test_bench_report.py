"""Judging measurements against targets, and the report's table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notefly.bench.report import FAIL, INFO, PASS, Report, Row, Target, not_measured, render_table
from notefly.bench.scenarios.scale import Broadcast, linear_row, median_broadcast


@pytest.mark.parametrize(
    ("target", "value", "verdict"),
    [
        (Target(">=", 0.75, "x"), 0.75, PASS),  # "at least 75%" includes 75%
        (Target(">=", 0.75, "x"), 0.7499, FAIL),
        (Target("<", 50, "ms"), 49.9, PASS),  # "under 50 ms" excludes 50
        (Target("<", 50, "ms"), 50.0, FAIL),
        (Target("<=", 11, "x"), 11.0, PASS),  # "within 11x"
        (Target("<=", 11, "x"), 11.01, FAIL),
    ],
)
def test_a_value_passes_or_fails_its_target(target: Target, value: float, verdict: str):
    assert Row("s", "m", value, target=target).verdict == verdict


def test_what_was_not_measured_fails_and_says_why():
    row = not_measured(
        "5 digest", "digests sent", "digests are not implemented", Target("<=", 60, "s")
    )
    assert row.verdict == FAIL
    assert row.result == "not measured: digests are not implemented"


def test_a_row_without_target_is_information():
    row = Row("2 fan-out", "CPU per delivery", 3.5, "x", detail="212 vs 61 µs")
    assert row.verdict == INFO
    assert row.result == "3.50x (212 vs 61 µs)"


def test_an_unknown_comparison_is_refused():
    with pytest.raises(ValueError, match="unknown comparison"):
        Target(">>", 1)


def test_table_has_one_line_per_row_with_result_target_and_verdict():
    rows = [
        Row("1 ingest", "rate vs bare", 0.62, "x", Target(">=", 0.75, "x"), "1,510 vs 2,430"),
        Row("1 ingest", "p99", 38.25, "ms", Target("<", 50, "ms")),
    ]
    lines = render_table(rows).splitlines()
    header = [cell.strip() for cell in lines[0].split("|")[1:-1]]
    assert header == ["scenario", "measure", "result", "target", "verdict"]
    assert len(lines) == 4
    assert "0.62x (1,510 vs 2,430)" in lines[2] and ">= 0.75x" in lines[2]
    assert lines[2].rstrip().endswith("| FAIL    |")
    assert "38.2 ms" in lines[3] and "< 50 ms" in lines[3] and "PASS" in lines[3]
    # Every line is as wide as the header: the columns line up.
    assert len({len(line) for line in lines}) == 1


def test_big_numbers_get_thousands_separators():
    row = Row("4 scale", "rate", 123456.7, "deliveries/s", Target(">=", 1000))
    assert row.result == "123,457 deliveries/s"
    assert str(row.target) == ">= 1,000"


def test_report_counts_targets_met_and_writes_json(tmp_path: Path):
    report = Report(
        title="notefly bench (quick)",
        machine={"cpu": "2 x test CPU"},
        settings={"notefly": "2 workers"},
        rows=[
            Row("1 ingest", "rate", 0.8, "x", Target(">=", 0.75, "x")),
            not_measured(
                "5 digest", "digests", "digests are not implemented", Target("<=", 60, "s")
            ),
            Row("2 fan-out", "CPU", 3.0, "x"),
        ],
        raw={"ingest": {"bare": [{"rate": 100.0}]}},
    )
    text = report.text()
    assert "1 of 2 targets met" in text
    assert "cpu: 2 x test CPU" in text
    assert [r.measure for r in report.failed] == ["digests"]
    path = tmp_path / "out" / "bench.json"
    report.write_json(path)
    data = json.loads(path.read_text())
    assert [c["verdict"] for c in data["checks"]] == [PASS, FAIL, INFO]
    assert data["checks"][1]["value"] is None
    assert data["checks"][1]["reason"] == "digests are not implemented"
    assert data["scenarios"]["ingest"]["bare"][0]["rate"] == 100.0


def broadcast(audience: int, *, finished: bool, elapsed: float, sent: int) -> Broadcast:
    statuses = {"sent": sent} if finished else {"sent": sent, "queued": audience - sent}
    return Broadcast(
        audience, finished, elapsed if finished else None, elapsed, statuses, {1: 100.0}, {1: 18}
    )


def test_ten_times_the_audience_in_at_most_eleven_times_the_time_passes():
    small = broadcast(100_000, finished=True, elapsed=30.0, sent=100_000)
    large = broadcast(1_000_000, finished=True, elapsed=320.0, sent=1_000_000)
    row = linear_row([small], large)
    assert row.verdict == PASS
    assert row.value == pytest.approx(320 / 30)


def test_an_unfinished_broadcast_already_too_slow_fails_with_a_lower_bound():
    small = broadcast(100_000, finished=True, elapsed=30.0, sent=100_000)
    large = broadcast(1_000_000, finished=False, elapsed=365.0, sent=731_000)
    row = linear_row([small], large)
    assert row.verdict == FAIL
    assert row.value == pytest.approx(365 / 30)
    assert row.detail.startswith("at least: stopped at 731,000 sent")


def test_an_unfinished_broadcast_still_within_the_target_is_not_judged():
    small = broadcast(100_000, finished=True, elapsed=30.0, sent=100_000)
    large = broadcast(1_000_000, finished=False, elapsed=200.0, sent=500_000)
    row = linear_row([small], large)
    assert row.verdict == FAIL
    assert row.value is None
    assert row.result.startswith("not measured: 1M did not finish")


def test_the_small_broadcast_is_judged_by_its_median_run():
    runs = [
        broadcast(100_000, finished=True, elapsed=seconds, sent=100_000)
        for seconds in (1.74, 2.10, 1.98)
    ]
    assert median_broadcast(runs) is runs[2]
    large = broadcast(1_000_000, finished=True, elapsed=21.2, sent=1_000_000)
    row = linear_row(runs, large)
    assert row.verdict == PASS
    assert row.value == pytest.approx(21.2 / 1.98)
    assert row.detail.endswith("; 100k: median of 3 runs (1.74, 2.10, 1.98 s)")
    # With an even number of runs, the lower middle one.
    assert median_broadcast(runs[:2]) is runs[0]


def test_an_unfinished_small_run_is_the_one_reported():
    runs = [
        broadcast(100_000, finished=True, elapsed=2.0, sent=100_000),
        broadcast(100_000, finished=False, elapsed=240.0, sent=99_000),
    ]
    assert median_broadcast(runs) is runs[1]
    large = broadcast(1_000_000, finished=True, elapsed=21.2, sent=1_000_000)
    row = linear_row(runs, large)
    assert row.value is None
    assert row.result.startswith("not measured: 100k did not finish")
