"""SQLite writes the deliveries of a page that go out at once only with their outcome:
one write each instead of two, with the page kept in flight meanwhile (see
``notefly/store/sqlite_flight.py``; what every store must do is in
tests/contract/test_deliveries_in_hand.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from notefly.deadletters import DeliveryFilter
from notefly.domain import DeliveryStatus, DeliveryTask, Outcome, Subscription, User
from notefly.errors import NotFound
from notefly.schedule import Throttle
from notefly.store.sqlite import SqliteStore
from notefly.store.sqlite_flight import PLAIN_HELD_WIDTH, Held, held_row
from tests.contract.audience import (
    ENABLED,
    EXPECTED_QUEUED,
    EXPECTED_SKIPPED,
    FakeClock,
    message,
)
from tests.integration.test_sqlite_fanout_plan import between_read_and_write, seeded
from tests.integration.test_sqlite_store import query


@pytest.fixture
async def whole_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with seeded(tmp_path / "n.db") as store:
        yield store


@pytest.fixture
def store(whole_store: SqliteStore) -> SqliteStore:
    """The audience here is a few users: keep even their pages in flight."""
    whole_store.hold_at_least = 1
    return whole_store


def sent(task: DeliveryTask) -> Outcome:
    return Outcome(task.id, DeliveryStatus.SENT, 1, "smtp", text="hello")


def count_updates(path: Path) -> None:
    """From now on, count the updates of delivery rows (in ``updates``)."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE updates (n INTEGER NOT NULL)")
        conn.execute("INSERT INTO updates VALUES (0)")
        conn.execute(
            "CREATE TRIGGER count_updates AFTER UPDATE ON deliveries"
            " BEGIN UPDATE updates SET n = n + 1; END"
        )


def pages(path: Path) -> list[tuple[Any, ...]]:
    return query(path, "SELECT after_user, last_user, owner, pending FROM fanout_pages")


async def test_a_page_writes_each_delivery_that_goes_out_once_with_its_outcome(
    store: SqliteStore, tmp_path: Path
) -> None:
    db = tmp_path / "n.db"
    count_updates(db)

    page = await store.fanout_page(message(), None, 10, ENABLED, owner="n1")

    assert {(t.recipient.user_id, t.channel) for t in page.tasks} == set(EXPECTED_QUEUED)
    rows = query(db, "SELECT user_id, channel, status FROM deliveries")
    assert {(u, c) for u, c, _s in rows} == EXPECTED_SKIPPED  # only what does not go out
    assert pages(db) == [("", "u5", "n1", 5)]
    assert (await store.work_counts())["queued"] == 5

    await store.record_outcomes([sent(t) for t in page.tasks[:2]])
    assert pages(db) == [("", "u5", "n1", 3)]
    await store.record_outcomes([sent(t) for t in page.tasks[2:]])

    assert pages(db) == []
    rows = query(db, "SELECT status, count(*) FROM deliveries GROUP BY status")
    assert dict(rows) == {"sent": 5, "skipped": 2}
    assert query(db, "SELECT n FROM updates") == [(0,)]  # inserted once, never rewritten
    assert (await store.work_counts())["queued"] == 0
    [summary] = await store.recent_messages(5)
    assert summary.deliveries == {"sent": 5, "skipped": 2}


async def test_outcomes_of_every_kind_in_one_write_leave_the_rows_they_describe(
    store: SqliteStore, tmp_path: Path
) -> None:
    """A send that is over binds fewer columns than one with an error or a retry; one
    write of all of them gives each row exactly what its outcome says."""
    db = tmp_path / "n.db"
    page = await store.fanout_page(message(), None, 10, ENABLED, owner="n1")
    ok, failed, retried, *_rest = page.tasks
    await store.record_outcomes(
        [
            Outcome(ok.id, DeliveryStatus.SENT, 1, "smtp", "msg-1", "to@x", "hi", "hello"),
            Outcome(failed.id, DeliveryStatus.FAILED, 1, "smtp", text="t", error="rejected"),
            Outcome(retried.id, DeliveryStatus.QUEUED, 1, "smtp", error="busy", retry_after=30),
        ]
    )

    columns = (
        "status, attempts, provider, provider_message_id, recipient, subject, text, error,"
        " sent_at IS NOT NULL, not_before IS NOT NULL, owner, mode, note"
    )
    found = {
        r[0]: r[1:]
        for r in query(db, f"SELECT id, {columns} FROM deliveries WHERE status != 'skipped'")
    }
    address = EXPECTED_QUEUED
    assert found == {
        ok.id: ("sent", 1, "smtp", "msg-1", "to@x", "hi", "hello", None, 1, 0, None,
                "immediate", None),
        failed.id: ("failed", 1, "smtp", None,
                    address[(failed.recipient.user_id, failed.channel)], None, "t",
                    "rejected", 0, 0, None, "immediate", None),
        retried.id: ("queued", 1, "smtp", None,
                     address[(retried.recipient.user_id, retried.channel)], None, None,
                     "busy", 0, 1, "n1", "immediate", None),
    }  # fmt: skip
    assert pages(db) == [("", "u5", "n1", 2)]


def test_a_send_that_is_over_is_held_in_the_short_row_shape() -> None:
    held = Held("p_1", "m1", "u1", "email", "a@x", "t0", "n1", "immediate", None)
    sent_row = held_row(held, Outcome("d1", DeliveryStatus.SENT, 1, "smtp"), "t1", None, False)
    assert len(sent_row) == PLAIN_HELD_WIDTH
    assert sent_row[-1] == "p_1"
    failed = Outcome("d1", DeliveryStatus.FAILED, 1, "smtp", error="rejected")
    retried = Outcome("d1", DeliveryStatus.QUEUED, 1, "smtp", error="busy")
    digest = held._replace(mode="digest")
    longer = [
        held_row(held, failed, "t1", None, False),
        held_row(held, retried, "t1", "t2", True),
        held_row(digest, Outcome("d1", DeliveryStatus.SENT, 1, "smtp"), "t1", None, False),
        held_row(
            held._replace(note="quiet hours"),
            Outcome("d1", DeliveryStatus.SENT, 1),
            "t1",
            None,
            False,
        ),
    ]
    assert {len(row) for row in longer} == {20}


async def test_the_ops_summary_counts_deliveries_in_flight_as_queued(
    store: SqliteStore,
) -> None:
    page = await store.fanout_page(message(), None, 10, ENABLED, owner="n1")
    await store.record_outcomes([sent(page.tasks[0])])

    [summary] = await store.recent_messages(5)
    assert summary.deliveries == {"queued": 4, "sent": 1, "skipped": 2}


async def test_a_provider_finds_the_user_and_message_of_a_delivery_in_flight(
    store: SqliteStore,
) -> None:
    page = await store.fanout_page(message(), None, 10, ENABLED, owner="n1")
    [eve] = [t for t in page.tasks if t.recipient.user_id == "u5"]

    context = await store.delivery_context(eve.id)

    assert (context.delivery_id, context.user_id, context.message) == (eve.id, "u5", message())
    await store.delete_user("u5")
    with pytest.raises(NotFound):
        await store.delivery_context(eve.id)


async def test_a_page_planned_again_inside_the_lock_is_one_page_in_flight(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def newcomer() -> None:  # changes the audience between the read and the write
        await store.add_user(User("u35", "New", email="new@example.org"))
        await store.upsert_subscription(Subscription("u35", "sports", ("email",)))

    between_read_and_write(store, monkeypatch, newcomer)

    page = await store.fanout_page(message(), None, 10, ENABLED, owner="n1")

    assert ("u35", "email") in {(t.recipient.user_id, t.channel) for t in page.tasks}
    assert pages(tmp_path / "n.db") == [("", "u5", "n1", 6)]
    await store.record_outcomes([sent(t) for t in page.tasks])
    assert pages(tmp_path / "n.db") == []


async def test_a_throttled_page_writes_its_deliveries_at_once(
    store: SqliteStore, tmp_path: Path
) -> None:
    """A throttle counts the rows of every message in its period: a page with one
    keeps nothing in flight, so that the next page counts what this one sends."""
    throttles = {"email": Throttle(1000, timedelta(hours=1))}

    page = await store.fanout_page(message(), None, 10, ENABLED, owner="n1", throttles=throttles)

    rows = query(tmp_path / "n.db", "SELECT user_id, channel, owner FROM deliveries")
    queued = {(u, c) for u, c, owner in rows if owner == "n1"}
    assert queued == {(t.recipient.user_id, t.channel) for t in page.tasks}
    assert pages(tmp_path / "n.db") == []


async def test_a_page_with_few_deliveries_that_go_out_is_written_whole(
    whole_store: SqliteStore, tmp_path: Path
) -> None:
    """A page in flight has statements of its own: a message to a few users is
    cheaper written whole, with one row each now and its outcome later."""
    assert whole_store.hold_at_least > len(EXPECTED_QUEUED)

    page = await whole_store.fanout_page(message(), None, 10, ENABLED, owner="n1")

    rows = query(tmp_path / "n.db", "SELECT user_id, channel, status, owner FROM deliveries")
    assert {(u, c) for u, c, s, o in rows if (s, o) == ("queued", "n1")} == set(EXPECTED_QUEUED)
    assert pages(tmp_path / "n.db") == []
    await whole_store.record_outcomes([sent(t) for t in page.tasks])
    assert (await whole_store.delivery_counts("m1")).by_status == {"sent": 5, "skipped": 2}


async def test_a_page_planned_again_forgets_who_left_the_audience_meanwhile(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def leaves() -> None:  # Ada unsubscribes between the read and the write
        await store.delete_subscription("u1", "sports")

    between_read_and_write(store, monkeypatch, leaves)

    page = await store.fanout_page(message(), None, 10, ENABLED, owner="n1")

    assert "u1" not in {t.recipient.user_id for t in page.tasks}
    assert pages(tmp_path / "n.db") == [("", "u5", "n1", 4)]
    # Nothing of the first plan stays behind in the node's deliveries in flight.
    assert sorted(store._in_flight) == sorted(t.id for t in page.tasks)
    await store.record_outcomes([sent(t) for t in page.tasks])
    assert store._in_flight == {}
    assert pages(tmp_path / "n.db") == []


async def test_the_operators_listing_reads_pages_in_flight_newest_first(
    store: SqliteStore,
) -> None:
    """A listing is cut at its limit: the pages in flight of an older message are not
    read while a newer page fills it, and paging on reaches them in time order."""
    clock = store._clock
    assert isinstance(clock, FakeClock)
    old = await store.fanout_page(message(), None, 10, ENABLED, owner="n1")
    clock.advance(60)
    newer = message("m2", accepted_at=clock.now())
    await store.accept_message(newer, owner="n1")
    new = await store.fanout_page(newer, None, 10, ENABLED, owner="n1")
    queued = DeliveryFilter(status=DeliveryStatus.QUEUED)

    first = await store.find_deliveries(queued, 3, None)

    assert {e.delivery.message_id for e in first} == {"m2"}
    seen = [e.delivery for e in first]
    after = first[-1].cursor
    while page := await store.find_deliveries(queued, 3, after):
        seen += [e.delivery for e in page]
        after = page[-1].cursor
    assert sorted(d.id for d in seen) == sorted(t.id for t in old.tasks + new.tasks)
    times = [d.updated_at for d in seen]
    assert times == sorted(times, reverse=True)
