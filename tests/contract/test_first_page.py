"""A message's first page, planned in the transaction that commits the message."""

from __future__ import annotations

from notefly.ports import PageRequest, Store
from tests.contract.audience import (
    ENABLED,
    EXPECTED_QUEUED,
    EXPECTED_SKIPPED,
    fan_out_completely,
    message,
    seed_audience,
    take_over,
)
from tests.contract.conftest import Backend

REQUEST = PageRequest(limit=2, channels=ENABLED, owner="n1", throttles={})


async def test_the_first_page_commits_with_the_message(store: Store, backend: Backend) -> None:
    await seed_audience(store)
    msg = message()

    accepted = await store.accept_with_page(msg, REQUEST)

    assert (accepted.message, accepted.created) == (msg, True)
    page = accepted.page
    assert page is not None
    assert (page.cursor, page.done, page.skipped) == ("u2", False, 1)
    assert [(t.recipient.user_id, t.channel) for t in page.tasks] == [("u1", "email")]
    counts = await store.delivery_counts(msg.id)
    assert (counts.fanout_done, counts.by_status) == (False, {"queued": 1, "skipped": 1})
    rows = await backend.query("SELECT user_id, channel, status, owner FROM deliveries")
    assert [r for r in rows if r[2] != "queued"] == [("u2", "sms", "skipped", None)]
    assert {r[3] for r in rows if r[2] == "queued"} <= {"n1"}  # none on a store holding it
    assert await backend.query("SELECT user_id FROM inbox ORDER BY user_id") == [("u1",), ("u2",)]
    assert await backend.query("SELECT fanout_owner FROM messages") == [("n1",)]
    # n1 holds u1's email, written or in flight: nobody else may take it until it lets go.
    assert await take_over(store, "n2") == []
    await store.release("n1")
    assert [t.id for t in await take_over(store, "n2")] == [page.tasks[0].id]

    # The fan-out goes on from the page's cursor: nobody twice, nobody left out.
    rest = await fan_out_completely(store, msg, page.cursor, owner="n1")
    tasks = [*page.tasks, *rest]
    assert {(t.recipient.user_id, t.channel): t.recipient.address for t in tasks} == (
        EXPECTED_QUEUED
    )
    skipped = await backend.query(
        "SELECT user_id, channel FROM deliveries WHERE status = 'skipped'"
    )
    assert set(skipped) == EXPECTED_SKIPPED
    assert (await store.delivery_counts(msg.id)).fanout_done


async def test_a_first_page_that_covers_the_audience_ends_the_fanout(store: Store) -> None:
    await seed_audience(store)
    msg = message()

    accepted = await store.accept_with_page(
        msg, PageRequest(limit=64, channels=ENABLED, owner="n1", throttles={})
    )

    assert accepted.page is not None and accepted.page.done
    assert {(t.recipient.user_id, t.channel) for t in accepted.page.tasks} == set(EXPECTED_QUEUED)
    assert (await store.delivery_counts(msg.id)).fanout_done
    assert await store.unfinished_fanouts() == []


async def test_a_message_to_nobody_is_done_when_it_is_accepted(store: Store) -> None:
    msg = message(category_id="finance")  # nobody follows finance

    accepted = await store.accept_with_page(msg, REQUEST)

    assert accepted.page is not None
    assert (accepted.page.tasks, accepted.page.done) == ([], True)
    counts = await store.delivery_counts(msg.id)
    assert (counts.fanout_done, counts.by_status) == (True, {})


async def test_a_repeated_key_plans_no_page_again(store: Store, backend: Backend) -> None:
    await seed_audience(store)
    original = message("m1", idempotency_key="k-1")
    await store.accept_with_page(original, REQUEST)

    again = await store.accept_with_page(message("m2", idempotency_key="k-1"), REQUEST)

    assert (again.message, again.created, again.page) == (original, False, None)
    assert await backend.query("SELECT DISTINCT message_id FROM deliveries") == [("m1",)]


# Refuses every inbox row: the page fails after its deliveries were written.
REFUSE_INBOX = {
    "sqlite": [
        "CREATE TRIGGER refuse_inbox BEFORE INSERT ON inbox"
        " BEGIN SELECT RAISE(ABORT, 'inbox refused'); END"
    ],
    "postgres": [
        "CREATE FUNCTION refuse_inbox() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'inbox refused'; END $$",
        "CREATE TRIGGER refuse_inbox BEFORE INSERT ON inbox"
        " FOR EACH ROW EXECUTE FUNCTION refuse_inbox()",
    ],
}


async def test_a_failed_first_page_leaves_the_message_accepted_and_its_page_unplanned(
    store: Store, backend: Backend
) -> None:
    await seed_audience(store)
    msg = message()
    for statement in REFUSE_INBOX[backend.name]:
        await backend.query(statement)

    accepted = await store.accept_with_page(msg, REQUEST)

    assert (accepted.message, accepted.created, accepted.page) == (msg, True, None)
    assert await store.get_message(msg.id) == msg
    assert await backend.query("SELECT fanout_owner FROM messages") == [("n1",)]
    # The deliveries written before the inbox failed were undone with it.
    assert await backend.query("SELECT count(*) FROM deliveries") == [(0,)]
    assert not (await store.delivery_counts(msg.id)).fanout_done
    # The fan-out plans the audience from the start.
    await backend.query(
        "DROP TRIGGER refuse_inbox" + (" ON inbox" if backend.name == "postgres" else "")
    )
    tasks = await fan_out_completely(store, msg, owner="n1")
    assert {(t.recipient.user_id, t.channel) for t in tasks} == set(EXPECTED_QUEUED)
