"""A message to a category nobody follows: its fan-out finds nobody and is over, and
the next message reaches who subscribed in between."""

from __future__ import annotations

from notefly.domain import Subscription, User
from notefly.ports import Store
from tests.contract.audience import ENABLED, fan_out_completely, message


async def test_a_message_nobody_follows_is_fanned_out_to_nobody(store: Store) -> None:
    msg = message("m1", category_id="movies")
    await store.accept_message(msg, owner="node-a")

    page = await store.fanout_page(msg, None, 100, ENABLED, owner="node-a")

    assert (page.tasks, page.skipped, page.done) == ([], 0, True)
    counts = await store.delivery_counts("m1")
    assert (counts.fanout_done, counts.by_status) == (True, {})
    assert await store.unfinished_fanouts() == []


async def test_the_next_message_reaches_who_subscribed_in_between(store: Store) -> None:
    first, second = message("m1", category_id="movies"), message("m2", category_id="movies")
    await store.accept_message(first, owner="node-a")
    assert await fan_out_completely(store, first, owner="node-a") == []

    await store.add_user(User("u1", "Ann", email="ann@example.org"))
    await store.upsert_subscription(Subscription("u1", "movies", ("email",)))
    await store.accept_message(second, owner="node-a")
    tasks = await fan_out_completely(store, second, owner="node-a")

    assert [(t.message.id, t.recipient.user_id, t.channel) for t in tasks] == [
        ("m2", "u1", "email")
    ]
    assert (await store.delivery_counts("m1")).by_status == {}
