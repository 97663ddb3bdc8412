"""What the dashboard shows of recent activity, read back from the metrics.

With several workers a request reaches one of them, so the dashboard cannot rely on
what its own process saw. It samples the metric totals instead (which, with a
multiprocess directory, add up every worker) and turns their changes into the
throughput of the last minutes per channel and the state of each provider.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Throughput:
    """Counts per channel in fixed time buckets, over a sliding window."""

    def __init__(
        self, now: Callable[[], float], *, bucket_seconds: int = 5, window_seconds: int = 600
    ) -> None:
        self._now = now
        self.bucket_seconds = bucket_seconds
        self.buckets = window_seconds // bucket_seconds
        self._lock = threading.Lock()
        self._counts: dict[str, dict[int, int]] = {}

    def add(self, channel: str, count: int = 1) -> None:
        bucket = int(self._now() // self.bucket_seconds)
        with self._lock:
            per_bucket = self._counts.setdefault(channel, {})
            per_bucket[bucket] = per_bucket.get(bucket, 0) + count
            if len(per_bucket) > self.buckets:
                oldest = bucket - self.buckets
                for stale in [b for b in per_bucket if b <= oldest]:
                    del per_bucket[stale]

    def known(self, channel: str) -> None:
        with self._lock:
            self._counts.setdefault(channel, {})

    def series(self) -> dict[str, Any]:
        """The window ending with the current bucket, oldest first, per channel."""
        last = int(self._now() // self.bucket_seconds)
        first = last - self.buckets + 1
        with self._lock:
            channels = {
                channel: [per_bucket.get(b, 0) for b in range(first, last + 1)]
                for channel, per_bucket in sorted(self._counts.items())
            }
        return {
            "bucket_seconds": self.bucket_seconds,
            "end": datetime.fromtimestamp((last + 1) * self.bucket_seconds, UTC).isoformat(),
            "channels": channels,
        }


@dataclass(slots=True)
class ProviderHealth:
    """What one provider of one channel has done, over every worker.

    ``state``: ``idle`` (nothing yet), ``ok`` (the last attempts were sent),
    ``failing`` (the last attempts all failed), ``degraded`` (some of each).
    """

    channel: str
    provider: str
    sent: int = 0
    failed: int = 0  # failed for good
    retried: int = 0  # transient failures
    state: str = "idle"
    changed_at: str | None = None  # when the state last changed


@dataclass(frozen=True, slots=True)
class _Totals:
    sent: int = 0
    failed: int = 0
    retried: int = 0


class Activity:
    """Throughput and provider health from successive samples of the metric totals."""

    def __init__(
        self,
        totals: Callable[[], Samples],
        now: Callable[[], float],
        *,
        bucket_seconds: int = 5,
        window_seconds: int = 600,
    ) -> None:
        self._totals = totals
        self._now = now
        self.throughput = Throughput(
            now, bucket_seconds=bucket_seconds, window_seconds=window_seconds
        )
        self._lock = threading.Lock()
        self._providers: dict[tuple[str, str], ProviderHealth] = {}
        self._last: dict[tuple[str, str], _Totals] | None = None
        self._gauges: dict[str, int] = {}
        self.accepted = 0

    def register(self, channel: str, provider: str) -> None:
        with self._lock:
            self._providers.setdefault((channel, provider), ProviderHealth(channel, provider))
        self.throughput.known(channel)

    def providers(self) -> list[ProviderHealth]:
        with self._lock:
            return [replace(h) for _key, h in sorted(self._providers.items())]

    def gauges(self) -> dict[str, int]:
        """The actor gauges of every worker, added up: pending, entities, shard_actors."""
        with self._lock:
            return dict(self._gauges)

    def sample(self) -> None:
        """Read the totals; what moved since the last sample goes to the current bucket.

        The first sample only sets the baseline: what happened before it is counted in
        the totals but placed in no bucket.
        """
        samples = self._totals()
        current, accepted = _by_provider(samples)
        gauges = {
            key: int(samples[(name, frozenset())])
            for key, name in _GAUGES.items()
            if (name, frozenset()) in samples
        }
        at = datetime.fromtimestamp(self._now(), UTC).isoformat()
        with self._lock:
            last, self._last, self.accepted = self._last, current, accepted
            self._gauges = gauges
            for (channel, provider), now in current.items():
                health = self._providers.setdefault(
                    (channel, provider), ProviderHealth(channel, provider)
                )
                before = last.get((channel, provider), _Totals()) if last is not None else now
                ok = now.sent - before.sent
                bad = (now.failed - before.failed) + (now.retried - before.retried)
                if last is None:
                    state = "ok" if now.sent else ("failing" if now.failed else "idle")
                elif ok or bad:
                    state = "degraded" if ok and bad else ("ok" if ok else "failing")
                else:
                    state = health.state
                if state != health.state:
                    health.state, health.changed_at = state, at
                health.sent, health.failed, health.retried = now.sent, now.failed, now.retried
                moved = ok + (now.failed - before.failed)
                if moved > 0:
                    self.throughput.add(channel, moved)
                else:
                    self.throughput.known(channel)


_GAUGES = {
    "pending": "notefly_actor_pending_deliveries",
    "entities": "notefly_actor_entities",
    "shard_actors": "notefly_actor_shards",
}


def _by_provider(samples: Samples) -> tuple[dict[tuple[str, str], _Totals], int]:
    totals: dict[tuple[str, str], _Totals] = {}
    accepted = 0
    for (name, labels), value in samples.items():
        if name == "notefly_messages_accepted_total":
            accepted += int(value)
            continue
        label = dict(labels)
        key = (label.get("channel", ""), label.get("provider", ""))
        if name == "notefly_deliveries_total" and label.get("status") in ("sent", "failed"):
            field = label["status"]
        elif name == "notefly_delivery_retries_total":
            field = "retried"
        else:
            continue
        known = totals.get(key, _Totals())
        totals[key] = replace(known, **{field: getattr(known, field) + int(value)})
    return totals, accepted
