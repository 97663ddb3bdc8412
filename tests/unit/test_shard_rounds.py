"""How a shard sends a round: providers that never wait are called in turn, without a
task per delivery, and must come out exactly as the concurrent path does: the same
retries and failures, log events that name their own delivery, the same metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

import pykka
import pytest
import structlog
from prometheus_client import Histogram
from structlog.testing import capture_logs

from channels.log import LogChannel
from notefly.actors import ActorSystem
from notefly.actors import shard as shard_module
from notefly.actors.shard import ShardSettings, sends_immediately
from notefly.breaker import BreakerChannel
from notefly.domain import DeliveryStatus, Message, delivery_id
from notefly.errors import CircuitOpen, PermanentChannelError, TransientChannelError
from notefly.metrics import LATENCY_BUCKETS, Metrics, PrometheusObserver, observe_all
from notefly.ports import Channel, Rendered, SendResult
from notefly.rendering import TemplateRenderer, build_environment
from notefly.services import PublishCommand, Publisher
from tests.fakes import FakeChannel, FakeIds, FakeStore, FixedClock
from tests.unit.test_actors import add_sms_users, add_user, eventually

MAX_ATTEMPTS = 4


@dataclass
class Broker:
    store: FakeStore
    publisher: Publisher
    observer: RecordingObserver

    async def publish(self, category: str, body: str) -> Message:
        message, _ = await self.publisher.publish(PublishCommand(category, body))
        return message

    def settled(self) -> bool:
        return all(f.done for f in self.store.fanouts.values()) and all(
            d.status is not DeliveryStatus.QUEUED for d in self.store.deliveries.values()
        )


StartBroker = Callable[[Mapping[str, Channel]], Awaitable[Broker]]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore(FixedClock())


@pytest.fixture
async def start_broker(store: FakeStore) -> AsyncIterator[StartBroker]:
    """An ActorSystem on this test's loop with the given channels, stopped at teardown."""
    systems: list[ActorSystem] = []

    async def start(channels: Mapping[str, Channel]) -> Broker:
        observer = RecordingObserver()
        system = ActorSystem(
            store=store,
            renderer=TemplateRenderer(build_environment()),
            channels=channels,
            clock=store.clock,
            monotonic=time.monotonic,
            shards_per_channel=2,
            page_size=2,
            shard_settings=ShardSettings(retry_base_seconds=0.01, max_attempts=MAX_ATTEMPTS),
            observer=observer,
        )
        systems.append(system)
        await system.start()
        return Broker(store, Publisher(store, system, FakeIds(), store.clock), observer)

    yield start
    for system in systems:
        await system.stop(grace=1.0)
    pykka.ActorRegistry.stop_all()


class ImmediateFakeChannel(FakeChannel):
    """The fake provider, declaring that its sends never wait (as the log ones do)."""

    immediate = True


class RecordingObserver:
    """An observer that keeps what it hears, per (channel, provider, status)."""

    def __init__(self) -> None:
        self.finished: dict[tuple[str, str | None, str], int] = {}
        self.latencies = 0
        self.retried = 0

    def message_accepted(self, category: str) -> None:
        pass

    def delivery_finished(
        self,
        channel: str,
        provider: str | None,
        status: str,
        attempt: int,
        latency_seconds: float | None,
    ) -> None:
        raise AssertionError("a shard reports its rounds with deliveries_finished")

    def deliveries_finished(
        self,
        channel: str,
        provider: str | None,
        counts: dict[str, int],
        latencies: list[float],
    ) -> None:
        for status, count in counts.items():
            key = (channel, provider, status)
            self.finished[key] = self.finished.get(key, 0) + count
        self.latencies += len(latencies)

    def delivery_retried(self, channel: str, provider: str | None, attempt: int) -> None:
        self.retried += 1


@pytest.fixture
def warning_level() -> Iterator[None]:
    """Logging configured as the benchmark runs it: info events are dropped."""
    before = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        yield
    finally:
        structlog.configure(wrapper_class=before)


def test_log_providers_and_their_breaker_wrapper_declare_that_they_never_wait() -> None:
    log_channel = LogChannel("sms")
    assert sends_immediately(log_channel)
    assert sends_immediately(BreakerChannel(log_channel, breaker=None))  # type: ignore[arg-type]
    assert not sends_immediately(FakeChannel("sms"))
    assert not sends_immediately(BreakerChannel(FakeChannel("sms"), breaker=None))  # type: ignore[arg-type]


@pytest.mark.parametrize("immediate", [True, False], ids=["in-turn", "concurrent"])
async def test_retries_and_failures_come_out_the_same_whichever_way_a_round_sends(
    store: FakeStore, start_broker: StartBroker, immediate: bool
) -> None:
    phones = {"flaky": "+1001", "down": "+1002", "rejected": "+1003", "healthy": "+1004"}
    await add_sms_users(store, "finance", phones)
    sms = ImmediateFakeChannel("sms") if immediate else FakeChannel("sms")
    sms.fail_for(["+1001"], lambda: TransientChannelError("busy"), times=2)
    sms.fail_for(["+1002"], lambda: TransientChannelError("timeout"))
    sms.fail_for(["+1003"], lambda: PermanentChannelError("unknown number"))
    broker = await start_broker({"sms": sms})
    observer = broker.observer

    message = await broker.publish("finance", "Rates are up")
    await eventually(broker.settled, "every delivery is final")

    def final(uid: str) -> tuple[DeliveryStatus, int, int]:
        d = store.deliveries[delivery_id(message.id, uid, "sms")]
        return d.status, d.attempts, len(sms.calls_to(phones[uid]))

    assert final("flaky") == (DeliveryStatus.SENT, 3, 3)
    assert final("down") == (DeliveryStatus.FAILED, MAX_ATTEMPTS, MAX_ATTEMPTS)
    assert final("rejected") == (DeliveryStatus.FAILED, 1, 1)
    assert final("healthy") == (DeliveryStatus.SENT, 1, 1)
    assert observer.finished == {("sms", "fake", "sent"): 2, ("sms", "fake", "failed"): 2}
    assert observer.latencies == 4  # every final outcome came from a call to the provider
    assert observer.retried == 2 + (MAX_ATTEMPTS - 1)


@pytest.mark.parametrize("immediate", [True, False], ids=["in-turn", "concurrent"])
async def test_a_delivery_held_by_an_open_circuit_keeps_its_attempts(
    store: FakeStore, start_broker: StartBroker, immediate: bool
) -> None:
    await add_sms_users(store, "finance", {"ann": "+6001", "bob": "+6002"})
    sms = ImmediateFakeChannel("sms") if immediate else FakeChannel("sms")
    held = CircuitOpen("the circuit is open", retry_after=0.01, channel="sms", provider="fake")
    sms.fail_for(["+6002"], lambda: held, times=2)
    broker = await start_broker({"sms": sms})

    message = await broker.publish("finance", "Rates are up")
    await eventually(broker.settled, "every delivery is final")

    bob = store.deliveries[delivery_id(message.id, "bob", "sms")]
    assert (bob.status, bob.attempts) == (DeliveryStatus.SENT, 1)
    assert len(sms.calls_to("+6002")) == 3  # two held back, then sent
    assert broker.observer.retried == 0
    assert broker.observer.finished == {("sms", "fake", "sent"): 2}


async def test_every_record_of_a_log_provider_names_its_own_delivery(
    store: FakeStore, start_broker: StartBroker
) -> None:
    phones = {f"user{i}": f"+300{i}" for i in range(6)}
    await add_sms_users(store, "finance", phones)
    broker = await start_broker({"sms": LogChannel("sms")})

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        message = await broker.publish("finance", "Rates are up")
        await eventually(broker.settled, "every delivery is final")

    records = [e for e in logs if e["event"] == "notification.recorded"]
    assert sorted((e["user"], e["to"]) for e in records) == sorted(phones.items())
    for event in records:
        assert event["delivery_id"] == delivery_id(message.id, event["user"], "sms")
        assert event["message_id"] == message.id
        assert event["channel"] == "sms"


async def test_at_warning_level_a_retry_still_names_its_delivery(
    store: FakeStore, start_broker: StartBroker, warning_level: None
) -> None:
    assert not shard_module.log.is_enabled_for(logging.INFO)
    await add_sms_users(store, "finance", {"ann": "+4001", "bob": "+4002", "cy": "+4003"})
    sms = ImmediateFakeChannel("sms")
    sms.fail_for(["+4002"], lambda: TransientChannelError("busy"), times=1)
    broker = await start_broker({"sms": sms})

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        message = await broker.publish("finance", "Rates are up")
        await eventually(broker.settled, "every delivery is final")

    retries = [e for e in logs if e["event"] == "delivery.retry"]
    assert [(e["user"], e["delivery_id"]) for e in retries] == [
        ("bob", delivery_id(message.id, "bob", "sms"))
    ]
    assert store.deliveries[delivery_id(message.id, "bob", "sms")].attempts == 2


async def test_a_log_provider_that_raises_fails_only_its_delivery(
    store: FakeStore, start_broker: StartBroker
) -> None:
    class Broken(LogChannel):
        async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
            if rendered.to == "+5002":
                raise RuntimeError("the disk is full")
            return await super().send(rendered, delivery_id=delivery_id)

    await add_sms_users(store, "finance", {"ann": "+5001", "bob": "+5002"})
    broker = await start_broker({"sms": Broken("sms")})

    message = await broker.publish("finance", "Rates are up")
    await eventually(broker.settled, "every delivery is final")

    ann = store.deliveries[delivery_id(message.id, "ann", "sms")]
    bob = store.deliveries[delivery_id(message.id, "bob", "sms")]
    assert (ann.status, bob.status) == (DeliveryStatus.SENT, DeliveryStatus.FAILED)
    assert "the disk is full" in (bob.error or "")


def test_observing_a_round_at_once_fills_the_histogram_as_one_by_one() -> None:
    amounts = [0.0, 0.0004, 0.001, 0.003, 0.005, 0.2, 0.25, 7.0, 29.9, 31.0, 120.0]
    metrics = Metrics()
    at_once = metrics.child(metrics.provider_latency, "sms", "log")
    one_by_one = metrics.child(metrics.provider_latency, "email", "log")

    observe_all(at_once, amounts)
    for amount in amounts:
        one_by_one.observe(amount)

    def samples(child: Histogram) -> list[tuple[str, float]]:
        found = [(s.name + str(s.labels), s.value) for s in child._samples()]
        return [(name, value) for name, value in found if not name.startswith("_created")]

    assert samples(at_once) == samples(one_by_one)
    assert len(LATENCY_BUCKETS) + 1 == sum(1 for name, _ in samples(at_once) if "le" in name)


def test_a_round_of_outcomes_adds_up_in_the_delivery_counters() -> None:
    observer = PrometheusObserver()
    observer.deliveries_finished("sms", "log", {"sent": 250, "failed": 3}, [0.0001] * 253)
    observer.deliveries_finished("sms", None, {"skipped": 2}, [])
    observer.delivery_finished("sms", "log", "sent", 1, 0.002)

    totals = observer.metrics.totals()

    def value(name: str, **labels: str) -> float:
        return totals[(name, frozenset(labels.items()))]

    assert value("notefly_deliveries_total", channel="sms", provider="log", status="sent") == 251
    assert value("notefly_deliveries_total", channel="sms", provider="log", status="failed") == 3
    assert value("notefly_dead_letters_total", channel="sms", provider="log") == 3
    assert (
        value("notefly_deliveries_total", channel="sms", provider="unknown", status="skipped") == 2
    )
    assert value("notefly_provider_latency_seconds_count", channel="sms", provider="log") == 254


@pytest.mark.parametrize("immediate", [True, False], ids=["in-turn", "concurrent"])
async def test_a_provider_answering_nonsense_fails_its_own_delivery_once(
    store: FakeStore, start_broker: StartBroker, immediate: bool
) -> None:
    base = ImmediateFakeChannel if immediate else FakeChannel

    class Nonsense(base):  # type: ignore[valid-type,misc]
        async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
            result: SendResult = await super().send(rendered, delivery_id=delivery_id)
            return None if rendered.to == "+7002" else result  # type: ignore[return-value]

    phones = {f"user{i}": f"+700{i}" for i in range(1, 7)}
    await add_sms_users(store, "finance", phones)
    sms = Nonsense("sms")
    broker = await start_broker({"sms": sms})

    message = await broker.publish("finance", "Rates are up")
    await eventually(broker.settled, "every delivery is final")

    def final(uid: str) -> tuple[DeliveryStatus, int, int]:
        d = store.deliveries[delivery_id(message.id, uid, "sms")]
        return d.status, d.attempts, len(sms.calls_to(phones[uid]))

    # Sent once, failed at once: a fault after the send must not send again.
    assert final("user2") == (DeliveryStatus.FAILED, 1, 1)
    error = store.deliveries[delivery_id(message.id, "user2", "sms")].error
    assert "AttributeError" in (error or "")
    others = [uid for uid in phones if uid != "user2"]
    assert [final(uid) for uid in others] == [(DeliveryStatus.SENT, 1, 1)] * len(others)
    assert broker.observer.finished == {("sms", "fake", "sent"): 5, ("sms", "fake", "failed"): 1}


async def test_an_observer_that_raises_costs_no_delivery_and_no_repeat(
    store: FakeStore, start_broker: StartBroker
) -> None:
    phones = {f"user{i}": f"+710{i}" for i in range(1, 5)}
    await add_sms_users(store, "finance", phones)
    sms = ImmediateFakeChannel("sms")
    broker = await start_broker({"sms": sms})

    def broken(*_args: object) -> None:
        raise RuntimeError("the metrics backend is gone")

    broker.observer.deliveries_finished = broken  # type: ignore[method-assign]

    message = await broker.publish("finance", "Rates are up")
    await eventually(broker.settled, "every delivery is final")

    statuses = {store.deliveries[delivery_id(message.id, uid, "sms")].status for uid in phones}
    assert statuses == {DeliveryStatus.SENT}
    assert sorted(r.to for _, r in sms.calls) == sorted(phones.values())


async def test_a_round_that_keeps_failing_is_let_go_after_the_last_attempt(
    store: FakeStore, start_broker: StartBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds: list[int] = []

    async def lost(self: shard_module.ChannelShard, batch: list[object]) -> list[object]:
        rounds.append(len(batch))
        raise RuntimeError("the round was lost")

    monkeypatch.setattr(shard_module.ChannelShard, "_send_round", lost)
    await add_user(store, "ann", phone="+7201", subscriptions={"finance": ["sms"]})
    broker = await start_broker({"sms": FakeChannel("sms")})

    with capture_logs() as logs:
        message = await broker.publish("finance", "Rates are up")
        await eventually(
            lambda: any(e["event"] == "delivery.abandoned" for e in logs), "the shard lets go"
        )
        await asyncio.sleep(0.3)  # longer than any backoff left: no round comes after

    # Each lost round counts as an attempt, as one that sent may have: a fault that
    # fails every round would otherwise send again for ever.
    assert rounds == [1] * MAX_ATTEMPTS
    abandoned = [e for e in logs if e["event"] == "delivery.abandoned"]
    assert [(e["delivery_id"], e["attempts"]) for e in abandoned] == [
        (delivery_id(message.id, "ann", "sms"), MAX_ATTEMPTS)
    ]
    # Still queued in the store: recovery takes it up at the next start.
    assert store.deliveries[delivery_id(message.id, "ann", "sms")].status is DeliveryStatus.QUEUED
