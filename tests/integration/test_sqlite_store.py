"""The SQLite store on a real file: what a caller of the ``Store`` port would notice.

Rows are checked through a separate ``sqlite3`` connection where it matters that they
are really on disk (another process would see exactly that), not only in the store's
own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notefly.domain import (
    Category,
    DeliveryStatus,
    DeliveryTask,
    Message,
    Outcome,
    Priority,
    Subscription,
    User,
    delivery_id,
    notification_id,
)
from notefly.errors import Conflict, NotFound
from notefly.store.sqlite import SqliteStore

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when the test moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        self._now = now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "n.db"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(db_path, clock)
    try:
        yield store
    finally:
        await store.close()


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read through a connection of its own, as another process would."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def message(message_id: str = "m1", **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "id": message_id,
        "category_id": "sports",
        "body": f"body of {message_id}",
        "accepted_at": T0,
        "title": f"title of {message_id}",
        "data": {"score": "2-1", "tags": ["derby"]},
        "priority": Priority.HIGH,
    }
    fields.update(overrides)
    return Message(**fields)


# The "sports" audience used by the fan-out tests, in user id order.
ENABLED = ("email", "sms", "webhook")
AUDIENCE = [
    (User("u1", "Ada", email="ada@example.org"), ("email",)),
    (User("u2", "Bob"), ("sms",)),  # no phone: skipped
    # Cyd has a push token: push is skipped only because this broker has no push channel.
    (
        User("u3", "Cyd", phone="+15550103", push_token="tok3", timezone="Europe/Paris"),
        ("sms", "push"),
    ),
    (User("u4", "Dee", email="dee@example.org", phone="+15550104"), ("email", "sms")),
    (User("u5", "Eve"), ("webhook",)),  # a channel that needs no address
]
EXPECTED_QUEUED = {
    ("u1", "email"): "ada@example.org",
    ("u3", "sms"): "+15550103",
    ("u4", "email"): "dee@example.org",
    ("u4", "sms"): "+15550104",
    ("u5", "webhook"): None,
}
EXPECTED_SKIPPED = {("u2", "sms"), ("u3", "push")}


async def seed_audience(store: SqliteStore) -> None:
    # u0 sorts first but follows another category: it must never be part of a page.
    await store.add_user(User("u0", "Zed", email="zed@example.org"))
    await store.upsert_subscription(Subscription("u0", "finance", ("email",)))
    for user, channels in AUDIENCE:
        await store.add_user(user)
        await store.upsert_subscription(Subscription(user.id, "sports", channels))


async def fan_out_completely(
    store: SqliteStore, msg: Message, after: str | None = None, limit: int = 2
) -> list[DeliveryTask]:
    tasks: list[DeliveryTask] = []
    while True:
        page = await store.fanout_page(msg, after, limit, ENABLED)
        tasks += page.tasks
        after = page.cursor
        if page.done:
            return tasks


# catalogue


async def test_the_seeded_categories_exist_after_open(store: SqliteStore) -> None:
    categories = await store.list_categories()
    assert [c.id for c in categories] == ["finance", "movies", "sports"]
    assert (await store.get_category("movies")).name == "Movies"


async def test_an_unknown_category_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound) as caught:
        await store.get_category("weather")
    assert caught.value.code == "category_not_found"


async def test_an_added_category_is_listed_and_a_duplicate_conflicts(
    store: SqliteStore, db_path: Path
) -> None:
    await store.add_category(Category("weather", "Weather", "Storms and sunshine"))
    assert await store.get_category("weather") == Category(
        "weather", "Weather", "Storms and sunshine"
    )
    assert "weather" in [c.id for c in await store.list_categories()]

    with pytest.raises(Conflict) as caught:
        await store.add_category(Category("weather", "Other", "replaced?"))
    assert caught.value.code == "category_exists"
    assert query(db_path, "SELECT name FROM categories WHERE id = 'weather'") == [("Weather",)]


# users


async def test_a_user_round_trips_and_gets_the_clock_as_created_at(
    store: SqliteStore, clock: FakeClock
) -> None:
    await store.add_user(User("u1", "Ada", "ada@example.org", "+1555", "tok", "Europe/Rome"))
    assert await store.get_user("u1") == User(
        "u1", "Ada", "ada@example.org", "+1555", "tok", "Europe/Rome", created_at=T0
    )


async def test_an_unknown_user_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound) as caught:
        await store.get_user("nobody")
    assert caught.value.code == "user_not_found"


async def test_adding_a_user_twice_conflicts_and_keeps_the_first(store: SqliteStore) -> None:
    await store.add_user(User("u1", "Ada"))
    with pytest.raises(Conflict) as caught:
        await store.add_user(User("u1", "Ada again"))
    assert caught.value.code == "user_exists"
    assert (await store.get_user("u1")).name == "Ada"


async def test_an_updated_user_reads_back_changed(store: SqliteStore, clock: FakeClock) -> None:
    await store.add_user(User("u1", "Ada", email="ada@example.org"))
    clock.advance(60)
    await store.update_user(User("u1", "Ada L.", email=None, phone="+15550100"))
    assert await store.get_user("u1") == User(
        "u1", "Ada L.", None, "+15550100", None, "UTC", created_at=T0
    )


async def test_updating_an_unknown_user_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound) as caught:
        await store.update_user(User("nobody", "Nobody"))
    assert caught.value.code == "user_not_found"


async def test_users_are_listed_by_name(store: SqliteStore) -> None:
    for user_id, name in [("u1", "Cyd"), ("u2", "Ada"), ("u3", "Bob")]:
        await store.add_user(User(user_id, name))
    assert [u.name for u in await store.list_users()] == ["Ada", "Bob", "Cyd"]
    assert [u.name for u in await store.list_users(limit=2)] == ["Ada", "Bob"]


async def test_deleting_a_user_erases_their_subscriptions_inbox_and_deliveries(
    store: SqliteStore, db_path: Path
) -> None:
    await seed_audience(store)
    await store.accept_message(message())
    await fan_out_completely(store, message())

    await store.delete_user("u4")

    with pytest.raises(NotFound):
        await store.get_user("u4")
    for table in ("subscriptions", "inbox", "deliveries"):
        counts = dict(query(db_path, f"SELECT user_id, count(*) FROM {table} GROUP BY user_id"))
        assert "u4" not in counts, table
        assert counts.get("u1") == 1, f"{table}: other users' rows must stay"
    with pytest.raises(NotFound) as caught:
        await store.delete_user("u4")
    assert caught.value.code == "user_not_found"


# subscriptions


async def test_upserting_a_subscription_replaces_its_channels(
    store: SqliteStore, clock: FakeClock
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
    store: SqliteStore,
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
    store: SqliteStore, clock: FakeClock
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


async def test_replacing_subscriptions_is_all_or_nothing(store: SqliteStore) -> None:
    await store.add_user(User("u1", "Ada", email="ada@example.org"))
    await store.upsert_subscription(Subscription("u1", "sports", ("email",)))
    before = await store.list_subscriptions("u1")

    # The service checks categories first; here the foreign key is the last line.
    with pytest.raises(sqlite3.IntegrityError):
        await store.replace_subscriptions(
            "u1",
            [Subscription("u1", "movies", ("email",)), Subscription("u1", "nope", ("email",))],
        )

    assert await store.list_subscriptions("u1") == before


# accepting messages


async def test_an_accepted_message_is_created_and_reads_back_whole(store: SqliteStore) -> None:
    original = message(idempotency_key="k-1")
    assert await store.accept_message(original) == (original, True)
    assert await store.get_message("m1") == original


async def test_a_repeated_idempotency_key_returns_the_original(
    store: SqliteStore, db_path: Path
) -> None:
    original = message("m1", idempotency_key="k-1")
    await store.accept_message(original)

    repeat = message("m2", body="a retry with another body", idempotency_key="k-1")
    assert await store.accept_message(repeat) == (original, False)

    assert query(db_path, "SELECT id FROM messages WHERE idempotency_key = 'k-1'") == [("m1",)]
    with pytest.raises(NotFound) as caught:
        await store.get_message("m2")
    assert caught.value.code == "message_not_found"


async def test_messages_without_a_key_never_collide(store: SqliteStore, db_path: Path) -> None:
    first, second = message("m1"), message("m2")
    assert await store.accept_message(first) == (first, True)
    assert await store.accept_message(second) == (second, True)
    assert query(db_path, "SELECT id FROM messages ORDER BY id") == [("m1",), ("m2",)]


async def test_an_accepted_message_is_committed_before_accept_returns(
    store: SqliteStore, db_path: Path
) -> None:
    await store.accept_message(message("m1", body="durable"))
    # Read at once: a writer that answered before COMMIT would not show the row yet.
    assert query(db_path, "SELECT id, body FROM messages") == [("m1", "durable")]


async def test_the_database_is_in_wal_mode(store: SqliteStore, db_path: Path) -> None:
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]


# group commit


async def test_concurrent_publishes_share_few_transactions(
    store: SqliteStore, db_path: Path
) -> None:
    batches_before = store.writer.batches
    results = await asyncio.gather(*(store.accept_message(message(f"m{i:03}")) for i in range(200)))
    batches = store.writer.batches - batches_before

    assert all(created for _message, created in results)
    assert query(db_path, "SELECT count(*) FROM messages") == [(200,)]
    assert batches < 20, f"200 concurrent publishes took {batches} transactions"


async def test_a_failing_operation_fails_alone_in_its_batch(
    store: SqliteStore, db_path: Path
) -> None:
    batches_before = store.writer.batches
    results = await asyncio.gather(
        store.accept_message(message("m1")),
        store.add_category(Category("finance", "Finance again")),
        store.add_category(Category("weather", "Weather")),
        store.accept_message(message("m2")),
        return_exceptions=True,
    )

    assert store.writer.batches - batches_before == 1, "the four operations shared a batch"
    assert isinstance(results[1], Conflict)
    assert results[0] == (message("m1"), True)
    assert results[2] == Category("weather", "Weather")
    assert results[3] == (message("m2"), True)
    assert query(db_path, "SELECT id FROM messages ORDER BY id") == [("m1",), ("m2",)]
    assert query(db_path, "SELECT name FROM categories WHERE id IN ('finance', 'weather')") == [
        ("Finance",),
        ("Weather",),
    ]


# fan-out


async def test_fanout_pages_through_the_audience(store: SqliteStore, db_path: Path) -> None:
    await seed_audience(store)
    msg = message()
    await store.accept_message(msg)

    pages = []
    cursor = None
    for _ in range(3):
        page = await store.fanout_page(msg, cursor, 2, ENABLED)
        pages.append(page)
        cursor = page.cursor
        if not page.done:
            assert not (await store.delivery_counts(msg.id)).fanout_done

    assert [(p.cursor, p.done, p.skipped) for p in pages] == [
        ("u2", False, 1),
        ("u4", False, 1),
        ("u5", True, 0),
    ]
    assert [[(t.recipient.user_id, t.channel) for t in p.tasks] for p in pages] == [
        [("u1", "email")],
        [("u3", "sms"), ("u4", "email"), ("u4", "sms")],
        [("u5", "webhook")],
    ]
    tasks = [task for page in pages for task in page.tasks]
    assert {(t.recipient.user_id, t.channel): t.recipient.address for t in tasks} == (
        EXPECTED_QUEUED
    )
    for task in tasks:
        assert task.id == delivery_id(msg.id, task.recipient.user_id, task.channel)
        assert task.message == msg
    cyd = next(t.recipient for t in tasks if t.recipient.user_id == "u3")
    assert (cyd.name, cyd.timezone) == ("Cyd", "Europe/Paris")
    assert (await store.delivery_counts(msg.id)).fanout_done

    inbox = query(db_path, "SELECT user_id, message_id, id FROM inbox ORDER BY user_id")
    assert inbox == [(f"u{i}", "m1", notification_id("m1", f"u{i}")) for i in range(1, 6)]


async def test_fanout_skips_with_a_reason(store: SqliteStore) -> None:
    await seed_audience(store)
    msg = message()
    await store.accept_message(msg)
    await fan_out_completely(store, msg)

    deliveries = {(d.user_id, d.channel): d for d in await store.list_deliveries(msg.id)}
    assert set(deliveries) == set(EXPECTED_QUEUED) | EXPECTED_SKIPPED
    no_phone, not_enabled = deliveries["u2", "sms"], deliveries["u3", "push"]
    assert no_phone.status is DeliveryStatus.SKIPPED
    assert no_phone.error is not None
    assert "phone" in no_phone.error
    assert not_enabled.status is DeliveryStatus.SKIPPED
    assert not_enabled.error is not None
    assert "'push'" in not_enabled.error
    assert "not enabled" in not_enabled.error
    for key in EXPECTED_QUEUED:
        assert deliveries[key].status is DeliveryStatus.QUEUED
        assert deliveries[key].error is None
    assert (await store.delivery_counts(msg.id)).by_status == {"queued": 5, "skipped": 2}


async def test_a_fanout_resumed_after_a_crash_reaches_everyone_once(
    db_path: Path, clock: FakeClock
) -> None:
    msg = message()
    store = await SqliteStore.open(db_path, clock)
    try:
        await seed_audience(store)
        await store.accept_message(msg)
        first = await store.fanout_page(msg, None, 2, ENABLED)
    finally:
        await store.close()

    store = await SqliteStore.open(db_path, clock)
    try:
        unfinished = await store.unfinished_fanouts()
        assert unfinished == [(msg, "u2")]
        resumed_msg, cursor = unfinished[0]
        rest = await fan_out_completely(store, resumed_msg, cursor)
        deliveries = await store.list_deliveries(msg.id)
        assert await store.unfinished_fanouts() == []
    finally:
        await store.close()

    task_ids = [t.id for t in first.tasks + rest]
    assert len(task_ids) == len(set(task_ids)), "a delivery was handed out twice"
    assert {(t.recipient.user_id, t.channel) for t in first.tasks + rest} == set(EXPECTED_QUEUED)
    assert sorted((d.user_id, d.channel) for d in deliveries) == sorted(
        set(EXPECTED_QUEUED) | EXPECTED_SKIPPED
    )
    assert query(db_path, "SELECT count(*), count(DISTINCT user_id) FROM inbox") == [(5, 5)]


# outcomes and queued work


async def test_recorded_outcomes_show_in_deliveries_and_counts(
    store: SqliteStore, clock: FakeClock
) -> None:
    await seed_audience(store)
    msg = message()
    await store.accept_message(msg)
    await fan_out_completely(store, msg)
    did = {key: delivery_id(msg.id, *key) for key in EXPECTED_QUEUED}
    sent_at = T0 + timedelta(seconds=5)
    now = clock.advance(10)

    await store.record_outcomes(
        [
            Outcome(
                did["u1", "email"],
                DeliveryStatus.SENT,
                1,
                "smtp",
                "<1@mx>",
                subject="Hi",
                text="body",
                at=sent_at,
            ),
            Outcome(
                did["u4", "email"],
                DeliveryStatus.FAILED,
                3,
                "smtp",
                recipient="dee@new.example.org",
                error="550 mailbox unavailable",
            ),
            Outcome(did["u5", "webhook"], DeliveryStatus.SKIPPED, 0, error="no endpoint"),
            Outcome(did["u3", "sms"], DeliveryStatus.QUEUED, 1, "twilio", error="timeout"),
        ]
    )

    rows = {(d.user_id, d.channel): d for d in await store.list_deliveries(msg.id)}
    sent, failed = rows["u1", "email"], rows["u4", "email"]
    skipped, retry = rows["u5", "webhook"], rows["u3", "sms"]
    assert (sent.status, sent.attempts, sent.provider, sent.provider_message_id) == (
        DeliveryStatus.SENT,
        1,
        "smtp",
        "<1@mx>",
    )
    assert (sent.subject, sent.text, sent.error, sent.recipient) == (
        "Hi",
        "body",
        None,
        "ada@example.org",
    )
    assert (sent.sent_at, sent.updated_at, sent.created_at) == (sent_at, sent_at, T0)
    assert (failed.status, failed.attempts, failed.error, failed.recipient) == (
        DeliveryStatus.FAILED,
        3,
        "550 mailbox unavailable",
        "dee@new.example.org",
    )
    assert (skipped.status, skipped.error) == (DeliveryStatus.SKIPPED, "no endpoint")
    assert (retry.status, retry.attempts, retry.provider, retry.error) == (
        DeliveryStatus.QUEUED,
        1,
        "twilio",
        "timeout",
    )
    for unsent in (failed, skipped, retry):
        assert unsent.sent_at is None
        assert unsent.updated_at == now
    assert rows["u4", "sms"].status is DeliveryStatus.QUEUED
    assert rows["u4", "sms"].attempts == 0

    counts = await store.delivery_counts(msg.id)
    assert counts.fanout_done
    assert counts.by_status == {"sent": 1, "failed": 1, "skipped": 3, "queued": 2}


async def test_queued_tasks_page_through_queued_deliveries_only(store: SqliteStore) -> None:
    await seed_audience(store)
    first, second = message("m1", idempotency_key="k-1"), message("m2", category_id="finance")
    for msg in (first, second):
        await store.accept_message(msg)
        await fan_out_completely(store, msg)
    sent = delivery_id("m1", "u1", "email")
    retried = delivery_id("m1", "u3", "sms")
    await store.record_outcomes(
        [
            Outcome(sent, DeliveryStatus.SENT, 1, "smtp"),
            Outcome(retried, DeliveryStatus.QUEUED, 2, "twilio", error="timeout"),
        ]
    )
    # The address comes from the user as they are now, not as they were at fan-out.
    await store.update_user(User("u4", "Dee", email="dee@new.example.org", phone="+15550104"))

    pages: list[list[DeliveryTask]] = []
    after = None
    while page := await store.queued_tasks(after, 2):
        pages.append(page)
        after = page[-1].id

    tasks = [task for page in pages for task in page]
    expected = {("m1", *key): address for key, address in EXPECTED_QUEUED.items()}
    del expected["m1", "u1", "email"]
    expected["m1", "u4", "email"] = "dee@new.example.org"
    expected["m2", "u0", "email"] = "zed@example.org"

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [t.id for t in tasks] == sorted(t.id for t in tasks)
    assert {(t.message.id, t.recipient.user_id, t.channel): t.recipient.address for t in tasks} == (
        expected
    )
    assert {t.message.id: t.message for t in tasks} == {"m1": first, "m2": second}
    assert {t.id: t.attempts for t in tasks if t.attempts} == {retried: 2}
    zed = next(t.recipient for t in tasks if t.recipient.user_id == "u0")
    assert (zed.name, zed.timezone) == ("Zed", "UTC")


# inbox


async def inbox_with_three_messages(store: SqliteStore, clock: FakeClock) -> list[str]:
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


async def test_the_inbox_lists_newest_first(store: SqliteStore, clock: FakeClock) -> None:
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


async def test_the_inbox_pages_with_limit_and_before(store: SqliteStore, clock: FakeClock) -> None:
    n1, n2, n3 = await inbox_with_three_messages(store, clock)

    async def page(before: str | None) -> list[str]:
        found = await store.list_notifications("u1", unread_only=False, limit=2, before=before)
        return [n.id for n in found]

    assert await page(None) == [n3, n2]
    assert await page(n2) == [n1]
    assert await page(n1) == []


@pytest.mark.parametrize("before", ["n_unknown", notification_id("m1", "u4")])
async def test_paging_before_a_notification_not_in_the_inbox_is_not_found(
    store: SqliteStore, clock: FakeClock, before: str
) -> None:
    await inbox_with_three_messages(store, clock)
    with pytest.raises(NotFound) as caught:
        await store.list_notifications("u1", unread_only=False, limit=10, before=before)
    assert caught.value.code == "notification_not_found"


async def test_the_inbox_of_an_unknown_user_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound) as caught:
        await store.list_notifications("nobody", unread_only=False, limit=10, before=None)
    assert caught.value.code == "user_not_found"


async def test_mark_read_is_idempotent_and_filters_unread(
    store: SqliteStore, clock: FakeClock
) -> None:
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
    store: SqliteStore, clock: FakeClock
) -> None:
    await inbox_with_three_messages(store, clock)
    theirs = notification_id("m1", "u4")
    with pytest.raises(NotFound) as caught:
        await store.mark_read("u1", theirs)
    assert caught.value.code == "notification_not_found"

    inbox = await store.list_notifications("u4", unread_only=True, limit=10, before=None)
    assert theirs in [n.id for n in inbox], "the owner's copy must stay unread"


async def test_mark_all_read_returns_how_many_it_marked(
    store: SqliteStore, clock: FakeClock
) -> None:
    n1, _n2, _n3 = await inbox_with_three_messages(store, clock)
    await store.mark_read("u1", n1)

    assert await store.mark_all_read("u1") == 2
    assert await store.mark_all_read("u1") == 0
    assert await store.list_notifications("u1", unread_only=True, limit=10, before=None) == []
    assert len(await store.list_notifications("u4", unread_only=True, limit=10, before=None)) == 3
