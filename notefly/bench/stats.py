"""Numbers from samples: percentiles, the median run, and latency summaries."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values``, interpolating between closest ranks.

    The same definition as numpy's default (``linear``): rank ``q/100 * (n - 1)`` of the
    sorted values, so the 0th is the minimum, the 100th the maximum and the 50th of an
    even count the mean of the two middle values.

    Raises:
        ValueError: no values, or ``q`` outside [0, 100].
    """
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_item(items: Sequence[T], key: Callable[[T], float]) -> T:
    """The item whose ``key`` is the median: one of the items, never an interpolation
    (with an even count, the lower of the two middle ones), so that what is reported
    beside it describes one real run.

    Raises:
        ValueError: no items.
    """
    if not items:
        raise ValueError("no items to take the median of")
    return sorted(items, key=key)[(len(items) - 1) // 2]


@dataclass(frozen=True, slots=True)
class Latency:
    """A latency distribution, in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of_seconds(cls, samples: Sequence[float]) -> Latency:
        """Summarise samples given in seconds.

        Raises:
            ValueError: no samples.
        """
        ms = [s * 1000 for s in samples]
        return cls(
            count=len(ms),
            p50=percentile(ms, 50),
            p90=percentile(ms, 90),
            p99=percentile(ms, 99),
            max=max(ms),
        )
