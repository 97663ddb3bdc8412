"""What operators see and do: the status snapshot and the redrive of a failed delivery.

The snapshot feeds ``GET /status``, the dashboard's live stream and ``notefly status``.
It combines the store's read model (``OpsStore``: work waiting, recent messages,
failed deliveries), the actor system's stats and what this process's observer heard.
It is cached for ``max_age`` seconds, so any number of dashboards costs one query set;
the counts and lists of failed work, which scan the deliveries, for ``slow_max_age``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

import notefly
from notefly.breaker import Breakers
from notefly.domain import DeliveryTask
from notefly.health import HealthStore, Readiness, actor_stats, readiness
from notefly.metrics import PrometheusObserver
from notefly.ports import DeliveryCounts, SingleWriterStore
from notefly.services import message_status
from notefly.threads import ThreadCpu

log = structlog.get_logger("notefly.operations")


@dataclass(frozen=True, slots=True)
class MessageSummary:
    id: str
    category: str
    title: str | None
    body: str
    accepted_at: datetime
    fanout_done: bool
    deliveries: dict[str, int]  # by status

    @property
    def status(self) -> str:
        return message_status(DeliveryCounts(self.fanout_done, self.deliveries)).value


@dataclass(frozen=True, slots=True)
class FailedDelivery:
    id: str
    message_id: str
    user: str
    channel: str
    provider: str | None
    attempts: int
    error: str | None
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class ProviderError:
    channel: str
    provider: str
    error: str
    at: datetime


# work counts, failed deliveries, the last error by (channel, provider)
FailedWork = tuple[dict[str, int], list[FailedDelivery], dict[tuple[str, str], ProviderError]]


class OpsStore(HealthStore, Protocol):
    """The read model of operations, and the one write they need (redrive)."""

    async def work_counts(self) -> dict[str, int]: ...  # "queued" and "failed"
    async def recent_messages(self, limit: int) -> list[MessageSummary]: ...
    async def failed_deliveries(self, limit: int) -> list[FailedDelivery]: ...
    async def provider_errors(self) -> list[ProviderError]: ...
    async def requeue_failed(self, delivery_id: str, owner: str | None) -> DeliveryTask: ...


class Actors(Protocol):
    node_id: str

    def stats(self) -> dict[str, Any]: ...
    def dispatch(self, tasks: Sequence[DeliveryTask]) -> None: ...


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


class Operations:
    def __init__(
        self,
        *,
        service: str,
        store: OpsStore,
        observer: PrometheusObserver,
        monotonic: Callable[[], float],
        expected_migrations: Sequence[int],
        actors: Actors | None = None,
        breakers: Breakers | None = None,
        max_age: float = 1.0,
        slow_max_age: float = 5.0,
        recent: int = 10,
        failures: int = 20,
    ) -> None:
        self.service = service
        self._store = store
        self._observer = observer
        self._monotonic = monotonic
        self._actors = actors
        self._breakers = breakers
        self._expected = list(expected_migrations)
        self._max_age = max_age
        self._slow_max_age = slow_max_age
        self._slow: tuple[float, FailedWork] | None = None
        self._recent = recent
        self._failures = failures
        self._lock = asyncio.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._thread_cpu = ThreadCpu()

    async def readiness(self) -> Readiness:
        circuits = self._breakers.snapshot() if self._breakers is not None else None
        ready = await readiness(
            self._store, self._actors, expected=self._expected, circuits=circuits
        )
        if ready.actor_stats is not None:
            self._observer.metrics.set_actor_stats(ready.actor_stats)
        return ready

    async def refresh_gauges(self) -> None:
        """Bring the gauges read from the store and the actors up to date (a scrape)."""
        self.count_process_use()
        await self.snapshot()

    def count_process_use(self) -> None:
        """Add to their counters what this process used since the last call: the store's
        write lock (a store with one, SQLite's) and its threads' CPU time, by kind."""
        metrics = self._observer.metrics
        if isinstance(self._store, SingleWriterStore):
            metrics.add_write_lock_use(self._store.write_lock_use())
        metrics.add_thread_cpu(self._thread_cpu.totals())

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:  # concurrent callers share one computation
            now = self._monotonic()
            if self._cached is not None and now - self._cached[0] < self._max_age:
                return self._cached[1]
            snapshot = await self._take()
            self._cached = (self._monotonic(), snapshot)
            return snapshot

    async def redrive(self, delivery_id: str) -> DeliveryTask:
        """Queue a failed delivery again, attempts reset, and hand it to the actors."""
        if self._actors is None:
            raise RuntimeError("only the broker redrives deliveries")
        task = await self._store.requeue_failed(delivery_id, self._actors.node_id)
        self._actors.dispatch([task])
        self._observer.metrics.redrives.labels(task.channel).inc()
        self._cached = self._slow = None  # the next snapshot shows it queued
        return task

    def forget_snapshot(self) -> None:
        """The failed work changed elsewhere (a bulk redrive): the next snapshot reads
        the store again."""
        self._cached = self._slow = None

    async def keep_sampling(self, every: float = 1.0, gauges_every: float = 5.0) -> None:
        """Until cancelled: sample the activity and count the store's write-lock use and
        the threads' CPU time every ``every`` seconds, and refresh this worker's actor
        gauges every ``gauges_every`` (with several workers, a scrape or a dashboard
        reaches one of them, and the others' gauges must be current too)."""
        loop = asyncio.get_running_loop()
        gauges_due = loop.time()
        while True:
            self.count_process_use()
            if self._actors is not None and loop.time() >= gauges_due:
                gauges_due = loop.time() + gauges_every
                try:
                    stats = await actor_stats(self._actors, gauges_every)
                except Exception as exc:
                    log.warning("metrics.actor_stats_failed", error=repr(exc))
                else:
                    self._observer.metrics.set_actor_stats(stats)
            try:
                # Off the loop: with several workers this reads their metric files.
                await asyncio.to_thread(self._observer.activity.sample)
            except Exception as exc:
                log.warning("metrics.sample_failed", error=repr(exc))
            await asyncio.sleep(every)

    async def _failed_work(self) -> FailedWork:
        now = self._monotonic()
        if self._slow is not None and now - self._slow[0] < self._slow_max_age:
            return self._slow[1]
        work: FailedWork = (
            await self._store.work_counts(),
            await self._store.failed_deliveries(self._failures),
            {(e.channel, e.provider): e for e in await self._store.provider_errors()},
        )
        self._slow = (self._monotonic(), work)
        return work

    async def _take(self) -> dict[str, Any]:
        ready = await self.readiness()
        try:
            recent = await self._store.recent_messages(self._recent)
            counts, failed, errors = await self._failed_work()
        except Exception:
            if ready.ok:
                raise
            counts, recent, failed, errors = {}, [], [], {}  # the checks say why
        circuits = {(c.channel, c.provider): c.state for c in ready.circuits or ()}
        metrics = self._observer.metrics
        metrics.queued.set(counts.get("queued", 0))
        metrics.failed_stored.set(counts.get("failed", 0))
        activity = self._observer.activity
        providers = activity.providers()
        stats = ready.actor_stats or {}
        workers = activity.gauges()
        snapshot: dict[str, Any] = _json(
            {
                "service": self.service,
                "version": notefly.__version__,
                "node": stats.get("node") or (self._actors.node_id if self._actors else None),
                **ready.to_dict(),
                "work": {
                    "queued": counts.get("queued", 0),
                    "failed": counts.get("failed", 0),
                    "in_actors": workers.get("pending", stats.get("pending", 0)),
                },
                "actors": stats,  # this node's
                "workers": workers,  # every worker's, added up
                "counters": {
                    "messages_accepted": activity.accepted,
                    "sent": sum(p.sent for p in providers),
                    "failed": sum(p.failed for p in providers),
                    "retried": sum(p.retried for p in providers),
                },
                "throughput": activity.throughput.series(),
                "recent_messages": [{**asdict(m), "status": m.status} for m in recent],
                "failures": [asdict(f) for f in failed],
                "providers": [
                    {
                        **asdict(p),
                        "circuit": circuits.get(key, "closed"),
                        "last_error": errors[key].error if key in errors else None,
                        "last_error_at": errors[key].at if key in errors else None,
                    }
                    for p in providers
                    for key in [(p.channel, p.provider)]
                ],
            }
        )
        return snapshot
