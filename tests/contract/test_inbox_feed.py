"""The inbox feed the live stream polls: entries by sequence number, written by any node."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from notefly.domain import Subscription, User, notification_id
from notefly.errors import NotFound
from tests.contract.audience import FakeClock, fan_out_completely, message, seed_audience
from tests.contract.conftest import Backend


async def test_an_empty_inbox_has_head_zero_and_no_news(store: Any) -> None:
    assert await store.inbox_head() == 0
    assert await store.inbox_news(0, 10) == (0, set(), False)


async def test_news_name_the_users_with_new_entries_in_order(store: Any) -> None:
    await seed_audience(store)
    for message_id in ("m1", "m2"):
        msg = message(message_id)
        await store.accept_message(msg)
        await fan_out_completely(store, msg, limit=10)

    head = await store.inbox_head()
    read_to, users, cut = await store.inbox_news(0, 100)
    assert (read_to, users, cut) == (head, {"u1", "u2", "u3", "u4", "u5"}, False)
    assert await store.inbox_news(head, 100) == (head, set(), False)

    first_to, first_users, first_cut = await store.inbox_news(0, 3)
    assert (len(first_users), first_cut) == (3, True)
    assert first_to < head

    entries = await store.inbox_after("u1", 0, 10)
    assert [n.id for _seq, n in entries] == [notification_id(m, "u1") for m in ("m1", "m2")]
    seqs = [seq for seq, _n in entries]
    assert seqs == sorted(seqs)
    assert await store.inbox_seq("u1", notification_id("m2", "u1")) == seqs[1]
    assert [n.id for _s, n in await store.inbox_after("u1", seqs[0], 10)] == [
        notification_id("m2", "u1")
    ]


async def test_the_seq_of_someone_elses_entry_is_not_found(store: Any) -> None:
    await seed_audience(store)
    msg = message()
    await store.accept_message(msg)
    await fan_out_completely(store, msg, limit=10)
    with pytest.raises(NotFound) as caught:
        await store.inbox_seq("u1", notification_id("m1", "u4"))
    assert caught.value.code == "notification_not_found"


async def test_a_poller_misses_no_entry_written_by_nodes_at_once(
    backend: Backend, clock: FakeClock
) -> None:
    # Sequence numbers must become visible in order: a poller that read up to N and
    # later found a new entry below N would never report it.
    setup = await backend.open(clock)
    users = [User(f"u{i:03}", f"User {i}") for i in range(40)]
    for user in users:
        await setup.add_user(user)
        await setup.upsert_subscription(Subscription(user.id, "sports", ("email",)))
    writers = [await backend.open(clock) for _ in range(3)]
    poller: Any = await backend.open(clock)

    async def write(node: int) -> None:
        for n in range(8):
            msg = message(f"m{node}-{n}")
            await writers[node].accept_message(msg)
            await fan_out_completely(writers[node], msg, limit=7)

    polls: list[tuple[int, int, set[str]]] = []  # (after, read up to, users reported)

    async def poll() -> None:
        after = polls[-1][1] if polls else 0
        read_to, users, _cut = await poller.inbox_news(after, 1_000_000)
        polls.append((after, read_to, users))

    writing = asyncio.gather(*(write(node) for node in range(3)))
    while not writing.done():
        await poll()
        await asyncio.sleep(0)
    await writing
    await poll()

    entries = await backend.query("SELECT seq, user_id FROM inbox")
    assert len(entries) == 3 * 8 * 40
    missed = [
        (seq, user_id)
        for seq, user_id in entries
        if not any(after < seq <= read_to and user_id in users for after, read_to, users in polls)
    ]
    assert missed == [], f"{len(missed)} entries appeared below what the poller had read"
    assert len(polls) > 3, "the poller ran while the nodes wrote"
