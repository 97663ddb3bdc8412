from __future__ import annotations

from datetime import timedelta

import pytest

from notefly.domain import (
    DeliveryStatus,
    Message,
    MessageStatus,
    Outcome,
    Subscription,
    User,
)
from notefly.errors import InvalidInput, NotFound, Overloaded
from notefly.ports import DeliveryCounts, FanoutPage, PageRequest
from notefly.services import Directory, Inbox, PublishCommand, Publisher, message_status
from tests.fakes import FakeIds, FakeStore, FixedClock

CHANNELS = ("sms", "email", "push")


class RecordingDispatcher:
    node_id = "node-a"

    def __init__(self) -> None:
        self.published: list[Message] = []
        self.first_pages: list[FanoutPage | None] = []
        self.request: PageRequest | None = None  # what first_page() answers

    def first_page(self, category_id: str) -> PageRequest | None:
        return self.request

    def publish(self, message: Message, first: FanoutPage | None = None) -> None:
        self.published.append(message)
        self.first_pages.append(first)

    def overloaded(self) -> bool:
        return self.full

    full = False


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def store(clock: FixedClock) -> FakeStore:
    return FakeStore(clock)


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def publisher(store: FakeStore, dispatcher: RecordingDispatcher, clock: FixedClock) -> Publisher:
    return Publisher(store, dispatcher, FakeIds(), clock)


@pytest.fixture
def directory(store: FakeStore, clock: FixedClock) -> Directory:
    return Directory(store, FakeIds(), clock, CHANNELS)


# -- Publisher -------------------------------------------------------------------------


async def test_publish_commits_the_message_and_starts_one_fanout(
    publisher: Publisher, store: FakeStore, dispatcher: RecordingDispatcher, clock: FixedClock
) -> None:
    message, created = await publisher.publish(
        PublishCommand(category="finance", body="Rates are up", title="Rates")
    )

    assert created is True
    assert await store.get_message(message.id) == message
    assert (message.category_id, message.body, message.title) == (
        "finance",
        "Rates are up",
        "Rates",
    )
    assert message.accepted_at == clock.now()
    assert dispatcher.published == [message]
    # The accepting node owns the fan-out from the start: no other node claims it.
    assert store.fanouts[message.id].owner == "node-a"


async def test_a_repeated_idempotency_key_returns_the_original_and_dispatches_nothing(
    publisher: Publisher, store: FakeStore, dispatcher: RecordingDispatcher, clock: FixedClock
) -> None:
    first, _ = await publisher.publish(
        PublishCommand(category="finance", body="Rates are up", idempotency_key="k-1")
    )
    clock.advance(5)

    again, created = await publisher.publish(
        PublishCommand(category="finance", body="Rates are up (retry)", idempotency_key="k-1")
    )

    assert created is False
    assert again == first
    assert again.body == "Rates are up"
    assert dispatcher.published == [first]
    assert list(store.messages) == [first.id]


async def test_different_idempotency_keys_are_different_messages(
    publisher: Publisher, dispatcher: RecordingDispatcher
) -> None:
    one, _ = await publisher.publish(PublishCommand("finance", "a", idempotency_key="k-1"))
    two, created = await publisher.publish(PublishCommand("finance", "b", idempotency_key="k-2"))

    assert created is True
    assert one.id != two.id
    assert dispatcher.published == [one, two]


async def test_publishing_to_an_unknown_category_is_not_found_and_stores_nothing(
    publisher: Publisher, store: FakeStore, dispatcher: RecordingDispatcher
) -> None:
    with pytest.raises(NotFound) as caught:
        await publisher.publish(PublishCommand(category="gardening", body="Tulips"))

    assert caught.value.code == "category_not_found"
    assert caught.value.status == 404
    assert store.messages == {}
    assert dispatcher.published == []


async def subscribe(store: FakeStore, user_id: str, *channels: str) -> None:
    await store.add_user(
        User(id=user_id, name=user_id, email=f"{user_id}@example.org", phone="+15550100")
    )
    await store.upsert_subscription(Subscription(user_id, "finance", channels))


async def test_the_first_page_commits_with_the_message_and_goes_to_the_dispatcher(
    publisher: Publisher, store: FakeStore, dispatcher: RecordingDispatcher
) -> None:
    for user_id in ("u1", "u2", "u3"):
        await subscribe(store, user_id, "email")
    dispatcher.request = PageRequest(2, CHANNELS, "node-a", {})

    message, created = await publisher.publish(PublishCommand("finance", "Rates are up"))

    assert created is True
    [first] = dispatcher.first_pages
    assert first is not None
    # Two users in the page; the third is left for the fan-out, after the cursor.
    assert [t.recipient.user_id for t in first.tasks] == ["u1", "u2"]
    assert (first.cursor, first.done) == ("u2", False)
    assert {d.user_id for d in store.deliveries.values()} == {"u1", "u2"}
    assert (store.fanouts[message.id].owner, store.fanouts[message.id].done) == ("node-a", False)


async def test_a_first_page_covering_the_audience_finishes_the_fanout(
    publisher: Publisher, store: FakeStore, dispatcher: RecordingDispatcher
) -> None:
    await subscribe(store, "u1", "sms", "email")
    dispatcher.request = PageRequest(64, CHANNELS, "node-a", {})

    message, _ = await publisher.publish(PublishCommand("finance", "Rates are up"))

    [first] = dispatcher.first_pages
    assert first is not None and first.done
    assert sorted(t.channel for t in first.tasks) == ["email", "sms"]
    assert (await store.delivery_counts(message.id)).fanout_done


async def test_a_failed_first_page_still_accepts_the_message(
    publisher: Publisher, store: FakeStore, dispatcher: RecordingDispatcher
) -> None:
    await subscribe(store, "u1", "sms")
    dispatcher.request = PageRequest(64, CHANNELS, "node-a", {})
    store.fail("fanout_page", times=1)

    message, created = await publisher.publish(PublishCommand("finance", "Rates are up"))

    assert created is True
    assert await store.get_message(message.id) == message
    # No page: the fan-out plans the whole audience, as for any other message.
    assert dispatcher.first_pages == [None]
    assert store.deliveries == {}


async def test_a_replayed_key_or_a_scheduled_message_plans_no_first_page(
    publisher: Publisher, store: FakeStore, dispatcher: RecordingDispatcher, clock: FixedClock
) -> None:
    await subscribe(store, "u1", "sms")
    dispatcher.request = PageRequest(64, CHANNELS, "node-a", {})
    await publisher.publish(PublishCommand("finance", "a", idempotency_key="k-1"))
    await publisher.publish(PublishCommand("finance", "a", idempotency_key="k-1"))
    later, _ = await publisher.publish(
        PublishCommand("finance", "b", deliver_at=clock.now() + timedelta(hours=1))
    )

    assert len(dispatcher.first_pages) == 1  # the replay dispatches nothing
    assert len(store.deliveries) == 1
    assert later.id in store.messages
    assert store.fanouts[later.id].owner is None  # claimed by whichever node is up then


# -- Directory -------------------------------------------------------------------------


async def register(
    directory: Directory,
    *,
    email: str | None = None,
    phone: str | None = None,
    push_token: str | None = None,
) -> User:
    return await directory.register(
        User(id="", name="Ada", email=email, phone=phone, push_token=push_token)
    )


async def test_register_assigns_an_id_and_a_creation_time(
    directory: Directory, store: FakeStore, clock: FixedClock
) -> None:
    user = await register(directory, email="ada@example.org")

    assert user.id.startswith("usr_")
    assert user.created_at == clock.now()
    assert await store.get_user(user.id) == user


async def test_subscribe_returns_channels_in_canonical_order(
    directory: Directory, store: FakeStore
) -> None:
    user = await register(directory, email="ada@example.org", phone="+15550100", push_token="t")

    sub = await directory.subscribe(user.id, "movies", ["push", "email", "sms", "push"])

    assert sub.channels == ("sms", "email", "push")
    assert await store.list_subscriptions(user.id) == [sub]


async def test_subscribe_again_replaces_the_channels(
    directory: Directory, store: FakeStore
) -> None:
    user = await register(directory, email="ada@example.org", phone="+15550100")
    await directory.subscribe(user.id, "movies", ["sms", "email"])

    await directory.subscribe(user.id, "movies", ["email"])

    assert [s.channels for s in await store.list_subscriptions(user.id)] == [("email",)]


async def test_subscribe_rejects_a_channel_the_user_has_no_address_for(
    directory: Directory, store: FakeStore
) -> None:
    user = await register(directory, email="ada@example.org")

    with pytest.raises(InvalidInput) as caught:
        await directory.subscribe(user.id, "sports", ["email", "sms"])

    assert caught.value.code == "missing_address"
    assert caught.value.status == 422
    assert caught.value.details == {"category": "sports", "channels": ["sms"]}
    assert "phone number" in caught.value.message
    assert await store.list_subscriptions(user.id) == []


async def test_subscribe_rejects_unknown_channels(directory: Directory, store: FakeStore) -> None:
    user = await register(directory, email="ada@example.org")

    with pytest.raises(InvalidInput) as caught:
        await directory.subscribe(user.id, "sports", ["email", "pigeon"])

    assert caught.value.code == "unknown_channel"
    assert "pigeon" in caught.value.message
    assert caught.value.details == {"known": list(CHANNELS)}
    assert await store.list_subscriptions(user.id) == []


async def test_subscribe_needs_at_least_one_channel(directory: Directory, store: FakeStore) -> None:
    user = await register(directory, email="ada@example.org")

    with pytest.raises(InvalidInput) as caught:
        await directory.subscribe(user.id, "sports", [])

    assert caught.value.code == "no_channels"
    assert await store.list_subscriptions(user.id) == []


async def test_set_subscriptions_changes_all_or_nothing(
    directory: Directory, store: FakeStore
) -> None:
    user = await register(directory, email="ada@example.org")
    await directory.subscribe(user.id, "finance", ["email"])

    with pytest.raises(InvalidInput) as caught:
        await directory.set_subscriptions(user.id, {"movies": ["email"], "sports": ["sms"]})
    assert caught.value.code == "missing_address"
    assert [s.category_id for s in await store.list_subscriptions(user.id)] == ["finance"]

    subs = await directory.set_subscriptions(
        user.id, {"finance": [], "movies": ["email"], "sports": ["email"]}
    )
    assert [(s.category_id, s.channels) for s in subs] == [
        ("movies", ("email",)),
        ("sports", ("email",)),
    ]
    assert await store.list_subscriptions(user.id) == subs


async def test_subscribe_to_an_unknown_category_or_user_is_not_found(
    directory: Directory,
) -> None:
    user = await register(directory, email="ada@example.org")

    with pytest.raises(NotFound) as no_category:
        await directory.subscribe(user.id, "gardening", ["email"])
    with pytest.raises(NotFound) as no_user:
        await directory.subscribe("usr_nobody", "sports", ["email"])

    assert no_category.value.code == "category_not_found"
    assert no_user.value.code == "user_not_found"


async def test_update_refuses_to_clear_an_address_a_subscription_needs(
    directory: Directory, store: FakeStore
) -> None:
    user = await register(directory, email="ada@example.org", phone="+15550100")
    await directory.subscribe(user.id, "finance", ["email"])

    with pytest.raises(InvalidInput) as caught:
        await directory.update(user.id, {"email": None})

    assert caught.value.code == "missing_address"
    assert caught.value.details == {"category": "finance", "channels": ["email"]}
    assert (await store.get_user(user.id)).email == "ada@example.org"


async def test_update_may_clear_an_address_no_subscription_needs(
    directory: Directory, store: FakeStore
) -> None:
    user = await register(directory, email="ada@example.org", phone="+15550100")
    await directory.subscribe(user.id, "finance", ["email"])

    updated = await directory.update(user.id, {"phone": None, "name": "Ada L."})

    assert updated.phone is None
    assert await store.get_user(user.id) == updated
    assert updated.name == "Ada L."


async def test_unsubscribe_removes_the_subscription(directory: Directory, store: FakeStore) -> None:
    user = await register(directory, email="ada@example.org")
    await directory.subscribe(user.id, "finance", ["email"])

    await directory.unsubscribe(user.id, "finance")

    assert await store.list_subscriptions(user.id) == []
    with pytest.raises(NotFound):
        await directory.unsubscribe(user.id, "finance")


# -- message_status --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (DeliveryCounts(fanout_done=False, by_status={}), MessageStatus.ACCEPTED),
        (DeliveryCounts(fanout_done=False, by_status={"sent": 3}), MessageStatus.ACCEPTED),
        (DeliveryCounts(fanout_done=True, by_status={"queued": 1, "sent": 2}), "delivering"),
        (DeliveryCounts(fanout_done=True, by_status={"sent": 2, "failed": 1}), "delivered"),
        (DeliveryCounts(fanout_done=True, by_status={"queued": 0, "skipped": 1}), "delivered"),
        (DeliveryCounts(fanout_done=True, by_status={}), MessageStatus.DELIVERED),
    ],
)
def test_message_status_from_counts(counts: DeliveryCounts, expected: str) -> None:
    assert message_status(counts) == expected


async def test_message_status_follows_a_message_through_the_store(
    publisher: Publisher, store: FakeStore
) -> None:
    for uid in ("u1", "u2", "u3"):
        await store.add_user(User(uid, uid.upper(), email=f"{uid}@example.org"))
        await store.upsert_subscription(Subscription(uid, "sports", ("email",)))
    message, _ = await publisher.publish(PublishCommand("sports", "Goal!"))

    assert message_status(await store.delivery_counts(message.id)) is MessageStatus.ACCEPTED

    first = await store.fanout_page(message, None, 2, CHANNELS)
    assert message_status(await store.delivery_counts(message.id)) is MessageStatus.ACCEPTED
    rest = await store.fanout_page(message, first.cursor, 2, CHANNELS)
    assert rest.done
    assert message_status(await store.delivery_counts(message.id)) is MessageStatus.DELIVERING

    tasks = first.tasks + rest.tasks
    await store.record_outcomes([Outcome(t.id, DeliveryStatus.SENT, 1) for t in tasks[:-1]])
    assert message_status(await store.delivery_counts(message.id)) is MessageStatus.DELIVERING

    await store.record_outcomes([Outcome(tasks[-1].id, DeliveryStatus.FAILED, 5)])
    assert message_status(await store.delivery_counts(message.id)) is MessageStatus.DELIVERED


async def test_message_status_of_an_unknown_message_is_not_found(store: FakeStore) -> None:
    with pytest.raises(NotFound):
        await store.delivery_counts("msg_nope")


# -- Inbox -----------------------------------------------------------------------------


async def test_inbox_lists_newest_first_and_marks_read(
    publisher: Publisher, store: FakeStore, clock: FixedClock
) -> None:
    await store.add_user(User("u1", "Ada", email="ada@example.org"))
    await store.upsert_subscription(Subscription("u1", "movies", ("email",)))
    inbox = Inbox(store)
    for body in ("first", "second"):
        message, _ = await publisher.publish(PublishCommand("movies", body))
        await store.fanout_page(message, None, 10, CHANNELS)
        clock.advance(60)

    entries = await inbox.list("u1")
    assert [n.body for n in entries] == ["second", "first"]

    read = await inbox.mark_read("u1", entries[1].id)
    assert read.read_at == clock.now()
    assert [n.body for n in await inbox.list("u1", unread_only=True)] == ["second"]
    assert [n.body for n in await inbox.list("u1", before=entries[0].id)] == ["first"]

    clock.advance(timedelta(minutes=1).total_seconds())
    assert await inbox.mark_all_read("u1") == 1
    assert await inbox.list("u1", unread_only=True) == []


async def test_an_overloaded_node_refuses_before_writing_anything(
    publisher: Publisher, store: FakeStore, dispatcher: RecordingDispatcher
) -> None:
    dispatcher.full = True
    with pytest.raises(Overloaded) as refused:
        await publisher.publish(PublishCommand(category="finance", body="one too many"))
    assert refused.value.status == 429
    assert refused.value.retry_after > 0
    assert store.messages == {}
    assert dispatcher.published == []
