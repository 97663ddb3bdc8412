"""The ports: what the core needs from the outside world, as Protocols.

Adapters live in ``notefly.store`` and ``channels``; tests use fakes of these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol, TypeVar, runtime_checkable

from notefly.auth import ApiKey
from notefly.domain import (
    Category,
    Delivery,
    DeliveryTask,
    Message,
    Notification,
    Outcome,
    Recipient,
    Rendered,
    Subscription,
    User,
)
from notefly.schedule import Throttle

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> datetime: ...


class IdFactory(Protocol):
    def __call__(self, prefix: str) -> str: ...


@dataclass(slots=True)
class SendResult:
    provider: str
    provider_message_id: str | None = None


class Renderer(Protocol):
    def render(self, channel: str, message: Message, recipient: Recipient) -> Rendered: ...

    def render_digest(
        self, channel: str, items: Sequence[Message], recipient: Recipient
    ) -> Rendered: ...


class Channel(Protocol):
    """A channel provider: hands one rendered notification to the outside world.

    Raises ``TransientChannelError`` or ``PermanentChannelError`` on failure. A provider
    whose ``send`` never waits for anything (it returns without suspending) may say so
    with a class attribute ``immediate = True``: the shards then call it in turn rather
    than concurrently, without a task and a timeout per delivery.
    """

    name: str  # the channel: "sms", "email", ...
    provider: str  # the provider: "log", "smtp", ...

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult: ...


class Observer(Protocol):
    """Hears what happens to messages and deliveries (metrics, dashboards).

    Called on the event loop thread or on actor threads: implementations must be cheap
    and thread-safe, and must never raise.
    """

    def message_accepted(self, category: str) -> None: ...

    def delivery_finished(
        self,
        channel: str,
        provider: str | None,
        status: str,
        attempt: int,
        latency_seconds: float | None,
    ) -> None: ...

    def delivery_retried(self, channel: str, provider: str | None, attempt: int) -> None: ...

    def deliveries_finished(
        self,
        channel: str,
        provider: str | None,
        counts: Mapping[str, int],
        latencies: Sequence[float],
    ) -> None:
        """Several deliveries at once (a shard's round): how many reached each final
        status, and the provider latencies of those the provider was called for."""
        ...


class NullObserver:
    """The observer when nobody listens."""

    def message_accepted(self, category: str) -> None:
        pass

    def delivery_finished(
        self,
        channel: str,
        provider: str | None,
        status: str,
        attempt: int,
        latency_seconds: float | None,
    ) -> None:
        pass

    def delivery_retried(self, channel: str, provider: str | None, attempt: int) -> None:
        pass

    def deliveries_finished(
        self,
        channel: str,
        provider: str | None,
        counts: Mapping[str, int],
        latencies: Sequence[float],
    ) -> None:
        pass


@dataclass(frozen=True, slots=True)
class FanoutPage:
    """One page of a message's audience, committed: its deliveries recorded as queued,
    or those in ``tasks`` in flight with the page (see ``Segment.replay``)."""

    tasks: list[DeliveryTask]  # deliveries to hand to the channel shards
    skipped: int  # deliveries recorded as skipped (no address for the channel)
    cursor: str | None  # the last user id of this page
    done: bool  # no more pages


@dataclass(frozen=True, slots=True)
class Segment:
    """A range of a split fan-out's audience: the users after ``start`` up to and with
    ``end`` (None: to the end of the audience). Whichever node claims it plans it,
    page by page, as it would a whole fan-out (``Store.split_fanout``)."""

    seq: int  # its place in the message's fan-out
    start: str
    end: str | None
    # A page in flight planned again (its id): a store may write a page's deliveries
    # that go out at once only with their outcomes, and keep the page's range until
    # they all are. A node that dies meanwhile leaves the range to whoever claims it,
    # as a segment, and that node sends what has no row yet.
    replay: str | None = None


@dataclass(frozen=True, slots=True)
class PageRequest:
    """The first page of a fan-out, planned in the transaction that commits its message:
    a small audience is then delivered without a second write before it goes out."""

    limit: int  # users of the audience in this page
    channels: Sequence[str]  # the channels the node delivers
    owner: str  # the node that sends what goes out now
    throttles: Mapping[str, Throttle]
    partitions: int = 1  # see ``Store.fanout_page``

    def plan_with(self, fanout_page: Callable[..., T], message: Message) -> T:
        """Call ``fanout_page`` (the port's method, or a store's operation taking the
        same arguments) for this first page of ``message``."""
        return fanout_page(
            message,
            None,
            self.limit,
            self.channels,
            owner=self.owner,
            throttles=self.throttles,
            partitions=self.partitions,
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    message: Message  # as stored (the original one, for a repeated idempotency key)
    created: bool
    # The first page, already recorded; None when the message was not created now or
    # its page could not be planned (the fan-out then plans it as any other page).
    page: FanoutPage | None


# Called with what a publish committed, as soon as it is committed (Store.accept_with_page).
OnCommit = Callable[[Accepted], None]


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    fanout_done: bool
    by_status: dict[str, int]


class Store(Protocol):
    async def ping(self) -> None: ...

    # categories
    async def list_categories(self) -> list[Category]: ...
    async def get_category(self, category_id: str) -> Category: ...
    async def add_category(self, category: Category) -> Category: ...

    # users and subscriptions
    async def add_user(self, user: User) -> User: ...
    async def get_user(self, user_id: str) -> User: ...
    async def list_users(self, limit: int = 100) -> list[User]: ...
    async def update_user(self, user: User) -> User: ...
    async def delete_user(self, user_id: str) -> None: ...
    async def upsert_subscription(self, sub: Subscription) -> Subscription: ...
    async def replace_subscriptions(
        self, user_id: str, subs: Sequence[Subscription]
    ) -> list[Subscription]: ...
    async def delete_subscription(self, user_id: str, category_id: str) -> None: ...
    async def list_subscriptions(self, user_id: str) -> list[Subscription]: ...

    # messages and deliveries
    async def accept_message(
        self, message: Message, *, owner: str | None = None
    ) -> tuple[Message, bool]: ...
    async def accept_with_page(
        self, message: Message, request: PageRequest, *, on_commit: OnCommit | None = None
    ) -> Accepted:
        """``accept_message`` with the first page of its fan-out in the same transaction
        (``fanout_page`` from the start, for ``request.owner``). A page that fails is
        rolled back alone: the message is still accepted, with ``page`` None.

        ``on_commit``: called with the result once committed, before this returns,
        on whichever thread committed it (it must be thread-safe and must not block):
        the page's deliveries can leave without waiting for the caller's event loop.
        If it raises, this raises that error; the message stays committed."""
        ...

    async def get_message(self, message_id: str) -> Message: ...
    async def delivery_counts(self, message_id: str) -> DeliveryCounts: ...
    async def list_deliveries(self, message_id: str) -> list[Delivery]: ...
    async def fanout_page(
        self,
        message: Message,
        after_user: str | None,
        limit: int,
        channels: Sequence[str],
        *,
        owner: str | None = None,
        throttles: Mapping[str, Throttle] | None = None,
        partitions: int = 1,
        segment: Segment | None = None,
    ) -> FanoutPage:
        """``partitions``: the shards per channel that will send the page; its rows are
        written grouped by channel and ``partition_of`` their user, so that recording
        the outcomes of one shard's round rewrites few pages of the store.

        ``segment``: the page is of that segment (``after_user`` None: from its start),
        and moves its cursor; the last page of the last segment to finish finishes the
        message's fan-out. None: of the message's own, unsplit fan-out."""
        ...

    async def split_fanout(
        self, message: Message, after_user: str | None, size: int, owner: str
    ) -> Segment | None:
        """Split what is left of ``owner``'s fan-out of ``message`` (the users after
        ``after_user``, its cursor) into segments of ``size`` users, when more than
        ``size`` are left. The first segment is ``owner``'s, which goes on with it; the
        others are for any node to claim (``claim_segments``). None, and nothing
        changed: too few users left, or the fan-out is no longer ``owner``'s unsplit
        one at that cursor."""
        ...

    async def claim_segments(
        self, node_id: str, limit: int
    ) -> list[tuple[Message, Segment, str | None]]:
        """Claim unowned, unfinished segments (with their cursors), oldest message
        first; with them, pages in flight left by a dead node (``Segment.replay``)."""
        ...

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Record attempts of deliveries this node holds: those it claimed, and those
        of the pages it planned, whether or not the page wrote their rows."""
        ...

    # Work distribution between broker nodes (processes, on one machine or several):
    # every unfinished fan-out and every queued delivery has an owner node or none.
    # A node claims unowned work, keeps it while it heartbeats, and hands it back on a
    # clean stop; a node that stops heartbeating loses its work to the others.
    async def heartbeat(self, node_id: str) -> None: ...
    async def release(self, node_id: str) -> None: ...
    async def release_dead(self, silent_since: datetime) -> list[str]: ...
    async def claim_fanouts(self, node_id: str, limit: int) -> list[tuple[Message, str | None]]: ...
    async def claim_deliveries(self, node_id: str, limit: int) -> list[DeliveryTask]: ...
    async def claim_digests(self, node_id: str, limit: int) -> list[DeliveryTask]: ...
    async def reschedule_collected(
        self, user_id: str, category_id: str, not_before: datetime
    ) -> int: ...
    async def wait_for_work(self, timeout: float) -> None: ...  # noqa: ASYNC109
    # Fan-outs not done and not split, with their cursors (a split one's work is in
    # its segments).
    async def unfinished_fanouts(self) -> list[tuple[Message, str | None]]: ...
    async def queued_tasks(self, after_id: str | None, limit: int) -> list[DeliveryTask]: ...

    # inbox
    async def list_notifications(
        self, user_id: str, *, unread_only: bool, limit: int, before: str | None
    ) -> list[Notification]: ...
    async def mark_read(self, user_id: str, notification_id: str) -> Notification: ...
    async def mark_all_read(self, user_id: str) -> int: ...

    # access control: API keys and user tokens, stored as hashes (notefly.auth)
    async def add_api_key(self, key: ApiKey) -> ApiKey: ...
    async def list_api_keys(self) -> list[ApiKey]: ...
    async def revoke_api_key(self, key_id: str) -> ApiKey: ...
    async def api_key_by_hash(self, key_hash: str) -> ApiKey: ...
    async def active_api_keys(self) -> int: ...
    async def set_user_token(self, user_id: str, token_hash: str) -> None: ...
    async def user_by_token(self, token_hash: str) -> str: ...


class WriteLockUse(NamedTuple):
    """Since this process started: how long its writes waited for the store's one write
    lock and held it, and in how many transactions."""

    waited_seconds: float
    held_seconds: float
    transactions: int


@runtime_checkable
class SingleWriterStore(Protocol):
    """A store whose writers, every process's, take turns at one lock (SQLite's file).
    Held nearly all the time, it bounds throughput: time to move to a store that takes
    several writers (PostgreSQL)."""

    def write_lock_use(self) -> WriteLockUse: ...
