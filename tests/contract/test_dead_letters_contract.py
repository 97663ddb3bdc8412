"""Dead letters (``DeadLetterStore``): the filtered, paged listing of deliveries and the
bulk redrive of failed ones, on both backends."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from notefly.deadletters import DeliveryCursor, DeliveryFilter
from notefly.domain import DeliveryStatus, Outcome, Subscription, User, delivery_id
from notefly.ports import Store
from tests.contract.audience import T0, FakeClock, fan_out_completely, message, seed_audience
from tests.contract.conftest import Backend

FAILED = DeliveryFilter(status=DeliveryStatus.FAILED)


def at(seconds: int) -> Any:
    return T0 + timedelta(seconds=seconds)


async def dead_letters(store: Store, clock: FakeClock) -> dict[str, str]:
    """m1 (sports) and m2 (finance) fanned out at T0; four deliveries failed for good at
    T0+10s, +20s, +30s and +40s, one was sent at +50s, one is still queued. Returns the
    delivery ids by name."""
    await seed_audience(store)
    m1, m2 = message("m1"), message("m2", category_id="finance")
    for msg in (m1, m2):
        await store.accept_message(msg)
        await fan_out_completely(store, msg)
    ids = {
        "u1 email": delivery_id("m1", "u1", "email"),
        "u4 sms": delivery_id("m1", "u4", "sms"),
        "u0 email": delivery_id("m2", "u0", "email"),
        "u5 webhook": delivery_id("m1", "u5", "webhook"),
        "u4 email": delivery_id("m1", "u4", "email"),
        "u3 sms": delivery_id("m1", "u3", "sms"),
    }
    for seconds, name, status in [
        (10, "u1 email", DeliveryStatus.FAILED),
        (20, "u4 sms", DeliveryStatus.FAILED),
        (30, "u0 email", DeliveryStatus.FAILED),
        (40, "u5 webhook", DeliveryStatus.FAILED),
        (50, "u4 email", DeliveryStatus.SENT),
    ]:
        clock.set(at(seconds))
        await store.record_outcomes(
            [Outcome(ids[name], status, 5, "prov", error=f"error of {name}")]
        )
    clock.set(at(100))
    return ids


async def listed(store: Any, where: DeliveryFilter, limit: int = 100, after: Any = None) -> list:
    return [e.delivery.id for e in await store.find_deliveries(where, limit, after)]


async def test_failed_deliveries_are_listed_newest_change_first_with_their_category(
    store: Any, clock: FakeClock
) -> None:
    ids = await dead_letters(store, clock)

    found = await store.find_deliveries(FAILED, 100, None)

    assert [e.delivery.id for e in found] == [
        ids["u5 webhook"],
        ids["u0 email"],
        ids["u4 sms"],
        ids["u1 email"],
    ]
    assert [e.category_id for e in found] == ["sports", "finance", "sports", "sports"]
    newest = found[0].delivery
    assert (newest.user_id, newest.channel, newest.status, newest.attempts) == (
        "u5",
        "webhook",
        DeliveryStatus.FAILED,
        5,
    )
    assert (newest.message_id, newest.provider, newest.error) == (
        "m1",
        "prov",
        "error of u5 webhook",
    )
    assert (newest.created_at, newest.updated_at) == (T0, at(40))


async def test_the_listing_filters_by_channel_category_status_and_time(
    store: Any, clock: FakeClock
) -> None:
    ids = await dead_letters(store, clock)

    emails = DeliveryFilter(status=DeliveryStatus.FAILED, channel="email")
    assert await listed(store, emails) == [ids["u0 email"], ids["u1 email"]]
    sports = DeliveryFilter(status=DeliveryStatus.FAILED, category="sports")
    assert await listed(store, sports) == [ids["u5 webhook"], ids["u4 sms"], ids["u1 email"]]
    # since is inclusive, until exclusive, over the time of the last change
    window = DeliveryFilter(status=DeliveryStatus.FAILED, since=at(20), until=at(40))
    assert await listed(store, window) == [ids["u0 email"], ids["u4 sms"]]
    assert await listed(store, DeliveryFilter(since=at(45))) == [ids["u4 email"]]
    assert await listed(store, DeliveryFilter(status=DeliveryStatus.SENT)) == [ids["u4 email"]]
    queued = await listed(store, DeliveryFilter(status=DeliveryStatus.QUEUED))
    assert queued == [ids["u3 sms"]]
    skipped = await listed(store, DeliveryFilter(status=DeliveryStatus.SKIPPED))
    assert sorted(skipped) == sorted(
        [delivery_id("m1", "u2", "sms"), delivery_id("m1", "u3", "push")]
    )
    both = DeliveryFilter(status=DeliveryStatus.FAILED, channel="email", category="finance")
    assert await listed(store, both) == [ids["u0 email"]]
    assert await listed(store, DeliveryFilter(channel="fax")) == []
    everything = await listed(store, DeliveryFilter())
    assert len(everything) == 8  # m1: 5 deliveries and 2 skipped; m2: 1


async def test_pages_follow_the_cursor_and_stay_put_when_deliveries_arrive(
    store: Any, clock: FakeClock
) -> None:
    ids = await dead_letters(store, clock)
    everything = await listed(store, DeliveryFilter())

    # Many share one updated_at (T0): the id breaks the tie, across pages too.
    paged: list[str] = []
    after = None
    while True:
        page = await store.find_deliveries(DeliveryFilter(), 3, after)
        paged += [e.delivery.id for e in page]
        if len(page) < 3:
            break
        after = page[-1].cursor
    assert paged == everything

    first = await store.find_deliveries(FAILED, 2, None)
    assert [e.delivery.id for e in first] == [ids["u5 webhook"], ids["u0 email"]]
    # Meanwhile u3's sms fails and a new message is fanned out: both sort before the
    # cursor, so the next page is what it was.
    clock.set(at(200))
    await store.record_outcomes([Outcome(ids["u3 sms"], DeliveryStatus.FAILED, 5, "prov")])
    m3 = message("m3", accepted_at=at(200))
    await store.accept_message(m3)
    await fan_out_completely(store, m3)
    second = await listed(store, FAILED, 2, first[-1].cursor)
    assert second == [ids["u4 sms"], ids["u1 email"]]
    assert await listed(store, FAILED, 2, DeliveryCursor(at(10), ids["u1 email"])) == []
    assert (await listed(store, FAILED, 1))[0] == ids["u3 sms"]


async def test_a_bulk_redrive_queues_the_matching_failed_deliveries_again(
    store: Any, backend: Backend, clock: FakeClock
) -> None:
    ids = await dead_letters(store, clock)

    tasks, more = await store.requeue_failed_matching(DeliveryFilter(channel="email"), "n2", 100)

    assert more is False
    assert sorted(t.id for t in tasks) == sorted([ids["u0 email"], ids["u1 email"]])
    by_id = {t.id: t for t in tasks}
    u1 = by_id[ids["u1 email"]]
    assert (u1.attempts, u1.channel, u1.recipient.user_id, u1.recipient.address) == (
        0,
        "email",
        "u1",
        "ada@example.org",
    )
    assert u1.message == message("m1")
    assert by_id[ids["u0 email"]].message.category_id == "finance"
    rows = await backend.query(
        "SELECT id, status, attempts, error, owner, not_before, mode FROM deliveries"
        " WHERE id IN (?, ?) ORDER BY id",
        ids["u0 email"],
        ids["u1 email"],
    )
    assert [row[1:] for row in rows] == [("queued", 0, None, "n2", None, "immediate")] * 2
    # The others stay dead; a listing of failed deliveries no longer shows the redriven.
    assert await listed(store, FAILED) == [ids["u5 webhook"], ids["u4 sms"]]
    # Redriven now (T0+100s): the same updated_at, so the id orders them, newest first.
    redriven = await listed(store, DeliveryFilter(status=DeliveryStatus.QUEUED, since=at(100)))
    assert redriven == sorted([ids["u0 email"], ids["u1 email"]], reverse=True)


async def test_a_bulk_redrive_takes_at_most_its_limit_and_says_when_more_remain(
    store: Any, clock: FakeClock
) -> None:
    ids = await dead_letters(store, clock)

    window = DeliveryFilter(since=at(15), until=at(45))  # u4 sms, u0 email, u5 webhook
    first, more = await store.requeue_failed_matching(window, "n1", 2)
    assert ([t.id for t in first], more) == (
        sorted([ids["u5 webhook"], ids["u0 email"]]),
        True,
    )
    second, more = await store.requeue_failed_matching(window, "n1", 2)
    assert ([t.id for t in second], more) == ([ids["u4 sms"]], False)
    # Nothing failed matches any longer: a repeat queues nothing twice.
    assert await store.requeue_failed_matching(window, "n1", 2) == ([], False)
    assert await listed(store, FAILED) == [ids["u1 email"]]
    # The webhook is sent to the address recorded at fan-out (a registration's summary).
    webhook = next(t for t in first if t.channel == "webhook")
    assert webhook.recipient.address == "webhook:1"


async def test_concurrent_bulk_redrives_on_two_nodes_never_take_a_delivery_twice(
    store: Any, backend: Backend, clock: FakeClock
) -> None:
    ids = await dead_letters(store, clock)
    other = await backend.open(clock)
    failed = {ids["u1 email"], ids["u4 sms"], ids["u0 email"], ids["u5 webhook"]}

    results = await asyncio.gather(
        *(
            node.requeue_failed_matching(DeliveryFilter(), name, 100)
            for node, name in [(store, "n1"), (other, "n2"), (store, "n1"), (other, "n2")]
        )
    )

    taken = [t.id for tasks, _more in results for t in tasks]
    assert sorted(taken) == sorted(failed)  # each exactly once
    owners = dict(await backend.query("SELECT id, owner FROM deliveries WHERE status = 'queued'"))
    for (tasks, _more), name in zip(results, ["n1", "n2", "n1", "n2"], strict=True):
        assert all(owners[t.id] == name for t in tasks)
    assert await listed(store, FAILED) == []


async def test_a_redriven_delivery_that_failed_within_a_digest_is_sent_on_its_own(
    store: Any, backend: Backend, clock: FakeClock
) -> None:
    """Both redrives make it an immediate delivery: queued as a digest item it would
    wait for a digest, and after its node stops no node would claim it."""
    await store.add_user(User("u1", "Ada", email="ada@example.org"))
    await store.upsert_subscription(Subscription("u1", "sports", ("email",), schedule="hourly"))
    for n in (1, 2):
        msg = message(f"m{n}", accepted_at=at(n))
        await store.accept_message(msg, owner="n1")
        await store.fanout_page(msg, None, 10, ["email"], owner="n1")
    clock.set(T0 + timedelta(hours=2))
    [digest] = await store.claim_digests("n1", 10)
    await store.record_outcomes([Outcome(digest.id, DeliveryStatus.FAILED, 5, "smtp", error="x")])
    first, second = delivery_id("m1", "u1", "email"), delivery_id("m2", "u1", "email")
    assert await listed(store, FAILED) == sorted([first, second], reverse=True)

    await backend.ops(store).requeue_failed(first, "n1")
    tasks, _more = await store.requeue_failed_matching(DeliveryFilter(), "n1", 10)
    assert [t.id for t in tasks] == [second]
    await store.release("n1")  # the node stops before sending them

    claimed = await store.claim_deliveries("n2", 10)
    assert sorted(t.id for t in claimed) == sorted([first, second])
    assert all(not t.is_digest for t in claimed)
    modes = await backend.query("SELECT DISTINCT mode FROM deliveries WHERE user_id = ?", "u1")
    assert modes == [("immediate",)]
