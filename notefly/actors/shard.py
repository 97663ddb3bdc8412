"""Channel shards: each hosts the per-user entities of one channel.

An entity is the actor of one (user, channel): it holds that user's queue and sends
one delivery at a time, in order. Entities are plain objects on a shard, created on
first use and passivated as soon as their queue is empty, so memory follows the users
with deliveries in hand and the number of threads follows the configuration.

A shard renders on its own thread, then hands a whole *round* (the next delivery of
many entities) to the event loop in one hop: providers send concurrently there and
the outcomes are committed together before the shard hears back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pykka
import structlog

from notefly.actors.bridge import LoopBridge
from notefly.actors.messages import Deliver, Resume, RoundDone
from notefly.domain import (
    ADDRESS_FIELDS,
    QUEUED,
    SENT,
    STATUS_VALUE,
    DeliveryStatus,
    DeliveryTask,
    Outcome,
    Rendered,
)
from notefly.errors import CircuitOpen, PermanentChannelError, TransientChannelError
from notefly.ports import Channel, Clock, NullObserver, Observer, Renderer, Store

log = structlog.get_logger("notefly.actors.shard")

RECORD_ATTEMPTS = 8  # about 25 s of backoff before a write of outcomes is given up


@dataclass(slots=True)
class Entity:
    user_id: str
    pending: deque[DeliveryTask] = field(default_factory=deque)
    busy: bool = False


@dataclass(frozen=True, slots=True)
class ShardSettings:
    """``full_rounds_in_flight``: what a shard may have handed to the event loop and not
    heard back about, in full rounds' worth of deliveries (what a crash could have sent
    without its record: sent again). ``max_rounds_in_flight``: in how many rounds, full
    or not. A round is heard back about once its outcomes are committed. Under sparse
    load rounds hold a delivery or two; counted in rounds alone, four of those filled
    the shard, and each new delivery waited for a commit before it was even rendered."""

    max_attempts: int = 5
    retry_base_seconds: float = 1.0
    round_size: int = 256
    full_rounds_in_flight: int = 4
    max_rounds_in_flight: int = 32
    send_timeout_seconds: float = 30.0

    @property
    def max_in_flight(self) -> int:
        """Deliveries a shard may have in flight at once."""
        return self.full_rounds_in_flight * self.round_size


def _round_done(
    tasks: tuple[DeliveryTask, ...],
) -> Callable[[concurrent.futures.Future[Any]], RoundDone]:
    return lambda future: RoundDone(tasks, future)


class ChannelShard(pykka.ThreadingActor):
    def __init__(
        self,
        channel: Channel,
        index: int,
        *,
        renderer: Renderer,
        store: Store,
        bridge: LoopBridge,
        clock: Clock,
        monotonic: Callable[[], float],
        settings: ShardSettings,
        rng: random.Random | None = None,
        observer: Observer | None = None,
        on_settled: Callable[[list[str]], None] = lambda _ids: None,
    ) -> None:
        super().__init__()
        self.channel = channel
        self.index = index
        self._renderer = renderer
        self._store = store
        self._bridge = bridge
        self._clock = clock
        self._monotonic = monotonic
        self._settings = settings
        self._rng = rng or random.Random()
        self._observer = observer or NullObserver()
        self._on_settled = on_settled
        self._immediate = sends_immediately(channel)
        self._debug = False  # whether debug events are logged; read at each round
        self.entities: dict[str, Entity] = {}
        self._ready: deque[Entity] = deque()
        self._rounds_in_flight = 0
        self._in_flight = 0  # deliveries of those rounds

    def on_start(self) -> None:
        # Named by its channel: the threads' CPU time is counted by name (notefly.threads).
        threading.current_thread().name = f"shard-{self.channel.name}-{self.index}"

    # -- messages -------------------------------------------------------------------

    def on_receive(self, message: Any) -> None:
        try:
            if isinstance(message, Deliver):
                self._enqueue(message.tasks)
            elif isinstance(message, RoundDone):
                self._round_done(message)
            elif isinstance(message, Resume):
                self._resume(message.user_id)
            self._pump()
        except Exception:
            log.exception("shard.error", channel=self.channel.name, shard=self.index)

    def stats(self) -> dict[str, int]:
        return {
            "entities": len(self.entities),
            "pending": sum(len(e.pending) for e in self.entities.values()),
            "rounds_in_flight": self._rounds_in_flight,
            "in_flight": self._in_flight,
        }

    def _enqueue(self, tasks: Sequence[DeliveryTask]) -> None:
        for task in tasks:
            entity = self.entities.get(task.recipient.user_id)
            if entity is None:
                entity = self.entities[task.recipient.user_id] = Entity(task.recipient.user_id)
            if not entity.pending and not entity.busy:
                self._ready.append(entity)
            entity.pending.append(task)

    def _pump(self) -> None:
        """Start rounds while there is work and room for it."""
        settings = self._settings
        room = settings.max_in_flight - self._in_flight
        while self._ready and room > 0 and self._rounds_in_flight < settings.max_rounds_in_flight:
            batch: list[tuple[DeliveryTask, Rendered | Exception]] = []
            size = min(settings.round_size, room)
            while self._ready and len(batch) < size:
                entity = self._ready.popleft()
                entity.busy = True
                task = entity.pending[0]
                batch.append((task, self._render(task)))
            self._rounds_in_flight += 1
            self._in_flight += len(batch)
            room -= len(batch)
            tasks = tuple(task for task, _ in batch)
            self._bridge.pipe(self._send_round(batch), self.actor_ref, _round_done(tasks))

    def _render(self, task: DeliveryTask) -> Rendered | Exception:
        if task.channel in ADDRESS_FIELDS and not task.recipient.address:
            return PermanentChannelError("the user has no address for this channel any more")
        try:
            if task.is_digest:
                return self._renderer.render_digest(task.channel, task.items, task.recipient)
            return self._renderer.render(task.channel, task.message, task.recipient)
        except Exception as exc:  # a broken template fails its own delivery only
            return exc

    def _round_done(self, done: RoundDone) -> None:
        self._rounds_in_flight -= 1
        self._in_flight -= len(done.tasks)
        future = done.result
        error = concurrent.futures.CancelledError() if future.cancelled() else future.exception()
        outcomes: dict[str, Outcome] = {} if error else {o.delivery_id: o for o in future.result()}
        if error is not None:  # not expected: _send_one contains every delivery's errors
            log.error("shard.round_failed", channel=self.channel.name, error=repr(error))
        settled = []
        for task in done.tasks:
            entity = self.entities[task.recipient.user_id]
            outcome = outcomes.get(task.id)
            if outcome is None and task.attempts + 1 >= self._settings.max_attempts:
                # The round failed as a whole again and again: its providers may have
                # sent, so trying for ever could repeat a send for ever. Let go; the
                # store still holds the delivery as queued, for recovery at the next start.
                log.error(
                    "delivery.abandoned",
                    message_id=task.message.id,
                    delivery_id=task.id,
                    user=task.recipient.user_id,
                    channel=task.channel,
                    attempts=task.attempts + 1,
                    error=repr(error),
                )
            elif outcome is None or outcome.status is QUEUED:
                # Try again later. The task keeps the head of its user's queue and the
                # entity waits for it, so later messages never overtake a retried one.
                # A round that failed as a whole counts as an attempt: it may have sent.
                attempts = outcome.attempts if outcome else task.attempts + 1
                entity.pending[0] = replace(task, attempts=attempts)
                delay = outcome.retry_after if outcome and outcome.retry_after else None
                self._bridge.tell_later(
                    delay or self._backoff(attempts + 1), self.actor_ref, Resume(entity.user_id)
                )
                continue
            entity.pending.popleft()
            entity.busy = False
            settled.append(task.id)
            if entity.pending:
                self._ready.append(entity)
            else:
                # Passivate: an entity with nothing queued holds nothing worth keeping,
                # so a broadcast keeps only the users it is still delivering to.
                del self.entities[entity.user_id]
        if settled:
            self._on_settled(settled)

    def _resume(self, user_id: str) -> None:
        entity = self.entities.get(user_id)
        if entity is not None and entity.busy and entity.pending:
            entity.busy = False
            self._ready.append(entity)

    # -- on the event loop ------------------------------------------------------------

    async def _send_round(
        self, batch: list[tuple[DeliveryTask, Rendered | Exception]]
    ) -> list[Outcome]:
        tally = _Tally()
        self._debug = log.is_enabled_for(logging.DEBUG)  # the same for every round
        if self._immediate:
            # The provider never waits: one after the other in this task costs far less
            # than a task per delivery, and ends as soon.
            bind = log.is_enabled_for(logging.INFO)  # its records are info events
            # One clock reading stamps the round's sends: they follow one another within
            # a few milliseconds, and the store then formats one time, not one a row.
            at = self._clock.now()
            outcomes = [await self._send_one(task, r, tally, bind=bind, at=at) for task, r in batch]
        else:
            outcomes = await asyncio.gather(
                *(self._send_one(task, r, tally, bind=True) for task, r in batch)
            )
        try:
            tally.report(self._observer, self.channel.name)
        except Exception:  # observers must not raise; one that does must not cost sends
            log.exception("observer.error", channel=self.channel.name)
        await self._record(outcomes)
        return outcomes

    async def _record(self, outcomes: list[Outcome]) -> None:
        """Record the outcomes, waiting out a store failure rather than sending again.

        The round stays in flight meanwhile, so a shard whose store is down stops taking
        new work (backpressure). When the store stays down, the shard gives up on this
        write: the deliveries are still queued in the store, and recovery sends them
        again at the next start (at-least-once).
        """
        delay = self._settings.retry_base_seconds / 10
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                await self._store.record_outcomes(outcomes)
                return
            except Exception as exc:
                log.error(
                    "store.record_failed",
                    channel=self.channel.name,
                    attempt=attempt,
                    deliveries=len(outcomes),
                    error=repr(exc),
                )
                if attempt == RECORD_ATTEMPTS:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _send_one(
        self,
        task: DeliveryTask,
        rendered: Rendered | Exception,
        tally: _Tally,
        *,
        bind: bool,
        at: datetime | None = None,
    ) -> Outcome:
        """``at``: when a delivery sent counts as sent (default: when its send returns)."""
        started = self._monotonic()
        try:
            outcome = await self._attempt(task, rendered, bind=bind, at=at)
            latency = self._monotonic() - started if isinstance(rendered, Rendered) else None
            if outcome.status is QUEUED:
                # Decide the wait now, so the store keeps it (not_before) for whichever
                # node retries after this one.
                outcome = replace(
                    outcome, retry_after=self._retry_delay(outcome), at=self._clock.now()
                )
                if outcome.attempts > task.attempts:  # not when a breaker held it back
                    self._observer.delivery_retried(
                        task.channel, outcome.provider, outcome.attempts
                    )
                return outcome
        except Exception as exc:
            # A fault past the provider's own errors (a send that answered something
            # that is not a result, say) fails this delivery alone, as a provider that
            # raises does; left to the round, it would fail every delivery in it.
            _bind(task)
            log.exception("delivery.error")
            outcome, latency = self._failed(task, task.attempts + 1, exc), None
        tally.finished(outcome.provider, STATUS_VALUE[outcome.status], latency)
        return outcome

    async def _attempt(
        self,
        task: DeliveryTask,
        rendered: Rendered | Exception,
        *,
        bind: bool,
        at: datetime | None = None,
    ) -> Outcome:
        # Every event about a delivery names it. Without ``bind`` (a provider that logs
        # nothing at the configured level), only the paths that do log bind.
        if bind:
            _bind(task)
        attempt = task.attempts + 1
        if isinstance(rendered, Exception):
            _bind(task)
            return self._failed(task, attempt, rendered)
        started = self._monotonic()
        try:
            if self._immediate:
                result = await self.channel.send(rendered, delivery_id=task.id)
            else:
                try:
                    async with asyncio.timeout(self._settings.send_timeout_seconds):
                        result = await self.channel.send(rendered, delivery_id=task.id)
                except TimeoutError:
                    # A provider that never answers must not hold its whole round.
                    raise TransientChannelError(
                        f"the provider did not answer within {self._settings.send_timeout_seconds}s"
                    ) from None
        except CircuitOpen as exc:
            # Not sent, so not an attempt: the delivery waits out the cool-down.
            _bind(task)
            log.debug("delivery.held", error=exc.message, retry_after=exc.retry_after)
            return Outcome(
                task.id,
                DeliveryStatus.QUEUED,
                task.attempts,
                self.channel.provider,
                error=exc.message,
                recipient=rendered.to,
                retry_after=exc.retry_after,
            )
        except TransientChannelError as exc:
            _bind(task)
            if attempt < self._settings.max_attempts:
                log.warning("delivery.retry", attempt=attempt, error=exc.message)
                return Outcome(
                    task.id,
                    DeliveryStatus.QUEUED,
                    attempt,
                    self.channel.provider,
                    error=exc.message,
                    recipient=rendered.to,
                    retry_after=exc.retry_after,
                )
            return self._failed(task, attempt, exc, rendered)
        except Exception as exc:
            _bind(task)
            return self._failed(task, attempt, exc, rendered)
        if self._debug:
            latency_ms = round((self._monotonic() - started) * 1000, 3)
            log.debug(
                "delivery.sent", provider=result.provider, latency_ms=latency_ms, attempt=attempt
            )
        return Outcome(
            task.id,
            SENT,
            attempt,
            result.provider,
            result.provider_message_id,
            rendered.to,
            rendered.subject,
            rendered.text,
            at=at or self._clock.now(),
        )

    def _failed(
        self, task: DeliveryTask, attempt: int, exc: Exception, rendered: Rendered | None = None
    ) -> Outcome:
        status = DeliveryStatus.FAILED
        reason = getattr(exc, "message", None) or repr(exc)
        if isinstance(exc, PermanentChannelError) and rendered is None:
            status = DeliveryStatus.SKIPPED  # nothing to send it to
        log.warning("delivery.failed", status=status.value, attempt=attempt, error=reason)
        return Outcome(
            task.id,
            status,
            attempt,
            self.channel.provider,
            error=reason,
            recipient=rendered.to if rendered else None,
            subject=rendered.subject if rendered else None,
            text=rendered.text if rendered else None,
        )

    def _retry_delay(self, outcome: Outcome) -> float:
        if outcome.retry_after is not None:  # the provider said when
            return outcome.retry_after
        return self._backoff(outcome.attempts)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        cap = self._settings.retry_base_seconds * (2 ** min(attempt - 1, 10))
        return self._rng.uniform(0, cap)


def sends_immediately(channel: Channel) -> bool:
    """Whether the provider declares that its ``send`` never waits (``immediate =
    True``, the log providers): it records and returns without suspending, so a round
    calls it in turn, without a task or a timeout per delivery."""
    return bool(getattr(channel, "immediate", False))


def _bind(task: DeliveryTask) -> None:
    structlog.contextvars.bind_contextvars(
        message_id=task.message.id,
        delivery_id=task.id,
        user=task.recipient.user_id,
        channel=task.channel,
    )


class _Tally:
    """A round's final outcomes, counted for the observer: once per round and provider
    rather than once per delivery."""

    __slots__ = ("counts", "latencies")

    def __init__(self) -> None:
        self.counts: dict[str | None, dict[str, int]] = {}
        self.latencies: dict[str | None, list[float]] = {}

    def finished(self, provider: str | None, status: str, latency: float | None) -> None:
        counts = self.counts.get(provider)
        if counts is None:
            counts = self.counts[provider] = {}
            self.latencies[provider] = []
        counts[status] = counts.get(status, 0) + 1
        if latency is not None:
            self.latencies[provider].append(latency)

    def report(self, observer: Observer, channel: str) -> None:
        for provider, counts in self.counts.items():
            observer.deliveries_finished(channel, provider, counts, self.latencies[provider])
