"""Digests, quiet hours, throttles and scheduled messages at the store: every backend
records the same plan for each delivery and hands each due digest to one node."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from notefly.domain import DeliveryStatus, Outcome, Priority, Subscription, User, delivery_id
from notefly.ports import Store
from notefly.schedule import Throttle
from tests.contract.audience import T0, FakeClock, message
from tests.contract.conftest import Backend

# T0 is 09:00 UTC; Ada's daily digest goes out at 10:00 UTC.
DAILY_10 = "daily@10:00"


async def ada(store: Store, *, schedule: str = "immediate", quiet: str | None = None) -> None:
    await store.add_user(User("u1", "Ada", "ada@example.org", "+15550101", quiet_hours=quiet))
    await store.upsert_subscription(Subscription("u1", "sports", ("email",), schedule=schedule))


async def publish(store: Store, message_id: str, minute: int, **fields: Any) -> list[str]:
    """Accept and fan out a message at T0 + ``minute``; the ids of the tasks to send now."""
    msg = message(message_id, accepted_at=T0 + timedelta(minutes=minute), **fields)
    await store.accept_message(msg, owner="n1")
    page = await store.fanout_page(msg, None, 10, ["email", "sms"], owner="n1")
    return [task.id for task in page.tasks]


async def test_schedules_and_quiet_hours_round_trip(store: Store, clock: FakeClock) -> None:
    await ada(store, schedule="weekly@4@10:00", quiet="22:00-07:00")
    assert (await store.get_user("u1")).quiet_hours == "22:00-07:00"
    [sub] = await store.list_subscriptions("u1")
    assert sub.schedule == "weekly@4@10:00"
    [replaced] = await store.replace_subscriptions(
        "u1", [Subscription("u1", "movies", ("sms",), schedule="hourly")]
    )
    assert replaced.schedule == "hourly"
    assert [s.schedule for s in await store.list_subscriptions("u1")] == ["hourly"]


async def test_a_digest_subscription_collects_until_its_digest_is_due(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    await ada(store, schedule=DAILY_10)
    assert await publish(store, "m1", 0) == []
    assert await publish(store, "m2", 1) == []

    deliveries = await store.list_deliveries("m1")
    assert [(d.status, d.mode, d.digest_id) for d in deliveries] == [
        (DeliveryStatus.QUEUED, "digest", None)
    ]
    inbox = await store.list_notifications("u1", unread_only=False, limit=10, before=None)
    assert [n.via for n in inbox] == ["digest", "digest"]
    assert await store.claim_deliveries("n1", 10) == []
    clock.set(T0 + timedelta(minutes=59))
    assert await store.claim_digests("n1", 10) == []

    clock.set(T0 + timedelta(hours=1))
    [digest] = await store.claim_digests("n1", 10)

    assert digest.is_digest and digest.id.startswith("g_")
    assert [m.id for m in digest.items] == ["m2", "m1"]  # newest first
    assert (digest.message.id, digest.channel, digest.recipient.address) == (
        "m2",
        "email",
        "ada@example.org",
    )
    assert await store.claim_digests("n2", 10) == []
    carried = [d.digest_id for m in ("m1", "m2") for d in await store.list_deliveries(m)]
    assert carried == [digest.id, digest.id]


async def test_two_nodes_at_once_form_each_digest_once(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    for n in range(6):
        user_id = f"u{n}"
        await store.add_user(User(user_id, user_id, f"{user_id}@example.org"))
        await store.upsert_subscription(
            Subscription(user_id, "sports", ("email",), schedule=DAILY_10)
        )
    for minute, message_id in enumerate(("m1", "m2", "m3")):
        msg = message(message_id, accepted_at=T0 + timedelta(minutes=minute))
        await store.accept_message(msg)
        await store.fanout_page(msg, None, 100, ["email"])
    clock.set(T0 + timedelta(hours=2))
    first, second = await backend.open(clock), await backend.open(clock)

    claimed: list[Any] = []
    for _ in range(10):
        got = await asyncio.gather(first.claim_digests("n1", 2), second.claim_digests("n2", 2))
        claimed += got[0] + got[1]
        if not got[0] and not got[1]:
            break

    digests = claimed
    assert len({d.id for d in digests}) == len(digests) == 6, "one digest per user"
    assert sorted(d.recipient.user_id for d in digests) == [f"u{n}" for n in range(6)]
    assert all([m.id for m in d.items] == ["m3", "m2", "m1"] for d in digests)


async def test_a_sent_digest_settles_what_it_carried_and_a_retry_waits(
    store: Store, clock: FakeClock
) -> None:
    await ada(store, schedule=DAILY_10)
    await publish(store, "m1", 0)
    await publish(store, "m2", 1)
    clock.set(T0 + timedelta(hours=1))
    [digest] = await store.claim_digests("n1", 10)

    await store.record_outcomes(
        [Outcome(digest.id, DeliveryStatus.QUEUED, 1, "smtp", error="timeout", retry_after=60)]
    )
    await store.release("n1")  # the node died: the retry is anyone's once it is due
    clock.advance(59)
    assert await store.claim_digests("n2", 10) == []
    clock.advance(1)
    [again] = await store.claim_digests("n2", 10)
    assert (again.id, again.attempts, [m.id for m in again.items]) == (digest.id, 1, ["m2", "m1"])
    statuses = [d.status for m in ("m1", "m2") for d in await store.list_deliveries(m)]
    assert statuses == [DeliveryStatus.QUEUED, DeliveryStatus.QUEUED]

    sent_at = clock.advance(5)
    await store.record_outcomes([Outcome(again.id, DeliveryStatus.SENT, 2, "smtp", "<d@mx>")])

    settled = [d for m in ("m1", "m2") for d in await store.list_deliveries(m)]
    assert [(d.status, d.provider_message_id, d.sent_at) for d in settled] == [
        (DeliveryStatus.SENT, "<d@mx>", sent_at)
    ] * 2
    assert await store.claim_digests("n2", 10) == []


async def test_urgent_messages_pierce_digests(store: Store) -> None:
    await ada(store, schedule=DAILY_10)
    urgent = await publish(store, "m1", 0, priority=Priority.URGENT)

    assert urgent == [delivery_id("m1", "u1", "email")]
    [entry] = await store.list_notifications("u1", unread_only=False, limit=10, before=None)
    assert entry.via is None


async def test_quiet_hours_hold_a_delivery_until_the_morning(
    store: Store, clock: FakeClock
) -> None:
    clock.set(T0.replace(hour=23))
    await ada(store, quiet="22:00-07:00")
    msg = message("m1", accepted_at=clock.now())
    await store.accept_message(msg, owner="n1")
    page = await store.fanout_page(msg, None, 10, ["email"], owner="n1")

    assert page.tasks == []
    [held] = await store.list_deliveries("m1")
    assert (held.status, held.mode) == (DeliveryStatus.QUEUED, "immediate")
    assert held.note is not None and "quiet hours" in held.note
    morning = (T0 + timedelta(days=1)).replace(hour=7)
    clock.set(morning - timedelta(seconds=1))
    assert await store.claim_deliveries("n1", 10) == []
    clock.set(morning)
    assert [t.id for t in await store.claim_deliveries("n1", 10)] == [held.id]


async def test_a_throttled_channel_folds_the_excess_into_a_digest(
    store: Store, clock: FakeClock
) -> None:
    await ada(store)
    await store.upsert_subscription(Subscription("u1", "sports", ("sms",)))
    throttles = {"sms": Throttle(2, timedelta(hours=1))}
    sent_now = []
    for minute in range(3):
        clock.set(T0 + timedelta(minutes=minute))
        msg = message(f"m{minute}", accepted_at=clock.now())
        await store.accept_message(msg, owner="n1")
        page = await store.fanout_page(msg, None, 10, ["sms"], owner="n1", throttles=throttles)
        sent_now.append(len(page.tasks))

    assert sent_now == [1, 1, 0]
    [folded] = await store.list_deliveries("m2")
    assert folded.mode == "digest"
    assert folded.note is not None and folded.note.startswith("throttled")
    clock.set(T0 + timedelta(hours=1, minutes=2))
    [digest] = await store.claim_digests("n1", 10)
    assert [m.id for m in digest.items] == ["m2"]


async def test_a_scheduled_message_is_fanned_out_from_its_time(
    store: Store, clock: FakeClock
) -> None:
    later = message("m1", deliver_at=T0 + timedelta(hours=2))
    await store.accept_message(later)

    assert await store.claim_fanouts("n1", 10) == []
    clock.set(T0 + timedelta(hours=2))
    assert [m.id for m, _cursor in await store.claim_fanouts("n1", 10)] == ["m1"]


async def test_rescheduling_moves_only_what_is_collected_for_the_category(
    store: Store, clock: FakeClock
) -> None:
    await ada(store, schedule=DAILY_10)
    await store.upsert_subscription(Subscription("u1", "finance", ("email",), schedule=DAILY_10))
    await publish(store, "m1", 0)
    await publish(store, "m2", 1, category_id="finance")

    moved = await store.reschedule_collected("u1", "sports", T0 + timedelta(hours=5))

    assert moved == 1
    clock.set(T0 + timedelta(hours=1))
    [digest] = await store.claim_digests("n1", 10)
    assert [m.id for m in digest.items] == ["m2"]
    clock.set(T0 + timedelta(hours=5))
    [later] = await store.claim_digests("n1", 10)
    assert [m.id for m in later.items] == ["m1"]


async def test_an_idempotency_key_names_one_message_for_24_hours(
    store: Store, backend: Backend
) -> None:
    first = message("m1", idempotency_key="k-1")
    await store.accept_message(first)
    within = message("m2", idempotency_key="k-1", accepted_at=T0 + timedelta(hours=23))
    after = message("m3", idempotency_key="k-1", accepted_at=T0 + timedelta(hours=25))

    assert await store.accept_message(within) == (first, False)
    assert await store.accept_message(after) == (after, True)
    assert await backend.query("SELECT id, idempotency_key FROM messages ORDER BY id") == [
        ("m1", "k-1#m1"),
        ("m3", "k-1"),
    ]
