"""What a shard keeps in flight: deliveries handed to the event loop whose outcomes are
not committed yet. Bounded in full rounds' worth of deliveries (what a crash could
repeat), not in rounds: small rounds under sparse load must not make a new delivery
wait for earlier commits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import pykka
import pytest

from notefly.actors import ActorSystem
from notefly.actors.shard import ShardSettings
from notefly.domain import Category, DeliveryStatus, Outcome
from notefly.rendering import TemplateRenderer, build_environment
from notefly.services import PublishCommand, Publisher
from tests.fakes import FakeChannel, FakeIds, FakeStore, FixedClock
from tests.unit.test_actors import add_sms_users, eventually

PAUSE = 0.3  # long enough for a shard that could start another round to have done so


class HeldStore(FakeStore):
    """Outcomes are committed only once ``commit()`` is called: until then, every round
    that sent stays in flight."""

    def __init__(self) -> None:
        super().__init__(FixedClock())
        self.gate = asyncio.Event()

    def commit(self) -> None:
        self.gate.set()

    def all_sent(self) -> bool:
        return all(d.status is DeliveryStatus.SENT for d in self.deliveries.values())

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        await self.gate.wait()
        await super().record_outcomes(outcomes)


@pytest.fixture
async def store() -> HeldStore:
    return HeldStore()


@pytest.fixture
async def systems() -> AsyncIterator[list[ActorSystem]]:
    started: list[ActorSystem] = []
    yield started
    for system in started:
        await system.stop(grace=1.0)
    pykka.ActorRegistry.stop_all()


async def one_category_each(store: HeldStore, phones: dict[str, str]) -> None:
    """Each user subscribed alone to a category of their own (``c<user id>``)."""
    for uid, phone in phones.items():
        await store.add_category(Category(f"c{uid}", f"C {uid}"))
        await add_sms_users(store, f"c{uid}", {uid: phone})


async def stops_at(count: int, sms: FakeChannel, store: HeldStore, *, of: int) -> None:
    """Exactly ``count`` sends go out while no outcome is committed; once they are, the
    rest of the ``of`` sends follow."""
    await eventually(lambda: len(sms.sent) == count, f"{count} sends go out")
    await asyncio.sleep(PAUSE)
    assert len(sms.sent) == count  # and nothing more until their outcomes are committed
    store.commit()
    await eventually(lambda: len(sms.sent) == of, "the rest follows")


async def start(
    store: HeldStore, systems: list[ActorSystem], settings: ShardSettings
) -> tuple[FakeChannel, Publisher]:
    """An actor system with one sms shard; its provider, and a publisher to it."""
    sms = FakeChannel("sms")
    system = ActorSystem(
        store=store,
        renderer=TemplateRenderer(build_environment()),
        channels={"sms": sms},
        clock=store.clock,
        monotonic=time.monotonic,
        shards_per_channel=1,
        page_size=100,
        shard_settings=settings,
    )
    systems.append(system)
    await system.start()
    return sms, Publisher(store, system, FakeIds(), store.clock)


async def test_single_deliveries_are_sent_while_earlier_rounds_wait_for_their_commit(
    store: HeldStore, systems: list[ActorSystem]
) -> None:
    phones = {f"u{n}": f"+4100{n}" for n in range(6)}
    await one_category_each(store, phones)
    sms, publisher = await start(
        store, systems, ShardSettings(round_size=2, full_rounds_in_flight=4)
    )

    # Six messages of one recipient each, one after the other: six rounds of one.
    for n, uid in enumerate(phones):
        await publisher.publish(PublishCommand(f"c{uid}", "Rates are up"))
        await eventually(lambda n=n: len(sms.sent) == n + 1, f"message {n} is sent")

    # None of their outcomes is committed, and each was sent without waiting for one.
    assert not any(d.status is DeliveryStatus.SENT for d in store.deliveries.values())
    store.commit()
    await eventually(store.all_sent, "every outcome is recorded")


async def test_deliveries_in_flight_stay_within_the_full_rounds_allowed(
    store: HeldStore, systems: list[ActorSystem]
) -> None:
    phones = {f"u{n:02d}": f"+4200{n:02d}" for n in range(11)}
    await add_sms_users(store, "finance", phones)
    sms, publisher = await start(
        store, systems, ShardSettings(round_size=2, full_rounds_in_flight=2)
    )

    await publisher.publish(PublishCommand("finance", "Rates are up"))
    await stops_at(4, sms, store, of=len(phones))  # two full rounds
    assert sorted(r.to for _, r in sms.sent) == sorted(phones.values())
    await eventually(store.all_sent, "every outcome is recorded")


async def test_many_small_rounds_stay_within_the_rounds_allowed(
    store: HeldStore, systems: list[ActorSystem]
) -> None:
    phones = {f"u{n}": f"+4300{n}" for n in range(5)}
    await one_category_each(store, phones)
    settings = ShardSettings(round_size=4, full_rounds_in_flight=4, max_rounds_in_flight=3)
    sms, publisher = await start(store, systems, settings)

    for uid in phones:
        await publisher.publish(PublishCommand(f"c{uid}", "Rates are up"))
    await stops_at(3, sms, store, of=len(phones))  # three rounds of one
