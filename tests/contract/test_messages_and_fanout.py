"""Accepting messages, fan-out, outcomes and queued work: the same on every backend."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from notefly.domain import (
    DeliveryStatus,
    DeliveryTask,
    Outcome,
    Subscription,
    User,
    delivery_id,
    notification_id,
)
from notefly.errors import NotFound
from notefly.ports import Store
from tests.contract.audience import (
    ENABLED,
    EXPECTED_QUEUED,
    EXPECTED_SKIPPED,
    T0,
    FakeClock,
    fan_out_completely,
    message,
    seed_audience,
)
from tests.contract.conftest import Backend

# accepting messages


async def test_an_accepted_message_is_created_and_reads_back_whole(store: Store) -> None:
    original = message(idempotency_key="k-1")
    assert await store.accept_message(original) == (original, True)
    assert await store.get_message("m1") == original


async def test_a_repeated_idempotency_key_returns_the_original(
    store: Store, backend: Backend
) -> None:
    original = message("m1", idempotency_key="k-1")
    await store.accept_message(original)

    repeat = message("m2", body="a retry with another body", idempotency_key="k-1")
    assert await store.accept_message(repeat) == (original, False)

    assert await backend.query("SELECT id FROM messages WHERE idempotency_key = 'k-1'") == [("m1",)]
    with pytest.raises(NotFound) as caught:
        await store.get_message("m2")
    assert caught.value.code == "message_not_found"


async def test_a_key_repeated_by_two_nodes_at_once_keeps_one_message(backend: Backend) -> None:
    clock = FakeClock()
    first, second = await backend.open(clock), await backend.open(clock)
    results = await asyncio.gather(
        first.accept_message(message("m1", idempotency_key="k-1")),
        second.accept_message(message("m2", idempotency_key="k-1")),
    )

    assert sorted(created for _msg, created in results) == [False, True]
    assert results[0][0] == results[1][0]
    assert await backend.query("SELECT count(*) FROM messages") == [(1,)]


async def test_messages_without_a_key_never_collide(store: Store, backend: Backend) -> None:
    first, second = message("m1"), message("m2")
    assert await store.accept_message(first) == (first, True)
    assert await store.accept_message(second) == (second, True)
    assert await backend.query("SELECT id FROM messages ORDER BY id") == [("m1",), ("m2",)]


async def test_an_accepted_message_is_committed_before_accept_returns(
    store: Store, backend: Backend
) -> None:
    await store.accept_message(message("m1", body="durable"))
    # Read at once: a store that answered before COMMIT would not show the row yet.
    assert await backend.query("SELECT id, body FROM messages") == [("m1", "durable")]


async def test_many_concurrent_publishes_are_all_committed(store: Store, backend: Backend) -> None:
    results = await asyncio.gather(*(store.accept_message(message(f"m{i:03}")) for i in range(200)))

    assert all(created for _message, created in results)
    assert await backend.query("SELECT count(*) FROM messages") == [(200,)]


async def test_the_counts_of_an_unknown_message_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.delivery_counts("nope")
    assert caught.value.code == "message_not_found"
    with pytest.raises(NotFound):
        await store.list_deliveries("nope")


async def test_a_message_before_its_fanout_has_no_deliveries(store: Store) -> None:
    await store.accept_message(message())
    counts = await store.delivery_counts("m1")
    assert (counts.fanout_done, counts.by_status) == (False, {})
    assert await store.list_deliveries("m1") == []


# fan-out


async def test_fanout_pages_through_the_audience(store: Store, backend: Backend) -> None:
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

    inbox = await backend.query("SELECT user_id, message_id, id FROM inbox ORDER BY user_id")
    assert inbox == [(f"u{i}", "m1", notification_id("m1", f"u{i}")) for i in range(1, 6)]


async def test_fanout_orders_the_audience_by_user_id_bytes(store: Store) -> None:
    # Ids order by their bytes on every backend ("B" < "_" < "a"), so a cursor taken
    # on one node means the same on another.
    for user_id in ("u_a", "uB", "ua", "u-1"):
        await store.add_user(User(user_id, user_id, email=f"{user_id}@example.org"))
        await store.upsert_subscription(Subscription(user_id, "sports", ("email",)))
    msg = message()
    await store.accept_message(msg)
    tasks = await fan_out_completely(store, msg, limit=1)
    assert [t.recipient.user_id for t in tasks] == sorted(["u_a", "uB", "ua", "u-1"])


async def test_fanout_skips_with_a_reason(store: Store) -> None:
    await seed_audience(store)
    msg = message()
    await store.accept_message(msg)
    await fan_out_completely(store, msg)

    deliveries = {(d.user_id, d.channel): d for d in await store.list_deliveries(msg.id)}
    assert set(deliveries) == set(EXPECTED_QUEUED) | EXPECTED_SKIPPED
    assert [(d.user_id, d.channel) for d in await store.list_deliveries(msg.id)] == sorted(
        deliveries
    )
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
        assert deliveries[key].recipient == EXPECTED_QUEUED[key]
        assert deliveries[key].created_at == deliveries[key].updated_at == T0
    assert (await store.delivery_counts(msg.id)).by_status == {"queued": 5, "skipped": 2}


async def test_a_fanout_run_again_inserts_nothing_twice(store: Store, backend: Backend) -> None:
    await seed_audience(store)
    msg = message()
    await store.accept_message(msg)
    first = await fan_out_completely(store, msg)
    again = await fan_out_completely(store, msg)

    assert [t.id for t in again] == [t.id for t in first]
    assert await backend.query("SELECT count(*) FROM deliveries") == [(7,)]
    assert await backend.query("SELECT count(*) FROM inbox") == [(5,)]


async def test_a_fanout_resumed_after_a_crash_reaches_everyone_once(
    backend: Backend, clock: FakeClock
) -> None:
    msg = message()
    store = await backend.open(clock)
    await seed_audience(store)
    await store.accept_message(msg)
    first = await store.fanout_page(msg, None, 2, ENABLED)
    await backend.close(store)

    store = await backend.open(clock)
    unfinished = await store.unfinished_fanouts()
    assert unfinished == [(msg, "u2")]
    resumed_msg, cursor = unfinished[0]
    rest = await fan_out_completely(store, resumed_msg, cursor)
    deliveries = await store.list_deliveries(msg.id)
    assert await store.unfinished_fanouts() == []

    task_ids = [t.id for t in first.tasks + rest]
    assert len(task_ids) == len(set(task_ids)), "a delivery was handed out twice"
    assert {(t.recipient.user_id, t.channel) for t in first.tasks + rest} == set(EXPECTED_QUEUED)
    assert sorted((d.user_id, d.channel) for d in deliveries) == sorted(
        set(EXPECTED_QUEUED) | EXPECTED_SKIPPED
    )
    assert await backend.query("SELECT count(*), count(DISTINCT user_id) FROM inbox") == [(5, 5)]


async def test_unfinished_fanouts_come_oldest_first(store: Store) -> None:
    later, earlier = message("m1", accepted_at=T0 + timedelta(minutes=1)), message("m2")
    await store.accept_message(later)
    await store.accept_message(earlier)
    assert await store.unfinished_fanouts() == [(earlier, None), (later, None)]


# outcomes and queued work


async def test_recorded_outcomes_show_in_deliveries_and_counts(
    store: Store, clock: FakeClock
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


async def test_the_last_outcome_of_a_delivery_in_one_batch_wins(store: Store) -> None:
    await seed_audience(store)
    msg = message()
    await store.accept_message(msg)
    await fan_out_completely(store, msg)
    did = delivery_id(msg.id, "u1", "email")

    await store.record_outcomes(
        [
            Outcome(did, DeliveryStatus.QUEUED, 1, "smtp", error="timeout"),
            Outcome(did, DeliveryStatus.SENT, 2, "smtp", "<2@mx>"),
        ]
    )

    sent = next(d for d in await store.list_deliveries(msg.id) if d.id == did)
    assert (sent.status, sent.attempts, sent.provider_message_id, sent.error) == (
        DeliveryStatus.SENT,
        2,
        "<2@mx>",
        None,
    )


async def test_queued_tasks_page_through_queued_deliveries_only(store: Store) -> None:
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
