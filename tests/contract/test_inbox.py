"""The in-app inbox: newest first, paged by "before", read marks; on every backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from notefly.domain import Priority, notification_id
from notefly.errors import NotFound
from notefly.ports import Store
from tests.contract.audience import T0, FakeClock, fan_out_completely, message, seed_audience


async def inbox_with_three_messages(store: Store, clock: FakeClock) -> list[str]:
    """u1 and u4 both follow sports; returns u1's notification ids, oldest first.

    Message n is accepted at T0 + n minutes and fanned out a second later.
    """
    await seed_audience(store)
    for minute, message_id in enumerate(("m1", "m2", "m3"), start=1):
        clock.set(T0 + timedelta(minutes=minute))
        msg = message(message_id, accepted_at=clock.now())
        await store.accept_message(msg)
        clock.advance(1)
        await fan_out_completely(store, msg, limit=10)
    return [notification_id(m, "u1") for m in ("m1", "m2", "m3")]


async def test_the_inbox_lists_newest_first(store: Store, clock: FakeClock) -> None:
    n1, n2, n3 = await inbox_with_three_messages(store, clock)
    inbox = await store.list_notifications("u1", unread_only=False, limit=10, before=None)

    assert [n.id for n in inbox] == [n3, n2, n1]
    newest = inbox[0]
    assert (newest.user_id, newest.message_id, newest.category_id) == ("u1", "m3", "sports")
    assert (newest.title, newest.body, newest.priority) == (
        "title of m3",
        "body of m3",
        Priority.HIGH,
    )
    # The entry carries the publish time, not the fan-out time (stable if fan-out re-runs).
    assert (newest.created_at, newest.read_at) == (T0 + timedelta(minutes=3), None)


async def test_the_inbox_pages_with_limit_and_before(store: Store, clock: FakeClock) -> None:
    n1, n2, n3 = await inbox_with_three_messages(store, clock)

    async def page(before: str | None) -> list[str]:
        found = await store.list_notifications("u1", unread_only=False, limit=2, before=before)
        return [n.id for n in found]

    assert await page(None) == [n3, n2]
    assert await page(n2) == [n1]
    assert await page(n1) == []


@pytest.mark.parametrize("before", ["n_unknown", notification_id("m1", "u4")])
async def test_paging_before_a_notification_not_in_the_inbox_is_not_found(
    store: Store, clock: FakeClock, before: str
) -> None:
    await inbox_with_three_messages(store, clock)
    with pytest.raises(NotFound) as caught:
        await store.list_notifications("u1", unread_only=False, limit=10, before=before)
    assert caught.value.code == "notification_not_found"


async def test_the_inbox_of_an_unknown_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.list_notifications("nobody", unread_only=False, limit=10, before=None)
    assert caught.value.code == "user_not_found"
    with pytest.raises(NotFound) as caught:
        await store.mark_all_read("nobody")
    assert caught.value.code == "user_not_found"


async def test_mark_read_is_idempotent_and_filters_unread(store: Store, clock: FakeClock) -> None:
    n1, n2, n3 = await inbox_with_three_messages(store, clock)
    first_read = clock.advance(5)
    marked = await store.mark_read("u1", n2)
    clock.advance(5)
    again = await store.mark_read("u1", n2)

    assert marked.read_at == first_read
    assert again.read_at == first_read
    unread = await store.list_notifications("u1", unread_only=True, limit=10, before=None)
    assert [n.id for n in unread] == [n3, n1]
    unread_before = await store.list_notifications("u1", unread_only=True, limit=10, before=n3)
    assert [n.id for n in unread_before] == [n1]


async def test_mark_read_of_another_users_notification_is_not_found(
    store: Store, clock: FakeClock
) -> None:
    await inbox_with_three_messages(store, clock)
    theirs = notification_id("m1", "u4")
    with pytest.raises(NotFound) as caught:
        await store.mark_read("u1", theirs)
    assert caught.value.code == "notification_not_found"

    inbox = await store.list_notifications("u4", unread_only=True, limit=10, before=None)
    assert theirs in [n.id for n in inbox], "the owner's copy must stay unread"


async def test_mark_all_read_returns_how_many_it_marked(store: Store, clock: FakeClock) -> None:
    n1, _n2, _n3 = await inbox_with_three_messages(store, clock)
    await store.mark_read("u1", n1)

    assert await store.mark_all_read("u1") == 2
    assert await store.mark_all_read("u1") == 0
    assert await store.list_notifications("u1", unread_only=True, limit=10, before=None) == []
    assert len(await store.list_notifications("u4", unread_only=True, limit=10, before=None)) == 3
