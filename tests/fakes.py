"""Fakes of Notefly's ports for unit tests: in memory, deterministic, no I/O.

``FakeStore`` follows the semantics of ``notefly.store.sqlite.SqliteStore`` for what the
actors and the use cases call; ``FakeChannel`` records what it was asked to send and
can be scripted to fail.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from notefly.domain import (
    ADDRESS_FIELDS,
    ADDRESS_NAMES,
    Category,
    Delivery,
    DeliveryStatus,
    DeliveryTask,
    Message,
    Notification,
    Outcome,
    Recipient,
    Rendered,
    Subscription,
    User,
    delivery_id,
    notification_id,
)
from notefly.errors import Conflict, NotFound
from notefly.ports import (
    Accepted,
    DeliveryCounts,
    FanoutPage,
    OnCommit,
    PageRequest,
    Segment,
    SendResult,
)
from notefly.schedule import Throttle
from notefly.store.fanout import page_range, segments_of

SEED_CATEGORIES = (
    Category("finance", "Finance", "Markets, rates and money news"),
    Category("movies", "Movies", "Releases, reviews and showtimes"),
    Category("sports", "Sports", "Scores, fixtures and transfers"),
)


class FixedClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: datetime | None = None) -> None:
        self._now = now or datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        self._now = now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


class FakeIds:
    """Deterministic ids that sort in creation order: ``msg_0001``, ``msg_0002``, ..."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}_{next(self._counter):04d}"


class StoreDown(Exception):
    """What a scripted store failure raises: the write did not happen."""


@dataclass
class _Fanout:
    cursor: str | None = None
    done: bool = False
    owner: str | None = None
    split: bool = False


@dataclass
class _Segment:
    segment: Segment
    cursor: str | None = None
    done: bool = False
    owner: str | None = None


class FakeStore:
    """The ``Store`` port in memory.

    ``fail("record_outcomes", times=2)`` makes the next two calls of that method raise
    ``StoreDown`` before they change anything, like a transaction that did not commit.
    """

    def __init__(self, clock: FixedClock | None = None) -> None:
        self.clock = clock or FixedClock()
        self.categories: dict[str, Category] = {c.id: c for c in SEED_CATEGORIES}
        self.users: dict[str, User] = {}
        self.subscriptions: dict[tuple[str, str], Subscription] = {}  # (user, category)
        self.messages: dict[str, Message] = {}
        self.fanouts: dict[str, _Fanout] = {}
        self.segments: dict[str, list[_Segment]] = {}  # by message id
        self.deliveries: dict[str, Delivery] = {}
        self.inbox: dict[str, tuple[int, Notification]] = {}  # id -> (seq, entry)
        self.outcomes: dict[str, Outcome] = {}  # the latest outcome per delivery id
        self.outcome_calls: list[list[Outcome]] = []  # every committed record_outcomes
        self.owners: dict[str, str | None] = {}  # delivery id -> owner node
        self.not_before: dict[str, datetime] = {}
        self.nodes: dict[str, datetime] = {}  # node -> last heartbeat
        self._seq = itertools.count(1)
        self._failures: Counter[str] = Counter()

    # -- scripting --------------------------------------------------------------------

    def fail(self, method: str, *, times: int) -> None:
        """Make the next ``times`` calls of ``method`` raise ``StoreDown``."""
        self._failures[method] += times

    def _maybe_fail(self, method: str) -> None:
        if self._failures[method] > 0:
            self._failures[method] -= 1
            raise StoreDown(f"scripted failure of {method}")

    def failures_left(self, method: str) -> int:
        return self._failures[method]

    async def ping(self) -> None:
        return None

    # -- categories ---------------------------------------------------------------------

    async def list_categories(self) -> list[Category]:
        return sorted(self.categories.values(), key=lambda c: c.name)

    async def get_category(self, category_id: str) -> Category:
        try:
            return self.categories[category_id]
        except KeyError:
            raise NotFound(f"no category {category_id!r}", code="category_not_found") from None

    async def add_category(self, category: Category) -> Category:
        if category.id in self.categories:
            raise Conflict(f"category {category.id!r} exists already", code="category_exists")
        self.categories[category.id] = category
        return category

    # -- users and subscriptions --------------------------------------------------------

    async def add_user(self, user: User) -> User:
        if user.id in self.users:
            raise Conflict(f"user {user.id!r} exists already", code="user_exists")
        self.users[user.id] = user
        return user

    async def get_user(self, user_id: str) -> User:
        try:
            return self.users[user_id]
        except KeyError:
            raise NotFound(f"no user {user_id!r}", code="user_not_found") from None

    async def list_users(self, limit: int = 100) -> list[User]:
        return sorted(self.users.values(), key=lambda u: (u.name, u.id))[:limit]

    async def update_user(self, user: User) -> User:
        await self.get_user(user.id)
        self.users[user.id] = user
        return user

    async def delete_user(self, user_id: str) -> None:
        await self.get_user(user_id)
        del self.users[user_id]
        self.subscriptions = {k: s for k, s in self.subscriptions.items() if k[0] != user_id}
        self.inbox = {k: v for k, v in self.inbox.items() if v[1].user_id != user_id}
        self.deliveries = {k: d for k, d in self.deliveries.items() if d.user_id != user_id}

    async def upsert_subscription(self, sub: Subscription) -> Subscription:
        stamped = replace(sub, updated_at=self.clock.now())
        self.subscriptions[(sub.user_id, sub.category_id)] = stamped
        return stamped

    async def replace_subscriptions(
        self, user_id: str, subs: Sequence[Subscription]
    ) -> list[Subscription]:
        now = self.clock.now()
        stamped = [Subscription(user_id, s.category_id, s.channels, now) for s in subs]
        self.subscriptions = {k: s for k, s in self.subscriptions.items() if k[0] != user_id}
        self.subscriptions.update({(user_id, s.category_id): s for s in stamped})
        return stamped

    async def delete_subscription(self, user_id: str, category_id: str) -> None:
        if self.subscriptions.pop((user_id, category_id), None) is None:
            raise NotFound(
                f"user {user_id!r} is not subscribed to {category_id!r}",
                code="subscription_not_found",
            )

    async def list_subscriptions(self, user_id: str) -> list[Subscription]:
        subs = [s for (uid, _), s in self.subscriptions.items() if uid == user_id]
        return sorted(subs, key=lambda s: s.category_id)

    # -- messages -----------------------------------------------------------------------

    async def accept_message(
        self, message: Message, *, owner: str | None = None
    ) -> tuple[Message, bool]:
        if message.idempotency_key is not None:
            for stored in self.messages.values():
                if stored.idempotency_key == message.idempotency_key:
                    return stored, False
        self.messages[message.id] = message
        self.fanouts[message.id] = _Fanout(owner=owner)
        return message, True

    async def accept_with_page(
        self, message: Message, request: PageRequest, *, on_commit: OnCommit | None = None
    ) -> Accepted:
        accepted = await self._accept_with_page(message, request)
        if on_commit is not None:
            on_commit(accepted)
        return accepted

    async def _accept_with_page(self, message: Message, request: PageRequest) -> Accepted:
        stored, created = await self.accept_message(message, owner=request.owner)
        if not created:
            return Accepted(stored, False, None)
        try:
            page = await request.plan_with(self.fanout_page, message)
        except StoreDown:  # a scripted failure: the fan-out plans the page later
            return Accepted(stored, True, None)
        return Accepted(stored, True, page)

    async def get_message(self, message_id: str) -> Message:
        try:
            return self.messages[message_id]
        except KeyError:
            raise NotFound(f"no message {message_id!r}", code="message_not_found") from None

    async def delivery_counts(self, message_id: str) -> DeliveryCounts:
        await self.get_message(message_id)
        counts = Counter(
            d.status.value for d in self.deliveries.values() if d.message_id == message_id
        )
        return DeliveryCounts(fanout_done=self.fanouts[message_id].done, by_status=dict(counts))

    async def list_deliveries(self, message_id: str) -> list[Delivery]:
        await self.get_message(message_id)
        found = [d for d in self.deliveries.values() if d.message_id == message_id]
        return sorted(found, key=lambda d: (d.user_id, d.channel))

    # -- fan-out and delivery -------------------------------------------------------------

    async def fanout_page(
        self,
        message: Message,
        after_user: str | None,
        limit: int,
        channels: Sequence[str],
        *,
        owner: str | None = None,
        throttles: Mapping[str, Throttle] | None = None,
        partitions: int = 1,  # the order of rows on disk: nothing to do here
        segment: Segment | None = None,
    ) -> FanoutPage:
        # Schedules, quiet hours and throttles are not modelled here: every subscription
        # is immediate (they are tested against the real store).
        self._maybe_fail("fanout_page")
        enabled = set(channels)
        after_user, end = page_range(after_user, segment)
        after = after_user or ""
        audience = [
            sub
            for sub in self._audience(message.category_id, after)
            if end is None or sub.user_id <= end
        ][:limit]
        now = self.clock.now()
        tasks: list[DeliveryTask] = []
        skipped = 0
        for sub in audience:
            user = self.users[sub.user_id]
            self._add_inbox_entry(message, user.id, now)
            for channel in sub.channels:
                did = delivery_id(message.id, user.id, channel)
                address = user.address_for(channel)
                reason = None
                if channel not in enabled:
                    reason = f"channel {channel!r} is not enabled on this broker"
                elif channel in ADDRESS_FIELDS and not address:
                    reason = f"user has no {ADDRESS_NAMES[channel]}"
                status = DeliveryStatus.SKIPPED if reason else DeliveryStatus.QUEUED
                # INSERT OR IGNORE: a delivery that exists already keeps its state.
                if did not in self.deliveries:
                    self.deliveries[did] = _new_delivery(
                        did, message.id, user.id, channel, status, address, reason, now
                    )
                    self.owners[did] = None if reason else owner
                if reason:
                    skipped += 1
                else:
                    recipient = Recipient(user.id, user.name, address, user.timezone)
                    tasks.append(DeliveryTask(did, message, channel, recipient))
        done = len(audience) < limit
        cursor = audience[-1].user_id if audience else after_user
        if segment is None:
            head = self.fanouts[message.id]
            head.cursor, head.done = cursor, done
        else:
            state = self.segments[message.id][segment.seq]
            state.cursor, state.done = cursor, done
            if all(s.done for s in self.segments[message.id]):
                self.fanouts[message.id].done = True
        return FanoutPage(tasks, skipped, cursor, done)

    def _audience(self, category_id: str, after: str) -> list[Subscription]:
        return sorted(
            (
                sub
                for (uid, cat), sub in self.subscriptions.items()
                if cat == category_id and uid > after and uid in self.users  # JOIN users
            ),
            key=lambda sub: sub.user_id,
        )

    async def split_fanout(
        self, message: Message, after_user: str | None, size: int, owner: str
    ) -> Segment | None:
        self._maybe_fail("split_fanout")
        head = self.fanouts[message.id]
        if head.split or head.done or head.owner != owner or head.cursor != after_user:
            return None
        left = [sub.user_id for sub in self._audience(message.category_id, after_user or "")]
        ends = left[size - 1 : -1 : size]
        if not ends:
            return None
        head.split, head.owner = True, None
        self.segments[message.id] = [_Segment(s) for s in segments_of(after_user, ends)]
        self.segments[message.id][0].owner = owner
        return self.segments[message.id][0].segment

    async def claim_segments(
        self, node_id: str, limit: int
    ) -> list[tuple[Message, Segment, str | None]]:
        free = [
            (self.messages[mid], s)
            for mid in sorted(self.segments, key=lambda mid: self.messages[mid].accepted_at)
            for s in self.segments[mid]
            if not s.done and s.owner is None
        ][:limit]
        for _message, state in free:
            state.owner = node_id
        return [(m, s.segment, s.cursor) for m, s in free]

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        self._maybe_fail("record_outcomes")
        now = self.clock.now()
        for o in outcomes:
            current = self.deliveries.get(o.delivery_id)
            if current is None:  # UPDATE ... WHERE id = ?: an unknown id changes nothing
                continue
            at = o.at or now
            self.deliveries[o.delivery_id] = replace(
                current,
                status=o.status,
                attempts=o.attempts,
                provider=o.provider,
                provider_message_id=o.provider_message_id,
                recipient=o.recipient if o.recipient is not None else current.recipient,
                subject=o.subject,
                text=o.text,
                error=o.error,
                updated_at=at,
                sent_at=at if o.status is DeliveryStatus.SENT else None,
            )
            self.outcomes[o.delivery_id] = o
            if o.status is DeliveryStatus.QUEUED:  # a retry: the owner keeps it
                self.not_before[o.delivery_id] = at + timedelta(seconds=o.retry_after or 0)
            else:
                self.owners[o.delivery_id] = None
                self.not_before.pop(o.delivery_id, None)
        self.outcome_calls.append(list(outcomes))

    # -- work distribution ------------------------------------------------------------------

    async def heartbeat(self, node_id: str) -> None:
        self.nodes[node_id] = self.clock.now()

    async def release(self, node_id: str) -> None:
        self._release([node_id])

    async def release_dead(self, silent_since: datetime) -> list[str]:
        dead = [n for n, beat in self.nodes.items() if beat < silent_since]
        self._release(dead)
        return dead

    def _release(self, nodes: Sequence[str]) -> None:
        for did, owner in self.owners.items():
            if owner in nodes and self.deliveries[did].status is DeliveryStatus.QUEUED:
                self.owners[did] = None
        for fanout in self.fanouts.values():
            if fanout.owner in nodes and not fanout.done:
                fanout.owner = None
        for state in itertools.chain.from_iterable(self.segments.values()):
            if state.owner in nodes and not state.done:
                state.owner = None
        for node in nodes:
            self.nodes.pop(node, None)

    async def claim_fanouts(self, node_id: str, limit: int) -> list[tuple[Message, str | None]]:
        free = [
            m
            for m in sorted(self.messages.values(), key=lambda m: m.accepted_at)
            if not self.fanouts[m.id].done
            and self.fanouts[m.id].owner is None
            and not self.fanouts[m.id].split
        ][:limit]
        for m in free:
            self.fanouts[m.id].owner = node_id
        return [(m, self.fanouts[m.id].cursor) for m in free]

    async def claim_deliveries(self, node_id: str, limit: int) -> list[DeliveryTask]:
        now = self.clock.now()
        free = [
            t
            for t in await self.queued_tasks(None, len(self.deliveries) + 1)
            if self.owners.get(t.id) is None and self.not_before.get(t.id, now) <= now
        ][:limit]
        for t in free:
            self.owners[t.id] = node_id
        return free

    async def claim_digests(self, node_id: str, limit: int) -> list[DeliveryTask]:
        return []  # nothing is ever collected for a digest here (see fanout_page)

    async def reschedule_collected(
        self, user_id: str, category_id: str, not_before: datetime
    ) -> int:
        return 0

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (the port)
        await asyncio.sleep(timeout)

    async def unfinished_fanouts(self) -> list[tuple[Message, str | None]]:
        pending = [
            m
            for m in self.messages.values()
            if not self.fanouts[m.id].done and not self.fanouts[m.id].split
        ]
        pending.sort(key=lambda m: m.accepted_at)
        return [(m, self.fanouts[m.id].cursor) for m in pending]

    async def queued_tasks(self, after_id: str | None, limit: int) -> list[DeliveryTask]:
        after = after_id or ""
        queued = sorted(
            (
                d
                for d in self.deliveries.values()
                if d.status is DeliveryStatus.QUEUED and d.id > after
            ),
            key=lambda d: d.id,
        )[:limit]
        tasks = []
        for d in queued:
            user = self.users.get(d.user_id) or User(d.user_id, "")  # LEFT JOIN users
            recipient = Recipient(d.user_id, user.name, user.address_for(d.channel), user.timezone)
            tasks.append(
                DeliveryTask(d.id, self.messages[d.message_id], d.channel, recipient, d.attempts)
            )
        return tasks

    # -- inbox ----------------------------------------------------------------------------

    def _add_inbox_entry(self, message: Message, user_id: str, now: datetime) -> None:
        nid = notification_id(message.id, user_id)
        if nid not in self.inbox:
            entry = Notification(
                nid,
                user_id,
                message.id,
                message.category_id,
                message.title,
                message.body,
                message.priority,
                now,
                None,
            )
            self.inbox[nid] = (next(self._seq), entry)

    async def list_notifications(
        self, user_id: str, *, unread_only: bool, limit: int, before: str | None
    ) -> list[Notification]:
        await self.get_user(user_id)
        entries = [(seq, n) for seq, n in self.inbox.values() if n.user_id == user_id]
        if unread_only:
            entries = [(seq, n) for seq, n in entries if n.read_at is None]
        if before is not None:
            found = self.inbox.get(before)
            if found is None or found[1].user_id != user_id:
                raise NotFound(f"no notification {before!r}", code="notification_not_found")
            entries = [(seq, n) for seq, n in entries if seq < found[0]]
        entries.sort(key=lambda e: e[0], reverse=True)
        return [n for _, n in entries[:limit]]

    async def mark_read(self, user_id: str, notification_id: str) -> Notification:
        found = self.inbox.get(notification_id)
        if found is None or found[1].user_id != user_id:
            raise NotFound(f"no notification {notification_id!r}", code="notification_not_found")
        seq, entry = found
        if entry.read_at is None:
            entry = replace(entry, read_at=self.clock.now())
            self.inbox[notification_id] = (seq, entry)
        return entry

    async def mark_all_read(self, user_id: str) -> int:
        await self.get_user(user_id)
        unread = [n.id for _, n in self.inbox.values() if n.user_id == user_id and not n.read_at]
        for nid in unread:
            await self.mark_read(user_id, nid)
        return len(unread)

    # -- for assertions -------------------------------------------------------------------

    def statuses(self) -> dict[str, DeliveryStatus]:
        """Delivery id -> status, for every delivery recorded."""
        return {did: d.status for did, d in self.deliveries.items()}


def _new_delivery(
    did: str,
    message_id: str,
    user_id: str,
    channel: str,
    status: DeliveryStatus,
    address: str | None,
    reason: str | None,
    now: datetime,
) -> Delivery:
    return Delivery(
        id=did,
        message_id=message_id,
        user_id=user_id,
        channel=channel,
        status=status,
        attempts=0,
        provider=None,
        provider_message_id=None,
        recipient=address,
        subject=None,
        text=None,
        error=reason,
        created_at=now,
        updated_at=now,
        sent_at=None,
    )


ErrorFactory = Callable[[], Exception]


class FakeChannel:
    """A channel provider that records every send and fails when told to.

    ``calls`` holds every ``(delivery_id, rendered)`` the channel was asked to send,
    failed attempts included; ``sent`` holds those that succeeded. ``hold()`` makes
    sends wait (on the event loop) until ``release()``.
    """

    provider = "fake"

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._calls: list[tuple[str, Rendered]] = []
        self._sent: list[tuple[str, Rendered]] = []
        self._scripts: list[_Script] = []
        self._gate: asyncio.Event | None = None

    def fail_for(
        self, recipients: Iterable[str], error: ErrorFactory, *, times: int | None = None
    ) -> None:
        """Raise ``error()`` on sends to these addresses: the first ``times``, or always."""
        self._scripts.append(_Script(error, frozenset(recipients), times))

    def fail_first(self, times: int, error: ErrorFactory) -> None:
        """Raise ``error()`` on the next ``times`` sends, whoever they go to."""
        self._scripts.append(_Script(error, None, times))

    def hold(self) -> None:
        """Make sends wait until ``release()``, like a provider that has stalled."""
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        if self._gate is not None:
            await self._gate.wait()
        with self._lock:
            self._calls.append((delivery_id, rendered))
            error = next((s.error for s in self._scripts if s.fires_for(rendered.to)), None)
            if error is None:
                self._sent.append((delivery_id, rendered))
        if error is not None:
            raise error()
        return SendResult(self.provider, f"fake-{delivery_id}")

    @property
    def calls(self) -> list[tuple[str, Rendered]]:
        with self._lock:
            return list(self._calls)

    @property
    def sent(self) -> list[tuple[str, Rendered]]:
        with self._lock:
            return list(self._sent)

    def calls_to(self, address: str) -> list[Rendered]:
        return [r for _, r in self.calls if r.to == address]

    def sent_to(self, address: str) -> list[Rendered]:
        return [r for _, r in self.sent if r.to == address]


@dataclass
class _Script:
    error: ErrorFactory
    recipients: frozenset[str] | None  # None: anyone
    times: int | None  # None: always

    def fires_for(self, to: str) -> bool:
        if self.recipients is not None and to not in self.recipients:
            return False
        if self.times is None:
            return True
        if self.times > 0:
            self.times -= 1
            return True
        return False
