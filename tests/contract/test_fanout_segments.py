"""A big fan-out split into segments that any node may claim: every subscriber is in
exactly one segment, each segment is claimed by one node at a time, a node's segments
go back to the others when it stops or dies, and the message's fan-out is done when
its last segment is."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from notefly.domain import DeliveryTask, Message, Subscription, User
from notefly.ports import Segment, Store
from tests.contract.audience import FakeClock, hold_for_retry, message, replayed
from tests.contract.conftest import Backend
from tests.contract.test_erasure_contract import where_found

USERS = [f"u{i:02}" for i in range(1, 13)]  # u01 .. u12


async def seed_users(store: Store, ids: list[str] = USERS) -> None:
    for uid in ids:
        await store.add_user(User(uid, f"User {uid}", email=f"{uid}@example.org"))
        await store.upsert_subscription(Subscription(uid, "sports", ("email",)))
    # Another category's subscriber between them: never part of a segment's pages.
    await store.add_user(User("u05x", "Other", email="other@example.org"))
    await store.upsert_subscription(Subscription("u05x", "finance", ("email",)))


async def started(store: Store, owner: str = "n1") -> tuple[Message, str | None]:
    """m1 accepted by ``owner``, its first page (two users) planned: its cursor."""
    msg = message()
    await store.accept_message(msg, owner=owner)
    page = await store.fanout_page(msg, None, 2, ["email"], owner=owner)
    return msg, page.cursor


async def split_by_four(store: Store) -> tuple[Message, Segment]:
    """The twelve users seeded, m1 started by n1 and split into segments of four
    (u03-u06, n1's; u07-u10; u11-u12)."""
    await seed_users(store)
    msg, cursor = await started(store)
    first = await store.split_fanout(msg, cursor, 4, "n1")
    assert first is not None
    return msg, first


async def plan_segment(
    store: Store, msg: Message, segment: Segment, cursor: str | None = None, *, owner: str
) -> list[DeliveryTask]:
    tasks: list[DeliveryTask] = []
    while True:
        page = await store.fanout_page(msg, cursor, 2, ["email"], owner=owner, segment=segment)
        tasks += page.tasks
        cursor = page.cursor
        if page.done:
            return tasks


async def test_a_split_leaves_the_owner_the_first_segment_and_the_rest_to_any_node(
    store: Store, backend: Backend
) -> None:
    await seed_users(store)
    msg, cursor = await started(store)
    assert cursor == "u02"

    first = await store.split_fanout(msg, cursor, 4, "n1")

    assert first == Segment(0, "u02", "u06")
    rows = await backend.query(
        "SELECT seq, start_user, end_user, cursor, owner FROM fanout_segments ORDER BY seq"
    )
    assert [tuple(r) for r in rows] == [
        (0, "u02", "u06", None, "n1"),
        (1, "u06", "u10", None, None),
        (2, "u10", None, None, None),  # u11 and u12: fewer than a segment, the last one
    ]
    # The message itself holds no work any more: nobody claims it, nor splits it again.
    assert await store.claim_fanouts("n2", 10) == []
    assert await store.split_fanout(msg, cursor, 4, "n1") is None
    assert (await store.delivery_counts(msg.id)).fanout_done is False


async def test_segments_planned_by_different_nodes_reach_everyone_once(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    msg, first = await split_by_four(store)
    other = await backend.open(clock)

    claimed = await other.claim_segments("n2", 10)

    assert [(m.id, s, c) for m, s, c in claimed] == [
        ("m1", Segment(1, "u06", "u10"), None),
        ("m1", Segment(2, "u10", None), None),
    ]
    assert await store.claim_segments("n3", 10) == []
    reached = Counter(["u01", "u02"])
    planned = []
    for node, segment in (("n2", claimed[1][1]), ("n1", first), ("n2", claimed[0][1])):
        assert (await store.delivery_counts(msg.id)).fanout_done is False
        tasks = await plan_segment(store, msg, segment, owner=node)
        reached.update(task.recipient.user_id for task in tasks)
        planned += tasks
    assert reached == Counter(USERS)
    assert (await store.delivery_counts(msg.id)).fanout_done is True
    await hold_for_retry(store, planned)  # rows owned by the node that holds each
    owners = await backend.query(
        "SELECT user_id, owner FROM deliveries WHERE user_id > 'u02' ORDER BY user_id"
    )
    assert [o for _u, o in owners] == ["n1"] * 4 + ["n2"] * 4 + ["n2"] * 2  # by segment


async def test_a_segment_resumes_at_its_cursor_and_stays_within_its_end(
    store: Store,
) -> None:
    msg, _first = await split_by_four(store)
    [(_m, middle, _c)] = await store.claim_segments("n2", 1)
    [(_m, last, _c)] = await store.claim_segments("n2", 1)
    assert (middle.seq, last.seq) == (1, 2)

    page = await store.fanout_page(msg, None, 3, ["email"], owner="n2", segment=middle)
    assert ([t.recipient.user_id for t in page.tasks], page.done) == (["u07", "u08", "u09"], False)
    rest = await store.fanout_page(msg, page.cursor, 3, ["email"], owner="n2", segment=middle)
    # Not u11: it belongs to the next segment.
    assert ([t.recipient.user_id for t in rest.tasks], rest.done) == (["u10"], True)


async def test_nothing_is_split_when_a_segment_or_less_is_left_or_the_fanout_is_not_ours(
    store: Store, backend: Backend
) -> None:
    await seed_users(store, USERS[:6])
    msg, cursor = await started(store)  # u03 .. u06 left: four users

    assert await store.split_fanout(msg, cursor, 4, "n1") is None
    assert await store.split_fanout(msg, cursor, 3, "n2") is None  # n1's fan-out
    assert await store.split_fanout(msg, "u01", 3, "n1") is None  # not where it is
    assert await backend.query("SELECT seq FROM fanout_segments") == []

    assert await store.split_fanout(msg, cursor, 3, "n1") == Segment(0, "u02", "u05")


async def test_two_nodes_claiming_segments_at_once_share_them_without_overlap(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    await seed_users(store, [f"u{i:03}" for i in range(1, 42)])
    msg, cursor = await started(store)
    await store.split_fanout(msg, cursor, 3, "n1")  # 13 segments, the first n1's
    first, second = await backend.open(clock), await backend.open(clock)

    claimed: dict[str, list[int]] = {"n2": [], "n3": []}
    for _ in range(8):
        got = await asyncio.gather(first.claim_segments("n2", 1), second.claim_segments("n3", 1))
        claimed["n2"] += [s.seq for _m, s, _c in got[0]]
        claimed["n3"] += [s.seq for _m, s, _c in got[1]]

    assert sorted(claimed["n2"] + claimed["n3"]) == list(range(1, 13))
    assert claimed["n2"] and claimed["n3"]


async def test_the_segments_of_a_node_that_stops_or_dies_go_back_to_the_others(
    store: Store, backend: Backend
) -> None:
    msg, first = await split_by_four(store)
    page = await store.fanout_page(msg, None, 2, ["email"], owner="n1", segment=first)
    [(_m, middle, _c)] = await store.claim_segments("n2", 1)
    await store.heartbeat("n2")
    await store.heartbeat("n3")

    await store.release("n1")
    replays, segments = await replayed(store, "n3", await store.claim_segments("n3", 10), ["email"])
    assert [(s.seq, c) for _m, s, c in segments] == [(0, page.cursor), (2, None)]
    # n1's deliveries in hand go to n3 too: queued, or in pages to plan again.
    taken = replays + await store.claim_deliveries("n3", 10)
    assert sorted(t.recipient.user_id for t in taken) == ["u01", "u02", "u03", "u04"]
    assert await store.release_dead(T_LONG_AGO) == []  # n2 and n3 still beat
    await store.release("n2")
    assert [(s, c) for _m, s, c in await store.claim_segments("n3", 10)] == [(middle, None)]


async def test_erasing_a_user_at_a_segment_boundary_leaves_no_trace_and_no_gap(
    store: Store, backend: Backend
) -> None:
    msg, first = await split_by_four(store)
    page = await store.fanout_page(msg, None, 4, ["email"], owner="n1", segment=first)
    assert page.cursor == "u06"  # the cursor and two boundaries name u06

    await store.delete_user("u06")

    assert (await where_found(backend, ["u06"]))["u06"] == set()
    # n1 goes on with what it holds; the others' segments are claimed from the store.
    reached = Counter(["u01", "u02", "u03", "u04", "u05"])
    reached.update(
        t.recipient.user_id for t in await plan_segment(store, msg, first, "u06", owner="n1")
    )
    for _m, segment, at in await store.claim_segments("n2", 10):
        reached.update(
            t.recipient.user_id for t in await plan_segment(store, msg, segment, at, owner="n2")
        )
    assert reached == Counter(u for u in USERS if u != "u06")
    assert (await store.delivery_counts(msg.id)).fanout_done is True


T_LONG_AGO = message().accepted_at.replace(year=2000)


async def test_the_last_segments_finishing_at_once_finish_the_fanout(
    store: Store, backend: Backend, clock: FakeClock
) -> None:
    await seed_users(store)
    first_node, second_node = await backend.open(clock), await backend.open(clock)
    for n in range(5):  # several tries at the race
        msg = message(f"m{n}")
        await store.accept_message(msg, owner="n1")
        page = await store.fanout_page(msg, None, 2, ["email"], owner="n1")
        first = await store.split_fanout(msg, page.cursor, 4, "n1")
        assert first is not None
        await plan_segment(store, msg, first, owner="n1")
        (_m, middle, _c), (_m2, last, _c2) = await store.claim_segments("n2", 2)

        # Each segment's only page, in two transactions that run side by side.
        await asyncio.gather(
            first_node.fanout_page(msg, None, 10, ["email"], owner="n2", segment=middle),
            second_node.fanout_page(msg, None, 10, ["email"], owner="n2", segment=last),
        )

        assert (await store.delivery_counts(msg.id)).fanout_done is True


async def test_segments_are_claimed_oldest_message_first(store: Store) -> None:
    # The later message has the smaller id: the order is by acceptance, not by id.
    await seed_users(store)
    older = message("m9")
    newer = message("m1", accepted_at=older.accepted_at + timedelta(hours=1))
    for msg in (newer, older):
        await store.accept_message(msg, owner="n1")
        page = await store.fanout_page(msg, None, 2, ["email"], owner="n1")
        assert await store.split_fanout(msg, page.cursor, 4, "n1") is not None

    claimed = [(m.id, s.seq) for m, s, _cursor in await store.claim_segments("n2", 3)]

    assert claimed == [("m9", 1), ("m9", 2), ("m1", 1)]
