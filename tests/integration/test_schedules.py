"""Digests, quiet hours, throttles and scheduled messages on the real SQLite store.

The actor system runs on this test's loop with an injected clock; the tests move the
clock by hand and poll (real time, bounded) for what the fake providers receive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notefly.actors import ActorSystem
from notefly.actors.pump import PumpSettings
from notefly.actors.shard import ShardSettings
from notefly.domain import DeliveryStatus, Priority, User
from notefly.rendering import TemplateRenderer, build_environment
from notefly.schedule import Frequency, Schedule, Throttle, parse_clock, parse_weekday
from notefly.services import Directory, PublishCommand, Publisher
from notefly.store.sqlite import SqliteStore
from tests.fakes import FakeChannel, FakeIds, FixedClock

CHANNELS = ("sms", "email", "push")
MONDAY_8_UTC = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
WEEKLY_FRIDAY_10 = Schedule(Frequency.WEEKLY, parse_clock("10:00"), parse_weekday("friday"))


@dataclass
class Node:
    store: SqliteStore
    system: ActorSystem
    directory: Directory
    publisher: Publisher

    async def publish(self, category: str, body: str, **fields: object) -> str:
        message, _ = await self.publisher.publish(PublishCommand(category, body, **fields))  # type: ignore[arg-type]
        return message.id


class Broker:
    """Starts and restarts one node on one database file, as a process would."""

    def __init__(self, path: Path, clock: FixedClock, throttles: dict[str, Throttle]):
        self.path = path
        self.clock = clock
        self.throttles = throttles
        self.channels = {name: FakeChannel(name) for name in CHANNELS}
        self.ids = FakeIds()  # one sequence across restarts, as a real id source would be
        self.node: Node | None = None

    async def start(self) -> Node:
        store = await SqliteStore.open(self.path, self.clock)
        system = ActorSystem(
            store=store,
            renderer=TemplateRenderer(build_environment()),
            channels=self.channels,
            clock=self.clock,
            monotonic=time.monotonic,
            node_id="node-1",
            shards_per_channel=1,
            shard_settings=ShardSettings(retry_base_seconds=0.01),
            pump_settings=PumpSettings(
                heartbeat_seconds=0.05, poll_seconds=0.02, node_timeout_seconds=10 * 86400
            ),
            throttles=self.throttles,
        )
        await system.start()
        self.node = Node(
            store,
            system,
            Directory(store, self.ids, self.clock, CHANNELS),
            Publisher(store, system, self.ids, self.clock),
        )
        return self.node

    async def stop(self) -> None:
        assert self.node is not None
        await self.node.system.stop()
        await self.node.store.close()
        self.node = None

    async def restart(self) -> Node:
        await self.stop()
        return await self.start()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MONDAY_8_UTC)


@pytest.fixture
async def broker(tmp_path: Path, clock: FixedClock) -> AsyncIterator[Broker]:
    b = Broker(tmp_path / "n.db", clock, {"sms": Throttle(2, timedelta(hours=1))})
    await b.start()
    yield b
    if b.node is not None:
        await b.stop()


async def eventually(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


async def settle(seconds: float = 0.3) -> None:
    """Give the pump a few polling rounds to show that nothing (more) happens."""
    await asyncio.sleep(seconds)


async def add_user(node: Node, name: str, **fields: object) -> str:
    user = await node.directory.register(User(id=name, name=name.title(), **fields))  # type: ignore[arg-type]
    return user.id


async def test_a_weekly_digest_user_gets_one_summary_after_a_week_across_restarts(
    broker: Broker, clock: FixedClock
):
    node = broker.node
    assert node is not None
    wendy = await add_user(node, "wendy", email="wendy@example.org", timezone="Europe/Berlin")
    for category in ("finance", "sports"):
        await node.directory.subscribe(wendy, category, ["email"], WEEKLY_FRIDAY_10)
    email = broker.channels["email"]

    bodies = []
    for n in range(3):  # Monday
        bodies.append(f"finance {n}")
        await node.publish("finance", bodies[-1])
        clock.advance(600)
    node = await broker.restart()
    clock.advance(86400)  # Tuesday
    for n in range(2):
        bodies.append(f"sports {n}")
        await node.publish("sports", bodies[-1])
        clock.advance(600)
    urgent = await node.publish("finance", "market halted", priority=Priority.URGENT)
    await eventually(lambda: len(email.sent) == 1, "the urgent message went out at once")
    node = await broker.restart()
    clock.advance(2 * 86400)  # Thursday
    bodies.append("finance late")
    await node.publish("finance", bodies[-1])
    await settle()
    assert [r.text for _, r in email.sent] == [email.sent[0][1].text]  # only the urgent one

    clock.set(datetime(2026, 11, 20, 9, 0, 1, tzinfo=UTC))  # Friday 10:00:01 in Berlin
    await eventually(lambda: len(email.sent) == 2, "the weekly digest went out")
    await settle()
    assert len(email.sent) == 2, "exactly one digest"
    digest = email.sent[1][1]
    assert digest.subject == "6 updates in Finance and Sports"
    positions = [digest.text.index(body) for body in bodies]
    assert all(p >= 0 for p in positions)
    assert "market halted" not in digest.text  # sent on its own already
    # Every collected delivery is recorded as sent by that digest; the inbox has each.
    deliveries = [d for m in await _messages(node) for d in await node.store.list_deliveries(m)]
    collected = [d for d in deliveries if d.mode == "digest"]
    assert len(collected) == 6
    assert {d.status for d in collected} == {DeliveryStatus.SENT}
    assert len({d.digest_id for d in collected}) == 1
    inbox = await node.store.list_notifications(wendy, unread_only=False, limit=50, before=None)
    assert len(inbox) == 7
    assert urgent in {n.message_id for n in inbox}

    clock.advance(7 * 86400)  # a week with nothing published sends nothing
    await settle()
    assert len(email.sent) == 2


async def _messages(node: Node) -> list[str]:
    rows = await node.store._all("SELECT id FROM messages ORDER BY accepted_at")
    return [r[0] for r in rows]


async def test_digests_missed_while_down_go_out_once(broker: Broker, clock: FixedClock):
    node = broker.node
    assert node is not None
    dora = await add_user(node, "dora", email="dora@example.org", timezone="Europe/Berlin")
    daily = Schedule(Frequency.DAILY, parse_clock("10:00"))
    await node.directory.subscribe(dora, "movies", ["email"], daily)
    await node.publish("movies", "premiere one")
    await broker.stop()
    clock.advance(3 * 86400)  # three 10:00 slots pass while no node runs
    node = await broker.start()
    await node.publish("movies", "premiere two")  # collected for tomorrow's digest
    email = broker.channels["email"]
    await eventually(lambda: len(email.sent) == 1, "the overdue digest went out")
    await settle()
    assert len(email.sent) == 1
    assert "premiere one" in email.sent[0][1].text
    assert "premiere two" not in email.sent[0][1].text
    clock.advance(86400)
    await eventually(lambda: len(email.sent) == 2, "the next day's digest went out")
    assert email.sent[1][1].subject == "1 update in Movies"


async def test_urgent_pierces_quiet_hours_and_the_rest_waits_for_the_morning(
    broker: Broker, clock: FixedClock
):
    node = broker.node
    assert node is not None
    # 23:00 in Berlin (UTC+1 in November); quiet from 22:00 to 07:00.
    clock.set(datetime(2026, 11, 16, 22, 0, tzinfo=UTC))
    quinn = await add_user(
        node, "quinn", phone="+14155550199", timezone="Europe/Berlin", quiet_hours="22:00-07:00"
    )
    await node.directory.subscribe(quinn, "sports", ["sms"])
    sms = broker.channels["sms"]
    await node.publish("sports", "late goal")
    await node.publish("sports", "stadium on fire", priority=Priority.URGENT)
    await eventually(lambda: len(sms.sent) == 1, "the urgent SMS went out at night")
    await settle()
    assert [r.text for _, r in sms.sent] == ["[Sports] stadium on fire"]
    held = [
        d
        for m in await _messages(node)
        for d in await node.store.list_deliveries(m)
        if d.status is DeliveryStatus.QUEUED
    ]
    assert len(held) == 1
    assert held[0].note and held[0].note.startswith("quiet hours")
    clock.set(datetime(2026, 11, 17, 6, 0, 1, tzinfo=UTC))  # 07:00:01 in Berlin
    await eventually(lambda: len(sms.sent) == 2, "the held SMS went out in the morning")
    assert sms.sent[1][1].text == "[Sports] late goal"


async def test_throttled_sms_are_folded_into_a_digest(broker: Broker, clock: FixedClock):
    node = broker.node
    assert node is not None
    tom = await add_user(node, "tom", phone="+14155550123")
    await node.directory.subscribe(tom, "finance", ["sms"])
    sms = broker.channels["sms"]
    for n in range(5):
        await node.publish("finance", f"tick {n}")
        clock.advance(60)
    await eventually(lambda: len(sms.sent) == 2, "the first two SMS went out")
    await settle()
    assert len(sms.sent) == 2  # the throttle is 2 per hour
    folded = [
        d
        for m in await _messages(node)
        for d in await node.store.list_deliveries(m)
        if d.mode == "digest"
    ]
    assert len(folded) == 3
    assert all("throttled" in (d.note or "") for d in folded)
    clock.advance(3600)
    await eventually(lambda: len(sms.sent) == 3, "the folded SMS went out as one digest")
    await settle()
    assert len(sms.sent) == 3
    assert sms.sent[2][1].text.startswith("3 updates in Finance")


async def test_a_scheduled_message_waits_for_its_time(broker: Broker, clock: FixedClock):
    node = broker.node
    assert node is not None
    sam = await add_user(node, "sam", email="sam@example.org")
    await node.directory.subscribe(sam, "movies", ["email"])
    await node.publish("movies", "tickets on sale", deliver_at=clock.now() + timedelta(hours=2))
    email = broker.channels["email"]
    await settle()
    assert email.sent == []
    clock.advance(2 * 3600 + 1)
    await eventually(lambda: len(email.sent) == 1, "the scheduled message went out")


async def test_changing_frequency_or_timezone_moves_what_is_collected(
    broker: Broker, clock: FixedClock
):
    node = broker.node
    assert node is not None
    cara = await add_user(node, "cara", email="cara@example.org", timezone="Europe/Berlin")
    await node.directory.subscribe(cara, "finance", ["email"], WEEKLY_FRIDAY_10)
    await node.publish("finance", "collected on monday")
    email = broker.channels["email"]
    # Daily at 10:00 from now on (it is 09:00 in Berlin): today, not Friday.
    await node.directory.subscribe(
        cara, "finance", ["email"], Schedule(Frequency.DAILY, parse_clock("10:00"))
    )
    # And she moves to New York, where 10:00 today is 15:00 UTC, not 09:00.
    await node.directory.update(cara, {"timezone": "America/New_York"})
    clock.set(datetime(2026, 11, 16, 14, 59, tzinfo=UTC))
    await settle()
    assert email.sent == []
    clock.set(datetime(2026, 11, 16, 15, 0, 1, tzinfo=UTC))
    await eventually(lambda: len(email.sent) == 1, "the digest went out at 10:00 New York")
    # Switching to immediate flushes nothing new and sends later messages at once.
    await node.directory.subscribe(cara, "finance", ["email"], Schedule())
    await node.publish("finance", "instant")
    await eventually(lambda: len(email.sent) == 2, "an immediate message went out")
    assert "instant" in email.sent[1][1].text


async def test_an_idempotency_key_is_one_message_for_24_hours(broker: Broker, clock: FixedClock):
    node = broker.node
    assert node is not None
    first = await node.publish("sports", "once", idempotency_key="k")
    clock.advance(23 * 3600)
    assert await node.publish("sports", "once again", idempotency_key="k") == first
    clock.advance(2 * 3600)
    assert await node.publish("sports", "a day later", idempotency_key="k") != first
