"""Percentiles and latency summaries of the benchmark harness."""

from __future__ import annotations

import pytest

from notefly.bench.stats import Latency, median_item, percentile


def test_percentile_interpolates_between_closest_ranks():
    values = [15, 20, 35, 40, 50]
    assert percentile(values, 0) == 15
    assert percentile(values, 100) == 50
    assert percentile(values, 50) == 35
    # rank 0.4 * 4 = 1.6: 60% of the way from 20 to 35
    assert percentile(values, 40) == pytest.approx(29.0)


def test_percentile_of_an_even_count_is_the_mean_of_the_middle_two():
    assert percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)


def test_percentile_does_not_depend_on_order():
    values = list(range(1000))
    shuffled = values[500:] + values[:500]
    assert percentile(shuffled, 99) == pytest.approx(989.01)


def test_p99_of_a_slow_tail_sees_the_tail():
    # 98 fast answers and 2 slow ones: the p99 must be slow, the p50 fast.
    samples = [0.001] * 98 + [0.5, 0.5]
    summary = Latency.of_seconds(samples)
    assert summary.p50 == pytest.approx(1.0)
    assert summary.p99 == pytest.approx(500.0)
    assert summary.max == pytest.approx(500.0)
    assert summary.count == 100


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_outside_0_100_is_refused(q: float):
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_refused():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_the_median_item_is_one_of_the_items_the_lower_middle_of_an_even_count():
    runs = [("a", 3.0), ("b", 1.0), ("c", 2.0)]
    assert median_item(runs, key=lambda r: r[1]) == ("c", 2.0)
    assert median_item(runs[:2], key=lambda r: r[1]) == ("b", 1.0)
    assert median_item(runs[:1], key=lambda r: r[1]) == ("a", 3.0)
    with pytest.raises(ValueError, match="no items"):
        median_item([], key=lambda r: r)
