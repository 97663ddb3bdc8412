"""The actor system end to end on fakes: fan-out, delivery, retries, supervision, recovery.

The actors run on their own threads and call back into this test's event loop, so the
tests never block the loop: they poll the store with short ``asyncio.sleep`` steps,
bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import pytest

from notefly.actors import ActorSystem
from notefly.actors.pump import PumpSettings
from notefly.actors.shard import ShardSettings
from notefly.domain import DeliveryStatus, Message, Outcome, Subscription, User, delivery_id
from notefly.errors import PermanentChannelError, TransientChannelError
from notefly.ports import FanoutPage
from notefly.rendering import TemplateRenderer, build_environment
from notefly.services import PublishCommand, Publisher
from tests.fakes import FakeChannel, FakeIds, FakeStore, FixedClock

CHANNELS = ("sms", "email", "push")
MAX_ATTEMPTS = 4
SETTINGS = ShardSettings(retry_base_seconds=0.01, max_attempts=MAX_ATTEMPTS)
DEADLINE = 5.0

Key = tuple[str, str, str]  # (user, channel, message id)


@dataclass
class Broker:
    system: ActorSystem
    store: FakeStore
    channels: dict[str, FakeChannel]
    publisher: Publisher

    async def publish(self, category: str, body: str, title: str | None = None) -> Message:
        message, _ = await self.publisher.publish(PublishCommand(category, body, title))
        return message

    def received(self) -> Counter[Key]:
        """What each user got on each channel, counted: successful sends only."""
        got: Counter[Key] = Counter()
        for name, channel in self.channels.items():
            for did, _ in channel.sent:
                d = self.store.deliveries[did]
                assert d.channel == name
                got[(d.user_id, d.channel, d.message_id)] += 1
        return got

    def settled(self) -> bool:
        """Every fan-out is done and no delivery is still queued."""
        return all(f.done for f in self.store.fanouts.values()) and all(
            d.status is not DeliveryStatus.QUEUED for d in self.store.deliveries.values()
        )


StartBroker = Callable[..., Awaitable[Broker]]


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, seconds: float = DEADLINE
) -> None:
    """Poll ``condition`` without blocking the loop; fail after ``seconds``."""

    async def holds() -> bool:
        result = condition()
        return await result if inspect.isawaitable(result) else result

    try:
        async with asyncio.timeout(seconds):
            # The state changes on actor threads, which have no asyncio.Event to set: poll.
            while not await holds():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds}s waiting until {what}") from None


async def add_user(
    store: FakeStore,
    uid: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    push: str | None = None,
    subscriptions: dict[str, Iterable[str]] | None = None,
) -> User:
    user = await store.add_user(User(uid, uid.title(), email=email, phone=phone, push_token=push))
    for category, channels in (subscriptions or {}).items():
        await store.upsert_subscription(Subscription(uid, category, tuple(channels)))
    return user


async def add_sms_users(store: FakeStore, category: str, phones: Mapping[str, str]) -> None:
    """Each user of ``phones`` (id: phone number), subscribed to ``category`` by SMS."""
    for uid, phone in phones.items():
        await add_user(store, uid, phone=phone, subscriptions={category: ["sms"]})


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def store(clock: FixedClock) -> FakeStore:
    return FakeStore(clock)


@pytest.fixture
def channels() -> dict[str, FakeChannel]:
    return {name: FakeChannel(name) for name in CHANNELS}


@pytest.fixture
async def start_broker(
    store: FakeStore, channels: dict[str, FakeChannel], clock: FixedClock
) -> AsyncIterator[StartBroker]:
    """Start an ActorSystem on this test's loop; it is stopped at teardown."""
    systems: list[ActorSystem] = []

    async def start(
        *,
        renderer: TemplateRenderer | None = None,
        page_size: int = 2,
        first_page_size: int = 1,  # the rest of an audience goes through the pages
        max_pending: int = 50_000,
        settings: ShardSettings = SETTINGS,
        node_id: str = "local",
        segment_users: int | None = None,  # no splitting unless asked
        own_channels: dict[str, FakeChannel] | None = None,  # instead of the shared ones
        poll_seconds: float = 0.02,
    ) -> Broker:
        sending = channels if own_channels is None else own_channels
        system = ActorSystem(
            store=store,
            renderer=renderer or TemplateRenderer(build_environment()),
            channels=sending,
            clock=clock,
            node_id=node_id,
            segment_users=segment_users,
            pump_settings=PumpSettings(poll_seconds=poll_seconds),
            monotonic=time.monotonic,
            shards_per_channel=2,
            page_size=page_size,
            first_page_size=first_page_size,
            max_pending=max_pending,
            shard_settings=settings,
        )
        systems.append(system)
        await system.start()
        return Broker(system, store, sending, Publisher(store, system, FakeIds(), clock))

    yield start
    for system in systems:
        await system.stop(grace=1.0)
    pykka.ActorRegistry.stop_all()


# -- fan-out ------------------------------------------------------------------------------


async def test_each_subscriber_gets_each_message_once_on_each_chosen_channel(
    store: FakeStore, start_broker: StartBroker
) -> None:
    await add_user(
        store,
        "alice",
        email="alice@example.org",
        phone="+15550001",
        subscriptions={"finance": ["sms", "email"]},
    )
    await add_user(
        store, "bob", push="push-bob", subscriptions={"movies": ["push"], "sports": ["push"]}
    )
    await add_user(
        store,
        "carol",
        email="carol@example.org",
        subscriptions={c: ["email"] for c in ("finance", "movies", "sports")},
    )
    await add_user(store, "dave", email="dave@example.org", phone="+15550004")  # no subscriptions
    broker = await start_broker()

    finance = await broker.publish("finance", "Rates are up", title="Rates")
    movies = await broker.publish("movies", "Dune opens tonight")
    sports = await broker.publish("sports", "Final score 2-1")
    await eventually(broker.settled, "every delivery is final")

    assert broker.received() == {
        ("alice", "sms", finance.id): 1,
        ("alice", "email", finance.id): 1,
        ("carol", "email", finance.id): 1,
        ("bob", "push", movies.id): 1,
        ("carol", "email", movies.id): 1,
        ("bob", "push", sports.id): 1,
        ("carol", "email", sports.id): 1,
    }
    addresses = {"sms": "+15550001", "push": "push-bob"}
    for name, channel in broker.channels.items():
        for did, rendered in channel.sent:
            d = store.deliveries[did]
            message = store.messages[d.message_id]
            assert rendered.to == addresses.get(name, f"{d.user_id}@example.org")
            assert message.body in rendered.text
    [(_, alice_sms)] = broker.channels["sms"].sent
    assert alice_sms.text == "FIN: Rates: Rates are up"
    assert {d.status for d in store.deliveries.values()} == {DeliveryStatus.SENT}


@pytest.mark.parametrize("subscribers", [4, 5])
async def test_pagination_reaches_every_subscriber_exactly_once(
    store: FakeStore, start_broker: StartBroker, subscribers: int
) -> None:
    users = [f"u{i}" for i in range(1, subscribers + 1)]
    for uid in users:
        await add_user(store, uid, email=f"{uid}@example.org", subscriptions={"movies": ["email"]})
    broker = await start_broker(page_size=2)

    message = await broker.publish("movies", "Premiere")
    await eventually(broker.settled, "every delivery is final")

    assert broker.received() == {(uid, "email", message.id): 1 for uid in users}
    assert sorted(n.user_id for _, n in store.inbox.values()) == users


async def test_every_page_is_planned_for_the_shards_that_send_it(
    store: FakeStore, start_broker: StartBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    for uid in ("u1", "u2", "u3", "u4"):
        await add_user(store, uid, email=f"{uid}@example.org", subscriptions={"movies": ["email"]})
    asked: list[int] = []
    original = store.fanout_page

    async def spy(*args: Any, partitions: int = 1, **kwargs: Any) -> FanoutPage:
        asked.append(partitions)
        return await original(*args, partitions=partitions, **kwargs)

    monkeypatch.setattr(store, "fanout_page", spy)
    broker = await start_broker(page_size=2)  # two shards a channel

    await broker.publish("movies", "Premiere")
    await eventually(broker.settled, "every delivery is final")

    # The first page, with the message, then the rest two users at a time.
    assert asked == [2, 2, 2]


async def test_a_channel_without_an_address_or_not_enabled_is_skipped_not_sent(
    store: FakeStore, start_broker: StartBroker
) -> None:
    # The store may hold what the Directory would refuse today (the phone was removed
    # later, or the channel was switched off on this broker).
    await add_user(
        store,
        "nophone",
        email="nophone@example.org",
        subscriptions={"sports": ["sms", "email", "webhook"]},
    )
    await add_user(store, "withphone", phone="+15550002", subscriptions={"sports": ["sms"]})
    broker = await start_broker()

    message = await broker.publish("sports", "Kick-off")
    await eventually(broker.settled, "every delivery is final")

    skipped = store.deliveries[delivery_id(message.id, "nophone", "sms")]
    assert skipped.status is DeliveryStatus.SKIPPED
    assert skipped.error == "user has no phone number"
    webhook = store.deliveries[delivery_id(message.id, "nophone", "webhook")]
    assert webhook.status is DeliveryStatus.SKIPPED
    assert "not enabled" in (webhook.error or "")
    assert broker.received() == {
        ("nophone", "email", message.id): 1,
        ("withphone", "sms", message.id): 1,
    }
    assert [r.to for _, r in broker.channels["sms"].calls] == ["+15550002"]


# -- failures and retries -----------------------------------------------------------------


async def test_transient_errors_are_retried_and_permanent_ones_are_not(
    store: FakeStore, channels: dict[str, FakeChannel], start_broker: StartBroker
) -> None:
    phones = {"flaky": "+1001", "down": "+1002", "rejected": "+1003", "healthy": "+1004"}
    await add_sms_users(store, "finance", phones)
    sms = channels["sms"]
    sms.fail_for(["+1001"], lambda: TransientChannelError("busy"), times=2)
    sms.fail_for(["+1002"], lambda: TransientChannelError("timeout"))
    sms.fail_for(["+1003"], lambda: PermanentChannelError("unknown number"))
    broker = await start_broker()

    message = await broker.publish("finance", "Rates are up")
    await eventually(broker.settled, "every delivery is final")

    def final(uid: str) -> tuple[DeliveryStatus, int, int]:
        d = store.deliveries[delivery_id(message.id, uid, "sms")]
        return d.status, d.attempts, len(sms.calls_to(phones[uid]))

    assert final("flaky") == (DeliveryStatus.SENT, 3, 3)
    assert final("down") == (DeliveryStatus.FAILED, MAX_ATTEMPTS, MAX_ATTEMPTS)
    assert final("rejected") == (DeliveryStatus.FAILED, 1, 1)
    assert final("healthy") == (DeliveryStatus.SENT, 1, 1)
    assert store.deliveries[delivery_id(message.id, "down", "sms")].error == "timeout"
    assert store.deliveries[delivery_id(message.id, "rejected", "sms")].error == "unknown number"
    assert broker.received() == {
        ("flaky", "sms", message.id): 1,
        ("healthy", "sms", message.id): 1,
    }


async def test_a_provider_that_never_answers_times_out_and_is_retried(
    store: FakeStore, channels: dict[str, FakeChannel], start_broker: StartBroker
) -> None:
    await add_user(store, "stuck", phone="+1005", subscriptions={"finance": ["sms"]})
    await add_user(store, "other", phone="+1006", subscriptions={"finance": ["sms"]})
    sms = channels["sms"]
    sms.hold()  # every send hangs until released
    broker = await start_broker(
        settings=ShardSettings(retry_base_seconds=0.01, max_attempts=5, send_timeout_seconds=0.05)
    )
    message = await broker.publish("finance", "Anyone there?")

    def timed_out_twice() -> bool:
        rows = [store.deliveries.get(delivery_id(message.id, u, "sms")) for u in ("stuck", "other")]
        return all(d is not None and d.attempts >= 2 for d in rows)

    await eventually(timed_out_twice, "the hanging sends timed out and were retried")
    sms.release()
    await eventually(broker.settled, "every delivery is final")

    for uid in ("stuck", "other"):
        d = store.deliveries[delivery_id(message.id, uid, "sms")]
        assert d.status is DeliveryStatus.SENT
        assert d.attempts >= 2  # the first attempt timed out


POISON_TEMPLATE = '{% if recipient.user_id == "mallory" %}{{ 1 // 0 }}{% endif %}{{ body }}\n'


def same_shard_users(broker: Broker, poison: str, others: Iterable[str]) -> list[str]:
    """The users of ``others`` hosted on the same shard as ``poison``."""
    return [u for u in others if broker.system._shard_of(u) == broker.system._shard_of(poison)]


async def test_a_template_that_fails_for_one_user_fails_only_that_delivery(
    store: FakeStore, start_broker: StartBroker, tmp_path: Path
) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "movies.txt").write_text(POISON_TEMPLATE)
    users = {"mallory": "+2000", "ann": "+2001", "ben": "+2002", "cid": "+2003", "dan": "+2004"}
    await add_sms_users(store, "movies", users)
    broker = await start_broker(renderer=TemplateRenderer(build_environment([tmp_path])))
    neighbours = same_shard_users(broker, "mallory", users)
    assert len(neighbours) > 1, "the test needs a user on mallory's shard"
    healthy = [u for u in users if u != "mallory"]

    first = await broker.publish("movies", "Trailer out")
    await eventually(broker.settled, "the first message is final")
    second = await broker.publish("movies", "Tickets on sale")
    await eventually(broker.settled, "the second message is final")

    for message in (first, second):
        poisoned = store.deliveries[delivery_id(message.id, "mallory", "sms")]
        assert poisoned.status is DeliveryStatus.FAILED
        assert "ZeroDivisionError" in (poisoned.error or "")
    assert broker.received() == {(u, "sms", m.id): 1 for u in healthy for m in (first, second)}
    assert broker.channels["sms"].calls_to("+2000") == []
    assert [r.text for r in broker.channels["sms"].sent_to("+2001")] == [
        "Trailer out",
        "Tickets on sale",
    ]


async def test_a_channel_crashing_for_one_recipient_fails_only_that_delivery(
    store: FakeStore, channels: dict[str, FakeChannel], start_broker: StartBroker
) -> None:
    users = {"mallory": "+2000", "ann": "+2001", "ben": "+2002", "cid": "+2003", "dan": "+2004"}
    await add_sms_users(store, "movies", users)
    channels["sms"].fail_for(["+2000"], lambda: RuntimeError("provider bug"))
    broker = await start_broker()
    neighbours = same_shard_users(broker, "mallory", users)
    assert len(neighbours) > 1, "the test needs a user on mallory's shard"
    healthy = [u for u in users if u != "mallory"]

    first = await broker.publish("movies", "Trailer out")
    await eventually(broker.settled, "the first message is final")
    second = await broker.publish("movies", "Tickets on sale")
    await eventually(broker.settled, "the second message is final")

    for message in (first, second):
        crashed = store.deliveries[delivery_id(message.id, "mallory", "sms")]
        assert (crashed.status, crashed.attempts) == (DeliveryStatus.FAILED, 1)
        assert "provider bug" in (crashed.error or "")
    assert broker.received() == {(u, "sms", m.id): 1 for u in healthy for m in (first, second)}
    assert len(channels["sms"].calls_to("+2000")) == 2


async def test_each_user_gets_their_messages_in_publish_order(
    store: FakeStore, start_broker: StartBroker
) -> None:
    phones = {"ann": "+3001", "ben": "+3002", "cid": "+3003"}
    await add_sms_users(store, "sports", phones)
    broker = await start_broker(page_size=2)

    bodies = [f"update {n}" for n in range(1, 6)]
    for body in bodies:
        await broker.publish("sports", body)
    await eventually(broker.settled, "every delivery is final")

    for phone in phones.values():
        texts = [r.text for r in broker.channels["sms"].sent_to(phone)]
        assert texts == [f"[Sports] {body}" for body in bodies]


async def test_a_split_fan_out_keeps_each_users_messages_in_publish_order(
    store: FakeStore, start_broker: StartBroker
) -> None:
    phones = {f"u{i:02}": f"+30{i:02}" for i in range(12)}
    await add_sms_users(store, "sports", phones)
    broker = await start_broker(page_size=2, segment_users=3)

    bodies = [f"update {n}" for n in range(1, 5)]
    for body in bodies:
        await broker.publish("sports", body)
    await eventually(broker.settled, "every delivery is final")

    assert all(len(segments) == 4 for segments in store.segments.values())
    for phone in phones.values():
        texts = [r.text for r in broker.channels["sms"].sent_to(phone)]
        assert texts == [f"[Sports] {body}" for body in bodies]


async def test_a_finished_segment_claims_the_next_without_waiting_for_the_poll(
    store: FakeStore, start_broker: StartBroker
) -> None:
    await add_sms_users(store, "sports", {f"u{i:02}": f"+30{i:02}" for i in range(12)})
    # The pump would look for work again in a minute: only the wake-ups claim here.
    broker = await start_broker(page_size=2, segment_users=3, poll_seconds=60)

    message = await broker.publish("sports", "Kick-off moved")
    await eventually(broker.settled, "every delivery is final")

    assert [s.owner for s in store.segments[message.id]] == ["local"] * 4
    assert len(broker.received()) == 12


async def test_the_segments_of_a_broadcast_are_planned_and_sent_by_every_node(
    store: FakeStore, start_broker: StartBroker
) -> None:
    users = [f"u{i:03}" for i in range(60)]
    for uid in users:
        await add_user(store, uid, email=f"{uid}@example.org", subscriptions={"finance": ["email"]})
    # The accepting node's provider stalls and it may hold only two pages, so it is
    # soon full: what it has not claimed by then is left to the other node. (Without
    # the stall it could plan every segment before the other node's first poll.)
    stalled = {name: FakeChannel(name) for name in CHANNELS}
    stalled["email"].hold()
    nodes = [
        await start_broker(
            node_id=node,
            page_size=5,
            segment_users=5,
            own_channels=channels,
            max_pending=pending,
        )
        for node, channels, pending in (
            ("n1", stalled, 10),
            ("n2", {name: FakeChannel(name) for name in CHANNELS}, 50_000),
        )
    ]

    message = await nodes[0].publish("finance", "Extra edition")
    await eventually(lambda: bool(nodes[1].received()), "n2 sending segments of its own")
    stalled["email"].release()
    await eventually(nodes[0].settled, "every delivery is final")
    await eventually(nodes[1].settled, "every delivery is final")

    per_node = [node.received() for node in nodes]
    assert per_node[0] + per_node[1] == {(u, "email", message.id): 1 for u in users}
    assert store.fanouts[message.id].done


async def test_an_entity_is_passivated_when_its_queue_is_empty(
    store: FakeStore, channels: dict[str, FakeChannel], start_broker: StartBroker
) -> None:
    for i in range(40):
        await add_user(store, f"u{i:02d}", phone=f"+40{i:02d}", subscriptions={"sports": ["sms"]})
    sms = channels["sms"]
    sms.hold()  # every entity holds its delivery until released
    broker = await start_broker()

    await broker.publish("sports", "Kick-off")
    await eventually(lambda: has_entities(broker, 40), "an entity per user with a delivery in hand")
    sms.release()
    await eventually(broker.settled, "every delivery is final")

    # Memory follows the users with deliveries in hand, not every user ever reached.
    await eventually(lambda: has_entities(broker, 0), "no entity once nothing is queued")
    assert len(broker.received()) == 40


async def has_entities(broker: Broker, count: int) -> bool:
    return await shard_stat(broker, "entities") == count


async def test_a_message_waiting_for_room_is_not_overtaken_by_the_next_one(
    store: FakeStore, channels: dict[str, FakeChannel], start_broker: StartBroker
) -> None:
    await add_user(store, "ann", phone="+5001", subscriptions={"movies": ["sms"]})
    await add_sms_users(store, "sports", {"bea": "+5002", "cal": "+5003"})
    sms = channels["sms"]
    sms.hold()
    broker = await start_broker(max_pending=1)
    await broker.publish("movies", "fills the node")  # held by the stalled provider
    await eventually(lambda: not broker.system.has_room(), "the node is full")

    await broker.publish("sports", "first")  # no room: it waits in the category actor
    sms.release()
    await eventually(broker.system.has_room, "room again")
    await broker.publish("sports", "second")  # must queue behind "first", not pass it
    await eventually(broker.settled, "every delivery is final")

    for phone in ("+5002", "+5003"):
        assert [r.text for r in sms.sent_to(phone)] == ["[Sports] first", "[Sports] second"]


async def shard_pending(broker: Broker, channel: str) -> int:
    """Deliveries waiting on the shards of a channel."""
    return await shard_stat(broker, "pending", channel)


async def shard_stat(broker: Broker, name: str, channel: str | None = None) -> int:
    """A shard statistic added up over the shards of a channel, or of all channels
    (asked off the event loop)."""
    shards = broker.system._shards
    refs = [ref for ch in ([channel] if channel else list(shards)) for ref in shards[ch]]

    def ask() -> int:
        return sum(ref.proxy().stats().get(timeout=1)[name] for ref in refs)

    return await asyncio.to_thread(ask)


async def test_a_retried_message_keeps_its_place_in_the_users_order(
    store: FakeStore, channels: dict[str, FakeChannel], start_broker: StartBroker
) -> None:
    await add_user(store, "ann", phone="+3001", subscriptions={"sports": ["sms"]})
    sms = channels["sms"]
    sms.hold()
    sms.fail_first(1, lambda: TransientChannelError("busy"))
    broker = await start_broker()

    bodies = [f"update {n}" for n in range(1, 6)]
    for body in bodies:
        await broker.publish("sports", body)

    async def all_waiting() -> bool:  # the first is held, the other four queue behind it
        return await shard_pending(broker, "sms") == len(bodies)

    await eventually(all_waiting, "all five deliveries wait on the shard")
    sms.release()
    await eventually(broker.settled, "every delivery is final")

    assert len(sms.calls_to("+3001")) == len(bodies) + 1  # the first one went twice
    assert [r.text for r in sms.sent_to("+3001")] == [f"[Sports] {body}" for body in bodies]


async def test_a_failing_outcome_write_loses_no_delivery(
    store: FakeStore, start_broker: StartBroker
) -> None:
    users = [f"u{i}" for i in range(1, 5)]
    for uid in users:
        await add_user(store, uid, email=f"{uid}@example.org", subscriptions={"finance": ["email"]})
    store.fail("record_outcomes", times=2)
    broker = await start_broker()

    message = await broker.publish("finance", "Rates are up")
    await eventually(broker.settled, "every delivery is final")

    assert store.failures_left("record_outcomes") == 0
    deliveries = await store.list_deliveries(message.id)
    assert [(d.user_id, d.status) for d in deliveries] == [(u, DeliveryStatus.SENT) for u in users]
    # At least once: a send whose outcome was not recorded may be repeated.
    assert set(broker.received()) == {(u, "email", message.id) for u in users}


async def test_a_failing_outcome_write_does_not_send_the_same_sms_again(
    store: FakeStore, channels: dict[str, FakeChannel], start_broker: StartBroker
) -> None:
    await add_user(store, "ann", phone="+3001", subscriptions={"finance": ["sms"]})
    store.fail("record_outcomes", times=3)
    broker = await start_broker()

    message = await broker.publish("finance", "Rates are up")
    await eventually(broker.settled, "every delivery is final")

    assert store.failures_left("record_outcomes") == 0
    assert store.deliveries[delivery_id(message.id, "ann", "sms")].status is DeliveryStatus.SENT
    assert len(channels["sms"].calls_to("+3001")) == 1


async def test_a_failing_fanout_page_is_tried_again_without_gaps_or_repeats(
    store: FakeStore, start_broker: StartBroker
) -> None:
    users = [f"u{i}" for i in range(1, 6)]
    for uid in users:
        await add_user(store, uid, email=f"{uid}@example.org", subscriptions={"movies": ["email"]})
    broker = await start_broker(page_size=2)
    store.fail("fanout_page", times=2)

    message = await broker.publish("movies", "Premiere")
    await eventually(broker.settled, "every delivery is final")

    assert store.failures_left("fanout_page") == 0
    assert broker.received() == {(uid, "email", message.id): 1 for uid in users}


# -- supervision and recovery ---------------------------------------------------------------


async def test_a_dead_shard_is_restarted_and_the_delivery_still_arrives(
    store: FakeStore, start_broker: StartBroker
) -> None:
    await add_user(store, "alice", phone="+15550001", subscriptions={"finance": ["sms"]})
    broker = await start_broker()
    index = broker.system._shard_of("alice")
    broker.system._shards["sms"][index].stop()

    first = await broker.publish("finance", "Rates are up")
    await eventually(broker.settled, "the message is final")
    second = await broker.publish("finance", "Rates are down")
    await eventually(broker.settled, "the second message is final")

    assert broker.received() == {("alice", "sms", first.id): 1, ("alice", "sms", second.id): 1}
    assert broker.system.restarts == 1


async def test_start_finishes_the_work_a_previous_run_left(
    store: FakeStore, start_broker: StartBroker, clock: FixedClock
) -> None:
    users = [f"u{i}" for i in range(1, 6)]
    for uid in users:
        await add_user(
            store,
            uid,
            email=f"{uid}@example.org",
            phone=f"+400{uid[1:]}",
            subscriptions={"sports": ["sms", "email"]},
        )
    ids = FakeIds()
    # A message whose fan-out stopped after its first page, one delivery already sent...
    halfway = Message(ids("msg"), "sports", "Half time", clock.now())
    await store.accept_message(halfway)
    page = await store.fanout_page(halfway, None, 2, CHANNELS)
    assert (page.cursor, page.done) == ("u2", False)
    already_sent = page.tasks[0]
    await store.record_outcomes([Outcome(already_sent.id, DeliveryStatus.SENT, 1)])
    # ...and one fully fanned out whose deliveries were all still queued.
    clock.advance(1)
    queued = Message(ids("msg"), "sports", "Full time", clock.now())
    await store.accept_message(queued)
    assert (await store.fanout_page(queued, None, 10, CHANNELS)).done

    broker = await start_broker(page_size=2)
    await eventually(broker.settled, "every delivery is final")

    expected = {
        (u, ch, m.id): 1 for u in users for ch in ("sms", "email") for m in (halfway, queued)
    }
    already = ("u1", already_sent.channel, halfway.id)
    del expected[already]
    assert broker.received() == expected
    assert {d.status for d in store.deliveries.values()} == {DeliveryStatus.SENT}


async def test_threads_do_not_grow_with_the_audience(
    store: FakeStore, start_broker: StartBroker
) -> None:
    # Every fan-out through the category actor, so that the warm-up starts its thread.
    broker = await start_broker(page_size=2, first_page_size=0)
    warm_up = await broker.publish("finance", "Nobody is listening yet")
    await eventually(broker.settled, "the warm-up fan-out is done")
    idle_threads = threading.active_count()
    users = [f"u{i:04d}" for i in range(2000)]
    for uid in users:
        await add_user(store, uid, phone=f"+5{uid[1:]}", subscriptions={"finance": ["sms"]})

    message = await broker.publish("finance", "Market closed")
    busiest = idle_threads

    def all_delivered() -> bool:
        nonlocal busiest
        busiest = max(busiest, threading.active_count())
        return broker.settled()

    await eventually(all_delivered, "2,000 deliveries are final", seconds=10)

    assert busiest == idle_threads
    assert threading.active_count() == idle_threads
    received = broker.received()
    assert len(received) == 2000
    assert set(received.values()) == {1}
    assert {m for _, _, m in received} == {message.id}
    assert warm_up.id not in {d.message_id for d in store.deliveries.values()}
