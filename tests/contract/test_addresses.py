"""Registered endpoints (the ``AddressBook`` port) and how the fan-out counts them."""

from __future__ import annotations

from typing import Any

import pytest

from notefly.addresses import Endpoint, EndpointKind
from notefly.domain import DeliveryStatus, Subscription, User, delivery_id
from notefly.errors import NotFound
from tests.contract.audience import T0, FakeClock, message, take_over

WEBPUSH, WEBHOOK = EndpointKind.WEBPUSH, EndpointKind.WEBHOOK


def push(endpoint_id: str, user_id: str, url: str = "https://push.example.org/b1", **keys: str):
    return Endpoint(endpoint_id, user_id, WEBPUSH, url, keys or {"p256dh": "k", "auth": "a"})


async def with_users(store: Any, *user_ids: str) -> None:
    for user_id in user_ids:
        await store.add_user(User(user_id, user_id.title()))


async def test_an_endpoint_round_trips_and_is_listed_by_kind(store: Any, clock: FakeClock) -> None:
    await with_users(store, "u1")
    hook = Endpoint(
        "e1", "u1", WEBHOOK, "https://h.example.org/x", {"secret": "s"}, "h.example.org"
    )
    added = await store.add_endpoint(hook)
    clock.advance(1)
    second = await store.add_endpoint(Endpoint("e2", "u1", WEBHOOK, "https://h.example.org/y"))
    await store.add_endpoint(push("e3", "u1"))

    assert added == Endpoint(
        "e1", "u1", WEBHOOK, "https://h.example.org/x", {"secret": "s"}, "h.example.org", T0
    )
    assert await store.get_endpoint("u1", WEBHOOK, "e1") == added
    assert [e.id for e in await store.list_endpoints("u1", WEBHOOK)] == ["e1", "e2"]
    assert second.keys == {}
    assert await store.endpoint_counts("u1") == {WEBHOOK: 2, WEBPUSH: 1}


async def test_the_same_target_twice_is_one_endpoint(store: Any) -> None:
    await with_users(store, "u1")
    first = await store.add_endpoint(Endpoint("e1", "u1", WEBHOOK, "https://h.example.org/x"))
    again = await store.add_endpoint(Endpoint("e9", "u1", WEBHOOK, "https://h.example.org/x"))
    assert again == first

    # A renewed push subscription keeps its id and gets its new keys.
    await store.add_endpoint(push("p1", "u1", auth="old", p256dh="k"))
    renewed = await store.add_endpoint(push("p9", "u1", auth="new", p256dh="k"))
    assert (renewed.id, renewed.keys) == ("p1", {"auth": "new", "p256dh": "k"})
    assert await store.endpoint_counts("u1") == {WEBHOOK: 1, WEBPUSH: 1}


async def test_a_browser_registered_by_another_user_moves_to_them(store: Any) -> None:
    await with_users(store, "u1", "u2")
    await store.add_endpoint(push("p1", "u1"))
    moved = await store.add_endpoint(push("p2", "u2"))

    assert await store.list_endpoints("u1", WEBPUSH) == []
    assert await store.list_endpoints("u2", WEBPUSH) == [moved]


async def test_unknown_and_deleted_endpoints_are_not_found(store: Any) -> None:
    await with_users(store, "u1", "u2")
    await store.add_endpoint(Endpoint("e1", "u1", WEBHOOK, "https://h.example.org/x"))

    unknown = [("u1", WEBHOOK, "nope"), ("u2", WEBHOOK, "e1"), ("u1", WEBPUSH, "e1")]
    for user_id, kind, endpoint_id in unknown:
        with pytest.raises(NotFound) as caught:
            await store.get_endpoint(user_id, kind, endpoint_id)
        assert caught.value.code == "endpoint_not_found"
        with pytest.raises(NotFound):
            await store.delete_endpoint(user_id, kind, endpoint_id)

    await store.delete_endpoint("u1", WEBHOOK, "e1")
    with pytest.raises(NotFound):
        await store.delete_endpoint("u1", WEBHOOK, "e1")
    await store.forget_endpoint("e1")  # gone already: nothing to do
    assert await store.endpoint_counts("u1") == {}


async def test_forgetting_an_endpoint_and_deleting_its_user_remove_it(store: Any) -> None:
    await with_users(store, "u1", "u2")
    await store.add_endpoint(push("p1", "u1"))
    await store.add_endpoint(push("p2", "u2", url="https://push.example.org/b2"))

    await store.forget_endpoint("p1")
    await store.delete_user("u2")

    assert await store.endpoint_counts("u1") == {}
    assert await store.endpoint_counts("u2") == {}


async def test_a_delivery_context_names_its_user_and_message(store: Any) -> None:
    await store.add_user(User("u1", "Ada", email="ada@example.org"))
    await store.upsert_subscription(Subscription("u1", "sports", ("email",)))
    msg = message()
    await store.accept_message(msg)
    await store.fanout_page(msg, None, 10, ["email"])
    did = delivery_id(msg.id, "u1", "email")

    context = await store.delivery_context(did)
    assert (context.delivery_id, context.user_id, context.message) == (did, "u1", msg)

    await store.delete_user("u1")
    for gone in (did, "d_unknown"):
        with pytest.raises(NotFound) as caught:
            await store.delivery_context(gone)
        assert caught.value.code == "delivery_not_found"


async def test_fanout_reaches_registrations_and_skips_users_without_any(store: Any) -> None:
    await with_users(store, "u1", "u2", "u3")
    await store.add_endpoint(push("p1", "u1"))
    await store.add_endpoint(push("p2", "u1", url="https://push.example.org/b2"))
    await store.add_endpoint(push("p3", "u3", url="https://push.example.org/b3"))
    for user_id in ("u1", "u2", "u3"):
        await store.upsert_subscription(Subscription(user_id, "sports", ("push",)))
    msg = message()
    await store.accept_message(msg)

    first = await store.fanout_page(msg, None, 2, ["push"], owner="n0")  # u1, u2
    second = await store.fanout_page(msg, first.cursor, 2, ["push"], owner="n0")  # u3

    tasks = first.tasks + second.tasks
    assert {t.recipient.user_id: t.recipient.address for t in tasks} == {
        "u1": "web-push:2",
        "u3": "web-push:1",
    }
    assert (first.skipped, second.skipped) == (1, 0)
    counts = await store.delivery_counts(msg.id)
    assert counts.by_status == {"queued": 2, "skipped": 1}
    statuses = {d.user_id: d.status for d in await store.list_deliveries(msg.id)}
    assert statuses["u2"] is DeliveryStatus.SKIPPED
    # Handed over to another node, a delivery keeps its address.
    assert await take_over(store, "n1", ["push"]) == []
    await store.release("n0")
    claimed = await take_over(store, "n1", ["push"])
    assert {t.recipient.user_id: t.recipient.address for t in claimed} == {
        "u1": "web-push:2",
        "u3": "web-push:1",
    }
