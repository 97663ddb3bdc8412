"""The deliveries a node holds once its page commits, until their outcomes are written.

A store may write them as queued rows at once, or only with their first outcome,
keeping the page's range meanwhile (``Segment.replay``; SQLite does, to write each
delivery once). Either way: the counts include them, nobody else takes them while the
node lives, a node that lets go hands over exactly those without an outcome, a retry
keeps its node and time, and an erased user's outcome leaves nothing behind.
"""

from __future__ import annotations

from datetime import timedelta

from notefly.deadletters import DeliveryFilter
from notefly.domain import DeliveryStatus, DeliveryTask, Outcome, delivery_id
from notefly.ports import Store
from tests.contract.audience import (
    EXPECTED_QUEUED,
    EXPECTED_SKIPPED,
    FakeClock,
    accepted,
    fan_out_completely,
    take_over,
)
from tests.contract.conftest import Backend
from tests.contract.test_erasure_contract import where_found

QUEUED = DeliveryFilter(status=DeliveryStatus.QUEUED)


def sent(task: DeliveryTask) -> Outcome:
    return Outcome(task.id, DeliveryStatus.SENT, 1, "smtp", f"pm-{task.id}", text="hello")


async def statuses(store: Store) -> dict[str, str]:
    """What the message's list of deliveries shows: each one's status, by id."""
    listed = await store.list_deliveries("m1")
    assert len(listed) == len({d.id for d in listed}), "a delivery listed twice"
    assert [(d.user_id, d.channel) for d in listed] == sorted(
        (d.user_id, d.channel) for d in listed
    )
    return {d.id: d.status.value for d in listed}


def skipped_ids() -> dict[str, str]:
    return {delivery_id("m1", *key): "skipped" for key in EXPECTED_SKIPPED}


async def planned(store: Store, node: str = "n1") -> list[DeliveryTask]:
    return await fan_out_completely(store, await accepted(store, node), owner=node)


async def test_the_counts_include_the_deliveries_in_hand_until_they_are_final(
    store: Store,
) -> None:
    tasks = await planned(store)
    assert len(tasks) == len(EXPECTED_QUEUED)

    counts = await store.delivery_counts("m1")
    assert counts.by_status == {"queued": 5, "skipped": 2}
    assert await statuses(store) == {t.id: "queued" for t in tasks} | skipped_ids()
    await store.record_outcomes([sent(tasks[0]), sent(tasks[1])])
    assert (await store.delivery_counts("m1")).by_status == {
        "queued": 3,
        "sent": 2,
        "skipped": 2,
    }
    listed = await statuses(store)
    assert (
        listed
        == {t.id: "sent" for t in tasks[:2]} | {t.id: "queued" for t in tasks[2:]} | skipped_ids()
    )
    await store.record_outcomes([sent(t) for t in tasks[2:]])

    counts = await store.delivery_counts("m1")
    assert (counts.fanout_done, counts.by_status) == (True, {"sent": 5, "skipped": 2})
    listed = {(d.user_id, d.channel): d for d in await store.list_deliveries("m1")}
    assert set(listed) == set(EXPECTED_QUEUED) | EXPECTED_SKIPPED
    for key, address in EXPECTED_QUEUED.items():
        delivery = listed[key]
        assert (delivery.status, delivery.recipient, delivery.attempts) == (
            DeliveryStatus.SENT,
            address,
            1,
        )
        assert delivery.provider_message_id == f"pm-{delivery.id}"
    # Nothing is left to anyone, not even once the node lets go: no page to plan again.
    await store.release("n1")
    assert await store.claim_segments("n2", 10) == []
    assert await store.claim_deliveries("n2", 10) == []


async def test_a_node_that_lets_go_hands_over_exactly_what_has_no_outcome(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    tasks = await planned(store)
    done, rest = tasks[:2], tasks[2:]
    await store.record_outcomes([sent(t) for t in done])
    other = await backend.open(clock)
    assert await take_over(other, "n2") == []  # n1 lives: its deliveries stay its own

    await store.release("n1")

    taken = await take_over(other, "n2")
    assert sorted(t.id for t in taken) == sorted(t.id for t in rest)
    assert {(t.recipient.user_id, t.channel): t.recipient.address for t in taken} == {
        (t.recipient.user_id, t.channel): t.recipient.address for t in rest
    }
    assert await take_over(store, "n3") == []  # taken once
    # n2 sends them; the message's counts end where one node alone would have.
    await other.record_outcomes([sent(t) for t in taken])
    counts = await store.delivery_counts("m1")
    assert counts.by_status == {"sent": 5, "skipped": 2}
    sent_rows = await backend.query("SELECT id FROM deliveries WHERE status = 'sent'")
    assert sorted(r[0] for r in sent_rows) == sorted(t.id for t in tasks)


async def test_a_delivery_to_retry_keeps_its_node_and_its_time(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    tasks = await planned(store)
    retry = tasks[0]
    await store.record_outcomes(
        [Outcome(retry.id, DeliveryStatus.QUEUED, 1, "smtp", error="busy", retry_after=60)]
    )
    await store.record_outcomes([sent(t) for t in tasks[1:]])
    rows = await backend.query(
        "SELECT status, attempts, owner, error FROM deliveries WHERE id = ?", retry.id
    )
    assert [tuple(r) for r in rows] == [("queued", 1, "n1", "busy")]
    assert (await store.delivery_counts("m1")).by_status == {
        "queued": 1,
        "sent": 4,
        "skipped": 2,
    }

    await store.release("n1")
    assert await take_over(store, "n2") == []  # not before its time
    clock.advance(61)
    [again] = await take_over(store, "n2")
    assert (again.id, again.attempts, again.recipient.address) == (
        retry.id,
        1,
        retry.recipient.address,
    )
    await store.record_outcomes([sent(again)])
    assert (await store.delivery_counts("m1")).by_status == {"sent": 5, "skipped": 2}


async def test_an_outcome_for_a_user_erased_meanwhile_leaves_nothing_of_them(
    store: Store, backend: Backend
) -> None:
    tasks = await planned(store)
    dee = [t for t in tasks if t.recipient.user_id == "u4"]
    assert len(dee) == 2

    await store.delete_user("u4")
    await store.record_outcomes([sent(t) for t in tasks])

    found = await where_found(backend, ["u4", "dee@example.org", *(t.id for t in dee)])
    assert all(tables == set() for tables in found.values()), found
    assert (await store.delivery_counts("m1")).by_status == {"sent": 3, "skipped": 2}
    await store.release("n1")
    assert await take_over(store, "n2") == []


async def test_erasing_the_user_a_page_in_hand_ends_with_hands_over_the_rest(
    store: Store, backend: Backend
) -> None:
    msg = await accepted(store, "n1")
    first = await store.fanout_page(msg, None, 4, ("email", "sms", "webhook"), owner="n1")
    assert first.cursor == "u4"  # u1 .. u4: the page ends with Dee

    await store.delete_user("u4")

    assert (await where_found(backend, ["u4"]))["u4"] == set()
    await store.release("n1")
    taken = await take_over(store, "n2")
    assert sorted((t.recipient.user_id, t.channel) for t in taken) == [
        ("u1", "email"),
        ("u3", "sms"),
    ]
    assert delivery_id(msg.id, "u4", "email") not in {t.id for t in taken}


async def test_a_page_in_hand_outlives_its_node_across_a_restart(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    """The node's process ends without a word (a crash): a store opened again, under
    the same node id, takes its deliveries back when the node starts (``release``)."""
    tasks = await planned(store)
    await store.record_outcomes([sent(tasks[0])])
    await backend.close(store)
    clock.advance(timedelta(minutes=5).total_seconds())

    reopened = await backend.open(clock)
    await reopened.release("n1")  # what a starting node does first
    taken = await take_over(reopened, "n1")
    assert sorted(t.id for t in taken) == sorted(t.id for t in tasks[1:])


async def test_the_operators_listing_of_queued_deliveries_shows_those_in_hand(
    store: Store, clock: FakeClock
) -> None:
    tasks = await planned(store)
    clock.advance(5)
    await store.record_outcomes([sent(tasks[0])])
    waiting = {t.id for t in tasks[1:]}

    queued = [e.delivery for e in await store.find_deliveries(QUEUED, 100, None)]
    assert {d.id for d in queued} == waiting
    assert {d.status for d in queued} == {DeliveryStatus.QUEUED}
    everything = await store.find_deliveries(DeliveryFilter(), 100, None)
    assert {e.delivery.id for e in everything} == {t.id for t in tasks} | set(skipped_ids())
    assert {e.category_id for e in everything} == {"sports"}
    # Narrowed and paged like stored rows: by channel, category, time and cursor.
    sms = await store.find_deliveries(DeliveryFilter(DeliveryStatus.QUEUED, "sms"), 100, None)
    assert {e.delivery.id for e in sms} == {t.id for t in tasks[1:] if t.channel == "sms"}
    assert (
        await store.find_deliveries(
            DeliveryFilter(DeliveryStatus.QUEUED, category="movies"), 100, None
        )
        == []
    )
    later = DeliveryFilter(DeliveryStatus.QUEUED, since=clock.now())
    assert await store.find_deliveries(later, 100, None) == []
    seen: list[str] = []
    after = None
    while True:
        page = await store.find_deliveries(QUEUED, 2, after)
        if not page:
            break
        assert len(page) <= 2
        seen += [e.delivery.id for e in page]
        after = page[-1].cursor
    assert sorted(seen) == sorted(waiting)
