"""Prometheus metrics, and the observer that feeds them from the actors.

One ``Metrics`` per process, built by the container (nothing at import time), each with
a registry of its own so that tests can build many. With ``PROMETHEUS_MULTIPROC_DIR``
set before a process starts, prometheus-client keeps the values in files of that
directory and ``exposition()`` adds up every live process of the directory, so a scrape
of any worker sees them all.

The ``PrometheusObserver`` feeds them; ``notefly.activity`` reads them back for the
dashboard.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from notefly.activity import Activity, Samples
from notefly.breaker import CircuitSnapshot
from notefly.ports import WriteLockUse

log = structlog.get_logger("notefly.metrics")

M = TypeVar("M", Counter, Gauge, Histogram)

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BREAKER_STATES = ("closed", "open", "half_open")
UNKNOWN = "unknown"  # the provider label of an outcome that names none


def multiprocess_mode() -> bool:
    """Whether prometheus-client keeps values in PROMETHEUS_MULTIPROC_DIR (it decides
    once, when it is first imported)."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    """The metric families of Notefly; see the README's Operations section."""

    def __init__(self) -> None:
        # Labelled children by (family, labels); a dict is safe to share between the
        # threads that observe: at worst two of them ask prometheus-client for the
        # same child, and it hands both the same one.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry = CollectorRegistry()
        self.messages_accepted = Counter(
            "notefly_messages_accepted", "Messages committed", ["category"], registry=r
        )
        self.deliveries = Counter(
            "notefly_deliveries",
            "Deliveries that reached a final status (sent, failed, skipped)",
            ["channel", "provider", "status"],
            registry=r,
        )
        self.retries = Counter(
            "notefly_delivery_retries",
            "Attempts that failed transiently and will be retried",
            ["channel", "provider"],
            registry=r,
        )
        self.dead_letters = Counter(
            "notefly_dead_letters",
            "Deliveries that failed for good and wait for an operator (redrive)",
            ["channel", "provider"],
            registry=r,
        )
        self.redrives = Counter(
            "notefly_redrives",
            "Failed deliveries queued again by an operator",
            ["channel"],
            registry=r,
        )
        self.provider_latency = Histogram(
            "notefly_provider_latency_seconds",
            "Time a provider took to accept one notification",
            ["channel", "provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_latency = Histogram(
            "notefly_http_request_duration_seconds",
            "HTTP requests by route template and status",
            ["service", "method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Read from the store: every process sees the same numbers, keep the latest.
        self.queued = Gauge(
            "notefly_deliveries_queued",
            "Deliveries waiting in the store (all nodes)",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.failed_stored = Gauge(
            "notefly_dead_letters_stored",
            "Failed deliveries in the store now",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        # Per process: workers add up.
        self.actor_pending = Gauge(
            "notefly_actor_pending_deliveries",
            "Deliveries held by the actors, not final yet",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.entities = Gauge(
            "notefly_actor_entities",
            "Live per-user channel entities",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.shard_actors = Gauge(
            "notefly_actor_shards", "Channel shard actors", registry=r, multiprocess_mode="livesum"
        )
        self.category_actors = Gauge(
            "notefly_actor_categories", "Category actors", registry=r, multiprocess_mode="livesum"
        )
        self.shard_restarts = Gauge(
            "notefly_actor_shard_restarts",
            "Shards replaced after they died, since start",
            registry=r,
            multiprocess_mode="livesum",
        )
        # SQLite: every worker's writes take turns at the file's one lock, one holder at
        # a time. Held seconds rising by nearly one a second means the lock bounds
        # throughput.
        self.write_lock_waited = Counter(
            "notefly_store_write_lock_wait_seconds",
            "Seconds writes waited for the store's write lock (SQLite), all workers",
            registry=r,
        )
        self.write_lock_held = Counter(
            "notefly_store_write_lock_held_seconds",
            "Seconds the store's write lock was held (SQLite), all workers",
            registry=r,
        )
        self.write_transactions = Counter(
            "notefly_store_write_transactions",
            "Transactions under the store's write lock (SQLite), all workers",
            registry=r,
        )
        self._write_lock_seen = WriteLockUse(0.0, 0.0, 0)
        self.thread_cpu = Counter(
            "notefly_thread_cpu_seconds",
            "CPU seconds by kind of thread (MainThread runs the event loop), all workers",
            ["thread"],
            registry=r,
        )
        self._thread_cpu_seen: dict[str, float] = {}
        self.breaker = Gauge(
            "notefly_circuit_breaker_state",
            "1 for the state the provider's circuit breaker is in (closed, open, half_open)",
            ["channel", "provider", "state"],
            registry=r,
            multiprocess_mode="livemax",
        )

    def add_write_lock_use(self, use: WriteLockUse) -> None:
        """Count what this process's writer added since the last call (``use`` is
        since start): counters, so that the workers add up."""
        last, self._write_lock_seen = self._write_lock_seen, use
        self.write_lock_waited.inc(max(use.waited_seconds - last.waited_seconds, 0.0))
        self.write_lock_held.inc(max(use.held_seconds - last.held_seconds, 0.0))
        self.write_transactions.inc(max(use.transactions - last.transactions, 0))

    def add_thread_cpu(self, totals: Mapping[str, float]) -> None:
        """Count the CPU seconds this process's threads added since the last call, by
        kind (``totals`` are since start: ``notefly.threads.ThreadCpu``)."""
        seen = self._thread_cpu_seen
        for kind, seconds in totals.items():
            counter = self.thread_cpu.labels(kind)  # shown from the first reading, at 0 too
            added = seconds - seen.get(kind, 0.0)
            if added > 0:
                counter.inc(added)
                seen[kind] = seconds

    def set_breaker(self, channel: str, provider: str, state: str = "closed") -> None:
        for candidate in BREAKER_STATES:
            self.breaker.labels(channel, provider, candidate).set(int(candidate == state))

    def set_actor_stats(self, stats: dict[str, Any]) -> None:
        self.actor_pending.set(stats.get("pending", 0))
        self.entities.set(stats.get("entities", 0))
        self.shard_actors.set(stats.get("shard_actors", 0))
        self.category_actors.set(stats.get("category_actors", 0))
        self.shard_restarts.set(stats.get("restarts", 0))

    def child(self, family: M, *labels: str) -> M:
        """The labelled child of ``family``, from a cache: ``labels()`` takes a lock and
        checks its arguments on every call, which adds up at a call per delivery."""
        key = (id(family), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = family.labels(*labels)
        return cast(M, found)

    def http_request(
        self, service: str, method: str, route: str, status: int, seconds: float
    ) -> None:
        self.child(self.http_latency, service, method, route, str(status)).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every metric, with its content type."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def totals(self) -> Samples:
        """Every sample, by name and labels, as a scrape would see it (all workers)."""
        registry = self.registry
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in registry.collect()
            for sample in family.samples
        }

    def close(self, pid: int) -> None:
        """Drop this process's live gauges from the multiprocess directory (at exit)."""
        if multiprocess_mode():
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class PrometheusObserver:
    """The ``Observer`` port on Prometheus metrics.

    Called from the event loop and from actor threads: prometheus-client is
    thread-safe, and nothing here raises. What the dashboard shows (throughput,
    provider health) is computed from these metrics by ``activity``, so that it
    covers every worker that shares a multiprocess directory, not this one only.
    """

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        bucket_seconds: int = 5,
        window_seconds: int = 600,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.activity = Activity(
            self.metrics.totals,
            wall_clock,
            bucket_seconds=bucket_seconds,
            window_seconds=window_seconds,
        )

    def register_provider(self, channel: str, provider: str, breaker: str = "closed") -> None:
        """Make a configured provider known before it sends anything."""
        self.activity.register(channel, provider)
        self.metrics.set_breaker(channel, provider, breaker)

    def breaker_changed(self, circuit: CircuitSnapshot) -> None:
        """A provider's circuit breaker changed state (``notefly.breaker``)."""
        try:
            self.metrics.set_breaker(circuit.channel, circuit.provider, circuit.state)
        except Exception:
            log.exception("metrics.error", hook="breaker_changed")

    # -- the Observer port ------------------------------------------------------------

    def message_accepted(self, category: str) -> None:
        try:
            m = self.metrics
            m.child(m.messages_accepted, category).inc()
        except Exception:  # the port says never raise
            log.exception("metrics.error", hook="message_accepted")

    def delivery_finished(
        self,
        channel: str,
        provider: str | None,
        status: str,
        attempt: int,
        latency_seconds: float | None,
    ) -> None:
        """One delivery: a round of one."""
        latencies = [] if latency_seconds is None else [latency_seconds]
        self.deliveries_finished(channel, provider, {status: 1}, latencies)

    def deliveries_finished(
        self,
        channel: str,
        provider: str | None,
        counts: Mapping[str, int],
        latencies: Sequence[float],
    ) -> None:
        try:
            name = provider or UNKNOWN
            m = self.metrics
            for status, count in counts.items():
                m.child(m.deliveries, channel, name, status).inc(count)
                if status == "failed":
                    m.child(m.dead_letters, channel, name).inc(count)
            if latencies:
                observe_all(m.child(m.provider_latency, channel, name), latencies)
        except Exception:
            log.exception("metrics.error", hook="deliveries_finished")

    def delivery_retried(self, channel: str, provider: str | None, attempt: int) -> None:
        try:
            m = self.metrics
            m.child(m.retries, channel, provider or UNKNOWN).inc()
        except Exception:
            log.exception("metrics.error", hook="delivery_retried")


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe`` for each amount, with one write per bucket and one for the
    sum instead of two per amount (each a lock, and a file write in multiprocess mode).
    Falls back to observing one by one on a prometheus-client whose histogram children
    look different."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for amount in amounts:
            histogram.observe(amount)
        return
    per_bucket: dict[int, int] = {}
    for amount in amounts:
        # The first bound >= amount, as observe() picks it (the last bound is +Inf).
        i = bisect.bisect_left(bounds, amount)
        per_bucket[i] = per_bucket.get(i, 0) + 1
    total.inc(sum(amounts))
    for i, count in per_bucket.items():
        buckets[i].inc(count)


def prepare_multiprocess_dir(path: Path) -> Path:
    """Make ``path`` ready to be PROMETHEUS_MULTIPROC_DIR for a new set of workers: it
    exists and holds no file of an earlier run (whose counters would be added in)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def prometheus_observer(observer: object) -> PrometheusObserver:
    """The container's observer when it is the Prometheus one (always, but where a test
    swapped it): otherwise a fresh one, so that the services still expose metrics."""
    return observer if isinstance(observer, PrometheusObserver) else PrometheusObserver()
