"""Categories, users and subscriptions: the same answers from every backend."""

from __future__ import annotations

import pytest

from notefly.domain import Category, Subscription, User
from notefly.errors import Conflict, NotFound
from notefly.ports import Store
from tests.contract.audience import T0, FakeClock, fan_out_completely, message, seed_audience
from tests.contract.conftest import Backend

# catalogue


async def test_the_seeded_categories_exist_after_open(store: Store) -> None:
    categories = await store.list_categories()
    assert [c.id for c in categories] == ["finance", "movies", "sports"]
    assert (await store.get_category("movies")).name == "Movies"


async def test_an_unknown_category_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.get_category("weather")
    assert caught.value.code == "category_not_found"


async def test_an_added_category_is_listed_and_a_duplicate_conflicts(
    store: Store, backend: Backend
) -> None:
    await store.add_category(Category("weather", "Weather", "Storms and sunshine"))
    assert await store.get_category("weather") == Category(
        "weather", "Weather", "Storms and sunshine"
    )
    assert "weather" in [c.id for c in await store.list_categories()]

    with pytest.raises(Conflict) as caught:
        await store.add_category(Category("weather", "Other", "replaced?"))
    assert caught.value.code == "category_exists"
    assert await backend.query("SELECT name FROM categories WHERE id = 'weather'") == [("Weather",)]


async def test_categories_are_listed_by_name_in_byte_order(store: Store) -> None:
    # Upper case sorts before lower case, as in SQLite, whatever the database's locale.
    await store.add_category(Category("zoo", "animals"))
    await store.add_category(Category("art", "Zines"))
    assert [c.name for c in await store.list_categories()] == [
        "Finance",
        "Movies",
        "Sports",
        "Zines",
        "animals",
    ]


# users


async def test_a_user_round_trips_and_gets_the_clock_as_created_at(store: Store) -> None:
    await store.add_user(User("u1", "Ada", "ada@example.org", "+1555", "tok", "Europe/Rome"))
    assert await store.get_user("u1") == User(
        "u1", "Ada", "ada@example.org", "+1555", "tok", "Europe/Rome", created_at=T0
    )


async def test_an_unknown_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.get_user("nobody")
    assert caught.value.code == "user_not_found"


async def test_adding_a_user_twice_conflicts_and_keeps_the_first(store: Store) -> None:
    await store.add_user(User("u1", "Ada"))
    with pytest.raises(Conflict) as caught:
        await store.add_user(User("u1", "Ada again"))
    assert caught.value.code == "user_exists"
    assert (await store.get_user("u1")).name == "Ada"


async def test_an_updated_user_reads_back_changed(store: Store, clock: FakeClock) -> None:
    await store.add_user(User("u1", "Ada", email="ada@example.org"))
    clock.advance(60)
    await store.update_user(User("u1", "Ada L.", email=None, phone="+15550100"))
    assert await store.get_user("u1") == User(
        "u1", "Ada L.", None, "+15550100", None, "UTC", created_at=T0
    )


async def test_updating_an_unknown_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.update_user(User("nobody", "Nobody"))
    assert caught.value.code == "user_not_found"


async def test_users_are_listed_by_name(store: Store) -> None:
    for user_id, name in [("u1", "Cyd"), ("u2", "Ada"), ("u3", "Bob"), ("u4", "ada")]:
        await store.add_user(User(user_id, name))
    assert [u.name for u in await store.list_users()] == ["Ada", "Bob", "Cyd", "ada"]
    assert [u.name for u in await store.list_users(limit=2)] == ["Ada", "Bob"]


async def test_deleting_a_user_erases_their_subscriptions_inbox_and_deliveries(
    store: Store, backend: Backend
) -> None:
    await seed_audience(store)
    await store.accept_message(message())
    await fan_out_completely(store, message())

    await store.delete_user("u4")

    with pytest.raises(NotFound):
        await store.get_user("u4")
    for table in ("subscriptions", "inbox", "deliveries"):
        rows = await backend.query(f"SELECT user_id, count(*) FROM {table} GROUP BY user_id")
        counts = dict(rows)
        assert "u4" not in counts, table
        assert counts.get("u1") == 1, f"{table}: other users' rows must stay"
    with pytest.raises(NotFound) as caught:
        await store.delete_user("u4")
    assert caught.value.code == "user_not_found"


# subscriptions


async def test_upserting_a_subscription_replaces_its_channels(
    store: Store, clock: FakeClock
) -> None:
    await store.add_user(User("u1", "Ada", email="ada@example.org", phone="+1555"))
    await store.upsert_subscription(Subscription("u1", "sports", ("email",)))
    await store.upsert_subscription(Subscription("u1", "finance", ("email",)))
    later = clock.advance(30)
    stamped = await store.upsert_subscription(Subscription("u1", "sports", ("sms", "email")))

    assert stamped.updated_at == later
    assert await store.list_subscriptions("u1") == [
        Subscription("u1", "finance", ("email",), T0),
        Subscription("u1", "sports", ("sms", "email"), later),
    ]


async def test_a_deleted_subscription_is_gone_and_deleting_it_again_is_not_found(
    store: Store,
) -> None:
    await store.add_user(User("u1", "Ada", email="ada@example.org"))
    await store.upsert_subscription(Subscription("u1", "sports", ("email",)))
    await store.upsert_subscription(Subscription("u1", "movies", ("email",)))

    await store.delete_subscription("u1", "sports")

    assert [s.category_id for s in await store.list_subscriptions("u1")] == ["movies"]
    with pytest.raises(NotFound) as caught:
        await store.delete_subscription("u1", "sports")
    assert caught.value.code == "subscription_not_found"


async def test_replacing_subscriptions_sets_exactly_the_given_ones(
    store: Store, clock: FakeClock
) -> None:
    await store.add_user(User("u1", "Ada", email="ada@example.org", phone="+1555"))
    await store.upsert_subscription(Subscription("u1", "sports", ("email",)))
    await store.upsert_subscription(Subscription("u1", "movies", ("email",)))
    later = clock.advance(30)

    wanted = [Subscription("u1", "finance", ("sms",)), Subscription("u1", "sports", ("sms",))]
    await store.replace_subscriptions("u1", wanted)

    assert await store.list_subscriptions("u1") == [
        Subscription("u1", "finance", ("sms",), later),
        Subscription("u1", "sports", ("sms",), later),
    ]


async def test_replacing_subscriptions_is_all_or_nothing(store: Store, backend: Backend) -> None:
    await store.add_user(User("u1", "Ada", email="ada@example.org"))
    await store.upsert_subscription(Subscription("u1", "sports", ("email",)))
    before = await store.list_subscriptions("u1")

    # The service checks categories first; here the foreign key is the last line.
    with pytest.raises(backend.integrity_error):
        await store.replace_subscriptions(
            "u1",
            [Subscription("u1", "movies", ("email",)), Subscription("u1", "nope", ("email",))],
        )

    assert await store.list_subscriptions("u1") == before
