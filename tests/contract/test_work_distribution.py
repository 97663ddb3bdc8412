"""Sharing work between nodes through the store: claims, releases, retries, wake-ups.

A second store opened on the same database is a second node (a process on this
machine or another). Both backends must hand every piece of work to exactly one node.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from notefly.addresses import Endpoint, EndpointKind
from notefly.domain import DeliveryStatus, Message, Outcome, Subscription, User, delivery_id
from notefly.ports import Store
from tests.contract.audience import (
    ENABLED,
    EXPECTED_QUEUED,
    EXPECTED_SKIPPED,
    T0,
    FakeClock,
    accepted,
    fan_out_completely,
    hold_for_retry,
    message,
    seed_audience,
    take_over,
)
from tests.contract.conftest import Backend


async def queued_deliveries(store: Store, count: int, *, owner: str | None = None) -> list[str]:
    """``count`` queued email deliveries of message m1; returns their ids in order."""
    users = [User(f"u{i:04}", f"User {i}", email=f"u{i}@example.org") for i in range(count)]
    await asyncio.gather(*(store.add_user(user) for user in users))
    await asyncio.gather(
        *(store.upsert_subscription(Subscription(u.id, "sports", ("email",))) for u in users)
    )
    msg = message()
    await store.accept_message(msg, owner=owner)
    tasks = await fan_out_completely(store, msg, limit=500, owner=owner)
    return sorted(task.id for task in tasks)


async def owners(backend: Backend) -> dict[str, str | None]:
    return dict(await backend.query("SELECT id, owner FROM deliveries"))


# claims


async def test_two_nodes_claiming_at_once_share_the_deliveries_without_overlap(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    ids = await queued_deliveries(store, 60)
    first, second = await backend.open(clock), await backend.open(clock)

    claimed: dict[str, list[str]] = {"n1": [], "n2": []}
    for _ in range(20):
        got = await asyncio.gather(
            first.claim_deliveries("n1", 7), second.claim_deliveries("n2", 7)
        )
        claimed["n1"] += [task.id for task in got[0]]
        claimed["n2"] += [task.id for task in got[1]]
        if not got[0] and not got[1]:
            break

    both = claimed["n1"] + claimed["n2"]
    assert len(both) == len(set(both)), "a delivery was claimed by two nodes"
    assert sorted(both) == ids
    recorded = await owners(backend)
    assert {node: sorted(d for d, o in recorded.items() if o == node) for node in claimed} == {
        node: sorted(got) for node, got in claimed.items()
    }
    assert await store.claim_deliveries("n3", 100) == []


async def test_claimed_deliveries_come_in_id_order_with_what_a_shard_needs(
    store: Store, clock: FakeClock
) -> None:
    await seed_audience(store)
    msg = message()
    await store.accept_message(msg)
    await fan_out_completely(store, msg)
    # The address comes from the user as they are now, not as they were at fan-out.
    await store.update_user(User("u4", "Dee", email="dee@new.example.org", phone="+15550104"))

    first = await store.claim_deliveries("n1", 3)
    rest = await store.claim_deliveries("n1", 10)

    tasks = first + rest
    assert [len(first), len(rest)] == [3, 2]
    assert [t.id for t in tasks] == sorted(delivery_id(msg.id, *key) for key in EXPECTED_QUEUED)
    expected = dict(EXPECTED_QUEUED)
    expected["u4", "email"] = "dee@new.example.org"
    assert {(t.recipient.user_id, t.channel): t.recipient.address for t in tasks} == expected
    assert all(t.message == msg and t.attempts == 0 for t in tasks)
    cyd = next(t.recipient for t in tasks if t.recipient.user_id == "u3")
    assert (cyd.name, cyd.timezone) == ("Cyd", "Europe/Paris")


async def test_two_nodes_claiming_fanouts_at_once_share_them_without_overlap(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    await seed_audience(store)
    unowned = [message(f"m{i:02}", accepted_at=T0 + timedelta(seconds=i)) for i in range(10)]
    for msg in unowned:
        await store.accept_message(msg)
    await store.fanout_page(unowned[3], None, 2, ENABLED)  # started: resumes after u2
    await store.accept_message(message("owned"), owner="n0")
    finished = message("finished")
    await store.accept_message(finished)
    await fan_out_completely(store, finished)
    first, second = await backend.open(clock), await backend.open(clock)

    claimed: dict[str, list[tuple[str, str | None]]] = {"n1": [], "n2": []}
    for _ in range(10):
        got = await asyncio.gather(first.claim_fanouts("n1", 3), second.claim_fanouts("n2", 3))
        claimed["n1"] += [(msg.id, cursor) for msg, cursor in got[0]]
        claimed["n2"] += [(msg.id, cursor) for msg, cursor in got[1]]
        if not got[0] and not got[1]:
            break

    both = claimed["n1"] + claimed["n2"]
    assert len(both) == len({msg_id for msg_id, _cursor in both}), "claimed by two nodes"
    assert sorted(both) == sorted((m.id, "u2" if m is unowned[3] else None) for m in unowned)
    for node, got in claimed.items():
        assert [msg_id for msg_id, _ in got] == sorted(msg_id for msg_id, _ in got), node


async def test_claimed_fanouts_come_oldest_first_and_whole(store: Store) -> None:
    newer = message("m1", accepted_at=T0 + timedelta(minutes=1), idempotency_key="k-1")
    older = message("m2")
    await store.accept_message(newer)
    await store.accept_message(older)

    assert await store.claim_fanouts("n1", 1) == [(older, None)]
    assert await store.claim_fanouts("n1", 5) == [(newer, None)]
    assert await store.claim_fanouts("n2", 5) == []


# owners, releases and dead nodes


async def test_a_fanning_node_owns_its_queued_deliveries_but_not_its_skipped_ones(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    msg = await accepted(store, "n1")
    tasks = await fan_out_completely(store, msg, owner="n1")

    expected = {delivery_id(msg.id, *key) for key in EXPECTED_QUEUED}
    assert {t.id for t in tasks} == expected
    assert await take_over(store, "n2") == []
    await hold_for_retry(store, tasks)  # a row for each, on every store
    recorded = await owners(backend)
    assert {d: o for d, o in recorded.items() if o is not None} == dict.fromkeys(expected, "n1")
    assert {recorded[delivery_id(msg.id, *key)] for key in EXPECTED_SKIPPED} == {None}
    await store.release("n1")
    clock.advance(601)  # past the retries' time
    assert {t.id for t in await take_over(store, "n2")} == expected


async def test_a_released_node_hands_its_unfinished_work_to_the_others(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    await seed_audience(store)
    await store.heartbeat("n1")
    msg = message()
    await store.accept_message(msg, owner="n1")
    page = await store.fanout_page(msg, None, 2, ENABLED, owner="n1")
    other = await backend.open(clock)
    assert await other.claim_fanouts("n2", 10) == []
    assert await take_over(other, "n2") == []

    await store.release("n1")

    assert await backend.query("SELECT id FROM nodes") == []
    assert await other.claim_fanouts("n2", 10) == [(msg, "u2")]
    assert sorted(t.id for t in await take_over(other, "n2")) == sorted(t.id for t in page.tasks)


async def test_release_leaves_the_work_of_other_nodes_and_finished_work_alone(
    store: Store, backend: Backend
) -> None:
    await seed_audience(store)
    mine, theirs = message("m1"), message("m2")
    await store.accept_message(mine, owner="n1")
    await store.accept_message(theirs, owner="n2")
    tasks = await fan_out_completely(store, mine, owner="n1")
    theirs_page = await store.fanout_page(theirs, None, 2, ENABLED, owner="n2")
    await hold_for_retry(store, theirs_page.tasks)  # rows of n2's, on every store
    sent = tasks[0].id
    await store.record_outcomes([Outcome(sent, DeliveryStatus.SENT, 1, "smtp")])
    await store.heartbeat("n1")
    await store.heartbeat("n2")

    await store.release("n1")

    assert await backend.query("SELECT id FROM nodes") == [("n2",)]
    assert await store.claim_fanouts("n3", 10) == []  # m1 is done; m2 is n2's
    claimed = await take_over(store, "n3")
    assert sorted(t.id for t in claimed) == sorted(t.id for t in tasks[1:])
    recorded = await owners(backend)
    assert recorded[sent] is None
    assert {recorded[t.id] for t in theirs_page.tasks} == {"n2"}
    assert {o for d, o in recorded.items() if d.startswith("d_") and o not in (None, "n3")} == {
        "n2"
    }


async def test_nodes_silent_too_long_lose_their_work_to_the_living(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    await store.heartbeat("n1")
    await store.heartbeat("n2")
    clock.advance(30)
    await store.heartbeat("n3")
    for node in ("n1", "n2", "n3"):
        await store.accept_message(message(f"of-{node}"), owner=node)
    clock.advance(5)
    first, second = await backend.open(clock), await backend.open(clock)

    # Every living node looks for the dead; each dead one is released exactly once.
    found = await asyncio.gather(
        first.release_dead(T0 + timedelta(seconds=10)),
        second.release_dead(T0 + timedelta(seconds=10)),
    )

    assert sorted(found[0] + found[1]) == ["n1", "n2"]
    assert await store.release_dead(T0 + timedelta(seconds=10)) == []
    assert await backend.query("SELECT id FROM nodes") == [("n3",)]
    claimed = await store.claim_fanouts("n3", 10)
    assert sorted(msg.id for msg, _cursor in claimed) == ["of-n1", "of-n2"]


async def test_work_of_an_owner_without_a_heartbeat_row_is_handed_back(
    store: Store, clock: FakeClock
) -> None:
    # "ghost" was declared dead while it still ran, wrote more work, then vanished: it
    # has no row to time out, so its work is orphaned rather than silent.
    await store.heartbeat("n1")
    await store.accept_message(message("of-ghost"), owner="ghost")
    await store.accept_message(message("of-n1"), owner="n1")

    assert await store.release_dead(T0 - timedelta(seconds=1)) == ["ghost"]
    claimed = await store.claim_fanouts("n1", 10)
    assert [msg.id for msg, _cursor in claimed] == ["of-ghost"]


async def test_a_heartbeat_keeps_a_node_alive_and_its_start_time(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    await store.heartbeat("n1")
    clock.advance(60)
    await store.heartbeat("n1")

    assert await store.release_dead(T0 + timedelta(seconds=30)) == []
    assert await backend.query("SELECT id FROM nodes WHERE started_at < heartbeat_at") == [("n1",)]


# outcomes and retries


async def test_a_final_outcome_frees_a_delivery_and_a_retry_keeps_its_node(
    store: Store, backend: Backend
) -> None:
    ids = await queued_deliveries(store, 4)
    claimed = await store.claim_deliveries("n1", 10)
    assert [t.id for t in claimed] == ids

    await store.record_outcomes(
        [
            Outcome(ids[0], DeliveryStatus.SENT, 1, "smtp"),
            Outcome(ids[1], DeliveryStatus.FAILED, 5, "smtp", error="gave up"),
            Outcome(ids[2], DeliveryStatus.SKIPPED, 0, error="no endpoint"),
            Outcome(ids[3], DeliveryStatus.QUEUED, 1, "smtp", error="timeout"),
        ]
    )

    assert await owners(backend) == {ids[0]: None, ids[1]: None, ids[2]: None, ids[3]: "n1"}
    assert await store.claim_deliveries("n2", 10) == []
    await store.release("n1")
    [retry] = await store.claim_deliveries("n2", 10)
    assert (retry.id, retry.attempts) == (ids[3], 1)


async def test_a_retry_is_not_claimed_before_its_time(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    ids = await queued_deliveries(store, 2)
    await store.claim_deliveries("n1", 10)
    clock.advance(100)
    await store.record_outcomes(
        [
            Outcome(ids[0], DeliveryStatus.QUEUED, 1, "smtp", error="429", retry_after=30),
            # The retry time counts from the attempt, when the outcome says when it was.
            Outcome(
                ids[1],
                DeliveryStatus.QUEUED,
                2,
                "smtp",
                error="429",
                at=T0 + timedelta(seconds=90),
                retry_after=30,
            ),
        ]
    )
    await store.release("n1")  # the node died before its retries

    clock.advance(19)  # T0 + 119 s
    assert await store.claim_deliveries("n2", 10) == []
    clock.advance(1)  # T0 + 120 s
    assert [(t.id, t.attempts) for t in await store.claim_deliveries("n2", 10)] == [(ids[1], 2)]
    clock.advance(9)
    assert await store.claim_deliveries("n2", 10) == []
    clock.advance(1)  # T0 + 130 s
    assert [(t.id, t.attempts) for t in await store.claim_deliveries("n2", 10)] == [(ids[0], 1)]


# waking idle nodes


async def waited(store: Store, seconds: float, meanwhile: object = None) -> float:
    """Seconds ``wait_for_work(seconds)`` took, with ``meanwhile`` awaited during it."""
    started = time.monotonic()
    waiter = asyncio.create_task(store.wait_for_work(seconds))
    await asyncio.sleep(0)  # the waiter is waiting now
    if meanwhile is not None:
        await meanwhile  # type: ignore[misc]
    await asyncio.wait_for(waiter, seconds + 5)
    return time.monotonic() - started


async def test_with_no_news_waiting_for_work_ends_after_the_timeout(store: Store) -> None:
    elapsed = await waited(store, 0.3)
    assert 0.25 <= elapsed < 3


async def test_a_publish_on_another_node_wakes_a_waiting_node(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    other = await backend.open(clock)
    elapsed = await waited(store, 2.0, other.accept_message(message()))
    if backend.wakes_on_news:
        assert elapsed < 1.0, f"woke after {elapsed:.2f} s"
    else:
        assert elapsed >= 1.9  # SQLite cannot tell: the node polls


async def test_a_release_on_another_node_wakes_a_waiting_node(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    other = await backend.open(clock)
    await other.accept_message(message(), owner="n2")
    await store.wait_for_work(0.1)  # whatever news came before is heard now
    elapsed = await waited(store, 2.0, other.release("n2"))
    if backend.wakes_on_news:
        assert elapsed < 1.0, f"woke after {elapsed:.2f} s"
    else:
        assert elapsed >= 1.9


async def test_a_publish_its_node_fans_out_itself_wakes_nobody(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    other = await backend.open(clock)
    elapsed = await waited(store, 0.5, other.accept_message(message(), owner="n2"))
    assert elapsed >= 0.45, "an owned message is no work for other nodes"


async def test_a_claimed_delivery_keeps_an_address_that_is_a_registration(store: Store) -> None:
    # Wes has no push token, only a web push subscription: the address recorded at
    # fan-out must survive a hand-over to another node.
    await store.add_user(User("wes", "Wes"))
    await store.add_endpoint(  # type: ignore[attr-defined]
        Endpoint(
            "ep1",
            "wes",
            EndpointKind.WEBPUSH,
            "https://push.example/abc",
            keys={"p256dh": "k", "auth": "a"},
            label="push.example",
        )
    )
    await store.upsert_subscription(Subscription("wes", "sports", ("push",)))
    message, _ = await store.accept_message(
        Message("m-wes", "sports", "goal", datetime(2026, 1, 1, tzinfo=UTC)), owner="node-a"
    )
    page = await store.fanout_page(message, None, 10, ["push"], owner="node-a")
    recorded = page.tasks[0].recipient.address
    assert recorded  # the provider resolves the registrations behind it
    await store.release("node-a")
    claimed = await take_over(store, "node-b", ["push"])
    assert [(t.id, t.recipient.address) for t in claimed] == [(page.tasks[0].id, recorded)]
