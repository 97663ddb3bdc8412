"""Claiming digests in batches across a slot with many users: every due (user, channel)
gets one digest carrying all its due items, batches stay full until the slot is used up,
nodes claiming at once never get the same digest, and what is not due yet stays put."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import timedelta

import pytest

from notefly.domain import DeliveryTask, Subscription, User
from notefly.ports import Store
from tests.contract.audience import T0, FakeClock, message
from tests.contract.conftest import Backend

MESSAGES = ("m1", "m2", "m3")


async def digest_users(store: Store, count: int, *, schedule: str, first: int = 0) -> list[str]:
    """``count`` users collecting sports for a digest, by email and by SMS."""
    user_ids = [f"u{n:03d}" for n in range(first, first + count)]
    for user_id in user_ids:
        await store.add_user(User(user_id, user_id, f"{user_id}@example.org", "+15550100"))
        await store.upsert_subscription(
            Subscription(user_id, "sports", ("email", "sms"), schedule=schedule)
        )
    return user_ids


async def publish_all(store: Store) -> None:
    for minute, message_id in enumerate(MESSAGES):
        msg = message(message_id, accepted_at=T0 + timedelta(minutes=minute))
        await store.accept_message(msg)
        page = await store.fanout_page(msg, None, 1000, ["email", "sms"])
        assert page.tasks == []  # all collected, nothing goes out at once


def pairs(digests: list[DeliveryTask]) -> Counter[tuple[str, str]]:
    return Counter((d.recipient.user_id, d.channel) for d in digests)


async def test_batches_stay_full_until_the_slot_is_used_up(store: Store, clock: FakeClock) -> None:
    user_ids = await digest_users(store, 25, schedule="daily@10:00")
    await publish_all(store)
    clock.set(T0 + timedelta(hours=2))

    sizes, digests = [], []
    while batch := await store.claim_digests("n1", 12):
        sizes.append(len(batch))
        digests += batch

    assert sizes == [12, 12, 12, 12, 2]  # 50 digests: 25 users on 2 channels
    assert pairs(digests) == Counter({(u, c): 1 for u in user_ids for c in ("email", "sms")})
    assert all([m.id for m in d.items] == ["m3", "m2", "m1"] for d in digests)


@pytest.mark.parametrize("attempt", range(8))  # a race: more tries, more chances to lose it
async def test_nodes_claiming_at_once_never_share_a_digest(
    store: Store, backend: Backend, clock: FakeClock, attempt: int
) -> None:
    user_ids = await digest_users(store, 30, schedule="daily@10:00")
    await publish_all(store)
    clock.set(T0 + timedelta(hours=2))
    # Five nodes taking three at a time: before pairs were locked as a whole, a pair
    # split between two nodes (each locking part of its rows) now and then.
    nodes = [await backend.open(clock) for _ in range(5)]

    claimed: list[list[DeliveryTask]] = [[] for _ in nodes]
    while True:
        got = await asyncio.gather(
            *(node.claim_digests(f"n{n}", 3) for n, node in enumerate(nodes))
        )
        for mine, batch in zip(claimed, got, strict=True):
            mine += batch
        if not any(got):
            break

    everything = [d for mine in claimed for d in mine]
    assert len({d.id for d in everything}) == len(everything) == 60
    for one, other in itertools.combinations(claimed, 2):
        assert not {d.id for d in one} & {d.id for d in other}
    # Each (user, channel) got one digest with all its items: none split between nodes.
    assert pairs(everything) == Counter({(u, c): 1 for u in user_ids for c in ("email", "sms")})
    assert all(len(d.items) == len(MESSAGES) for d in everything)
    owners = await backend.query(
        "SELECT count(DISTINCT digest_id), count(*) FROM deliveries WHERE mode = 'digest'"
    )
    assert owners == [(60, 180)]


async def test_a_later_slot_is_left_alone_by_every_batch(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    due = await digest_users(store, 15, schedule="daily@10:00")
    later = await digest_users(store, 15, schedule="daily@12:00", first=15)
    await publish_all(store)
    clock.set(T0 + timedelta(hours=2))  # 11:00: the 10:00 slot is due, 12:00 is not

    digests = []
    while batch := await store.claim_digests("n1", 4):
        digests += batch

    assert {d.recipient.user_id for d in digests} == set(due)
    assert len(digests) == 30
    waiting = await backend.query(
        "SELECT DISTINCT user_id FROM deliveries WHERE mode = 'digest' AND digest_id IS NULL"
    )
    assert sorted(row[0] for row in waiting) == later

    clock.set(T0 + timedelta(hours=4))  # 13:00: now the later slot is due too
    rest = []
    while batch := await store.claim_digests("n1", 4):
        rest += batch
    assert {d.recipient.user_id for d in rest} == set(later)
    assert len(rest) == 30
