"""SQLite plans a fan-out page outside its write lock and writes it only if the audience
did not change meanwhile (``audience_version``); otherwise it plans it again inside."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from notefly.addresses import EndpointKind
from notefly.domain import DeliveryTask, Message, Subscription, User, partition_of
from notefly.errors import StoreUnavailable
from notefly.ports import FanoutPage, PageRequest
from notefly.schedule import Throttle
from notefly.services import PublishCommand, Publisher
from notefly.store import sqlite as sqlite_module
from notefly.store.sqlite import SqliteStore
from tests.contract.audience import (
    ENABLED,
    EXPECTED_QUEUED,
    EXPECTED_SKIPPED,
    FakeClock,
    fan_out_completely,
    message,
    seed_audience,
)
from tests.fakes import FakeIds
from tests.integration.test_sqlite_store import query


@contextlib.asynccontextmanager
async def seeded(path: Path) -> AsyncIterator[SqliteStore]:
    """A store at ``path`` with the contract tests' audience, and m1 accepted."""
    store = await SqliteStore.open(path, FakeClock())
    try:
        await seed_audience(store)
        await store.accept_message(message())
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with seeded(tmp_path / "n.db") as store:
        yield store


def version(tmp_path: Path) -> int:
    return int(query(tmp_path / "n.db", "SELECT n FROM audience_version")[0][0])


def where_pages_are_read(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which connection each page was read on: "reader" or "writer"."""
    seen: list[str] = []
    original = sqlite_module._read_page

    def spy(conn: sqlite3.Connection, *args: Any) -> Any:
        seen.append("reader" if conn is store._reader._conn else "writer")
        return original(conn, *args)

    monkeypatch.setattr(sqlite_module, "_read_page", spy)
    return seen


def between_read_and_write(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, change: Callable[[], Awaitable[Any]]
) -> None:
    """Make ``change`` commit after the next page is read and planned, before it is
    written (as another request or process might)."""
    original = store._read_sync
    pending = [change]

    async def read_then_change(read: Any) -> Any:
        result = await original(read)
        if pending:
            await pending.pop()()
        return result

    monkeypatch.setattr(store, "_read_sync", read_then_change)


def sent_to(tasks: list[DeliveryTask]) -> dict[tuple[str, str], str | None]:
    return {(t.recipient.user_id, t.channel): t.recipient.address for t in tasks}


async def test_a_page_is_read_and_planned_outside_the_write_lock(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = where_pages_are_read(store, monkeypatch)

    tasks = await fan_out_completely(store, message(), owner="n1")

    assert seen == ["reader"] * 3  # u1-u2, u3-u4, u5
    assert sent_to(tasks) == EXPECTED_QUEUED
    skipped = query(tmp_path / "n.db", "SELECT user_id, channel FROM deliveries"
                    " WHERE status = 'skipped'")  # fmt: skip
    assert set(skipped) == EXPECTED_SKIPPED
    assert query(tmp_path / "n.db", "SELECT fanout_cursor, fanout_done FROM messages") == [
        ("u5", 1)
    ]


async def test_a_user_erased_after_the_read_gets_nothing_from_the_page(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = where_pages_are_read(store, monkeypatch)
    between_read_and_write(store, monkeypatch, lambda: store.delete_user("u1"))

    page = await store.fanout_page(message(), None, 2, ENABLED, owner="n1")

    assert seen == ["reader", "writer"], "planned again under the lock"
    # The page is read afresh: u1 is gone, so it holds the next two subscribers.
    assert (page.cursor, page.skipped) == ("u3", 2)
    assert sent_to(page.tasks) == {("u3", "sms"): "+15550103"}
    for table in ("deliveries", "inbox"):
        rows = query(tmp_path / "n.db", f"SELECT count(*) FROM {table} WHERE user_id = 'u1'")
        assert rows == [(0,)], f"nothing of the erased user in {table}"


@pytest.mark.parametrize(
    "change",
    ["unsubscribed", "moved to another channel", "hook removed", "address changed"],
)
async def test_an_audience_change_after_the_read_is_planned_from_the_new_rows(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    changes: dict[str, Callable[[], Awaitable[Any]]] = {
        "unsubscribed": lambda: store.delete_subscription("u4", "sports"),
        "moved to another channel": lambda: store.upsert_subscription(
            Subscription("u4", "sports", ("sms",))
        ),
        "hook removed": lambda: store.delete_endpoint("u5", EndpointKind.WEBHOOK, "e5"),
        "address changed": lambda: store.update_user(
            User("u4", "Dee", email="dee@example.net", phone="+15550104")
        ),
    }
    expected = dict(EXPECTED_QUEUED)
    if change == "unsubscribed":
        del expected[("u4", "email")], expected[("u4", "sms")]
    elif change == "moved to another channel":
        del expected[("u4", "email")]
    elif change == "hook removed":
        del expected[("u5", "webhook")]  # skipped: nowhere to send it
    else:
        expected[("u4", "email")] = "dee@example.net"
    between_read_and_write(store, monkeypatch, changes[change])

    tasks = await fan_out_completely(store, message(), limit=10, owner="n1")

    assert sent_to(tasks) == expected


async def test_every_audience_change_moves_the_version(store: SqliteStore, tmp_path: Path) -> None:
    def subscribe(*channels: str) -> Awaitable[Any]:
        return store.upsert_subscription(Subscription("u1", "finance", list(channels)))

    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("subscribe", lambda: subscribe("sms")),
        ("resubscribe", lambda: subscribe("email")),
        ("unsubscribe", lambda: store.delete_subscription("u1", "finance")),
        ("update user", lambda: store.update_user(User("u2", "Bob", phone="+15550102"))),
        ("remove endpoint", lambda: store.delete_endpoint("u5", EndpointKind.WEBHOOK, "e5")),
        ("erase user", lambda: store.delete_user("u3")),
    ]  # fmt: skip
    for name, step in steps:
        before = version(tmp_path)
        await step()
        assert version(tmp_path) > before, name


async def test_a_throttled_page_is_planned_under_the_lock(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A throttle counts the deliveries any transaction may have added since a read.
    seen = where_pages_are_read(store, monkeypatch)

    await store.fanout_page(
        message(), None, 10, ENABLED, owner="n1", throttles={"sms": Throttle.parse("5/1h")}
    )

    assert seen == ["writer"]


async def test_a_page_asked_of_a_closed_store_says_the_store_is_unavailable(
    tmp_path: Path,
) -> None:
    closed = await SqliteStore.open(tmp_path / "closed.db", FakeClock())
    await seed_audience(closed)
    await closed.accept_message(message())
    await closed.close()

    with pytest.raises(StoreUnavailable):
        await closed.fanout_page(message(), None, 10, ENABLED, owner="n1")


@pytest.mark.parametrize("first_page", [True, False], ids=["with-the-message", "later"])
async def test_a_page_written_whole_is_written_grouped_as_the_shards_send_it(
    store: SqliteStore, tmp_path: Path, first_page: bool
) -> None:
    for i in range(10, 40):
        uid = f"u{i}"
        await store.add_user(User(uid, uid, email=f"{uid}@example.org", phone=f"+1555{i:07d}"))
        channels = ("email", "sms")[: 1 + i % 2]
        await store.upsert_subscription(Subscription(uid, "sports", channels))
    # A throttle (too loose to hold anything back) makes the page write every delivery
    # at once: pages without one keep theirs in flight (test_sqlite_pages_in_flight).
    loose = {"email": Throttle(1000, timedelta(hours=1))}
    request = PageRequest(100, ENABLED, "n1", loose, partitions=4)
    grouped = message("m2")  # the fixture's m1 is accepted and not fanned out
    if first_page:
        accepted = await store.accept_with_page(grouped, request)
        assert accepted.page is not None and accepted.page.done
    else:
        await store.accept_message(grouped)
        page = await request.plan_with(store.fanout_page, grouped)
        assert page.done

    rows = query(
        tmp_path / "n.db", "SELECT user_id, channel FROM deliveries WHERE message_id = 'm2'"
        " ORDER BY rowid"
    )  # fmt: skip
    in_user_order = sorted(rows)
    assert len(rows) == 7 + 30 + 15  # u1-u5, and one or two each for u10-u39
    # On disk by channel and shard, and by user within each: one shard's round of
    # outcomes rewrites neighbouring rows.
    assert rows == sorted(in_user_order, key=lambda r: (r[1], partition_of(r[0], 4)))


async def test_a_publish_hands_its_first_page_on_as_soon_as_it_commits(
    store: SqliteStore, tmp_path: Path
) -> None:
    # The deliveries go to the shards from the writer thread, right after the commit,
    # not once the publishing coroutine has its turn on the event loop again.
    loop_thread = threading.get_ident()
    handed: list[tuple[str, list[tuple[str, str]], bool, list[tuple[str]]]] = []

    class Dispatcher:
        node_id = "n1"

        def first_page(self, category_id: str) -> PageRequest:
            return PageRequest(100, ENABLED, "n1", {})

        def publish(self, message: Message, first: FanoutPage | None = None) -> None:
            assert first is not None
            committed = query(tmp_path / "n.db", "SELECT id FROM messages WHERE id = ?",
                              (message.id,))  # fmt: skip
            sends = sorted((t.recipient.user_id, t.channel) for t in first.tasks)
            handed.append((message.id, sends, threading.get_ident() != loop_thread, committed))

        def overloaded(self) -> bool:
            return False

    publisher = Publisher(store, Dispatcher(), FakeIds(), FakeClock())
    published, created = await publisher.publish(PublishCommand("sports", "Kick-off"))

    assert created
    assert handed == [(published.id, sorted(EXPECTED_QUEUED), True, [(published.id,)])]
