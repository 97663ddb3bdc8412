"""The actor system of one broker node (process): its category actors and channel shards.

Work reaches a node two ways. What this node accepts it fans out and delivers itself,
at once (the message and then its deliveries are owned by the node from the moment they
are written). Everything else, work of nodes that stopped or died and the retries they
left, is claimed from the store by the ``WorkPump``. Either way the node holds at most
``max_pending`` deliveries in memory: fan-out pauses and claims shrink when it is full.

A shard that dies is replaced on the next dispatch (pykka has no supervisor of its
own) and receives again the deliveries it held.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pykka
import structlog

from notefly.actors.bridge import LoopBridge
from notefly.actors.category import CategoryActor
from notefly.actors.messages import Deliver, Fanout
from notefly.actors.pump import PumpSettings, WorkPump
from notefly.actors.shard import ChannelShard, ShardSettings
from notefly.config import Settings
from notefly.domain import DeliveryTask, Message, partition_of
from notefly.ports import (
    Channel,
    Clock,
    FanoutPage,
    NullObserver,
    Observer,
    PageRequest,
    Renderer,
    Segment,
    Store,
)
from notefly.schedule import Throttle

log = structlog.get_logger("notefly.actors")

ShardKey = tuple[str, int]  # (channel, shard index)
# Users in the page planned with a message's commit: enough for most audiences of a
# direct notification, small enough that accepting a broadcast stays quick.
FIRST_PAGE_USERS = 64
# The documented defaults (``Settings``), for a caller that passes none: the container
# passes the configured values.
DEFAULTS = Settings()
# A node claims segments of other fan-outs while it runs fewer fan-outs than this: a
# node busy with its own leaves them to idle ones.
SEGMENTS_WHEN_BELOW = 2


class ActorSystem:
    def __init__(
        self,
        *,
        store: Store,
        renderer: Renderer,
        channels: Mapping[str, Channel],
        clock: Clock,
        monotonic: Callable[[], float],
        node_id: str = "local",
        shards_per_channel: int = DEFAULTS.shards_per_channel,
        page_size: int = DEFAULTS.fanout_page_size,
        first_page_size: int = FIRST_PAGE_USERS,
        max_pending: int = DEFAULTS.max_pending,
        max_fanouts: int = DEFAULTS.max_fanouts,
        segment_users: int | None = DEFAULTS.fanout_segment_users,
        shard_settings: ShardSettings | None = None,
        pump_settings: PumpSettings | None = None,
        observer: Observer | None = None,
        throttles: Mapping[str, Throttle] | None = None,
    ) -> None:
        self.node_id = node_id
        self.max_pending = max_pending
        self.max_fanouts = max_fanouts
        # Fan-outs handed to category actors and not finished, by category (only those
        # with some): what a new message of the category must queue behind.
        self._fanouts_by_category: Counter[str] = Counter()
        self._store = store
        self._renderer = renderer
        self._channels = dict(channels)
        self._clock = clock
        self._monotonic = monotonic
        self._shards_per_channel = shards_per_channel
        self._page_size = page_size
        self._segment_users = segment_users
        self._shard_settings = shard_settings or ShardSettings()
        self._pump_settings = pump_settings or PumpSettings()
        self._observer = observer or NullObserver()
        self._throttles = dict(throttles or {})
        self._first_page = (
            PageRequest(
                first_page_size,
                tuple(self._channels),
                node_id,
                self._throttles,
                shards_per_channel,
            )
            if first_page_size > 0
            else None
        )
        self._lock = threading.Lock()
        self._shards: dict[str, list[pykka.ActorRef[ChannelShard]]] = {}
        self._categories: dict[str, pykka.ActorRef[CategoryActor]] = {}
        # Deliveries handed to shards and not final yet, by shard: what a restarted
        # shard must receive again, and the measure of this node's memory use.
        self._held: dict[ShardKey, dict[str, DeliveryTask]] = defaultdict(dict)
        self._held_count = 0
        self._bridge: LoopBridge | None = None
        self._pump: WorkPump | None = None
        self.restarts = 0

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, *, claim: bool = True) -> None:
        """Start the actors; with ``claim``, also take part in sharing work."""
        self._bridge = LoopBridge(asyncio.get_running_loop())
        for name in self._channels:
            self._shards[name] = [
                self._spawn_shard(name, i) for i in range(self._shards_per_channel)
            ]
        log.info(
            "actors.started",
            node=self.node_id,
            channels=list(self._channels),
            shards=self._shards_per_channel * len(self._channels),
        )
        if claim:
            self._pump = WorkPump(self, self._store, self._clock, self._pump_settings)
            await self._pump.start()

    async def stop(self, grace: float = 5.0) -> None:
        if self._pump is not None:
            await self._pump.stop()
        with self._lock:
            categories = list(self._categories.values())
            self._categories.clear()
        for ref in categories:
            ref.stop()
        if self._bridge is not None:  # let work already on the loop record its outcome
            await self._bridge.drain(grace)
        for shards in self._shards.values():
            for shard in shards:
                if shard.is_alive():
                    shard.stop()
        self._shards.clear()
        if self._pump is not None:
            # Hand back what is left, so that another node need not wait for this one
            # to be declared dead.
            await self._pump.release()
        log.info("actors.stopped", node=self.node_id, held=self._held_count)

    # -- the ways in --------------------------------------------------------------------

    def first_page(self, category_id: str) -> PageRequest | None:
        """What of a new message's audience to plan with its commit. Nothing while the
        node holds as many deliveries as it may (the fan-out then waits for room), nor
        while a fan-out of the category is under way here: the new message then queues
        behind it in the category actor, so that its users get the two in order."""
        if not self.has_room() or self._fanouts_by_category.get(category_id):
            return None
        return self._first_page

    def publish(self, message: Message, first: FanoutPage | None = None) -> None:
        """Start delivering a committed message this node owns, whose ``first`` page
        may have been planned with it."""
        if first is None:
            self.fanout(message, None)
            return
        if first.tasks:
            self.dispatch(first.tasks)
        if not first.done:
            self.fanout(message, first.cursor, handed=len(first.tasks))
            return
        log.info(
            "fanout.done",
            message_id=message.id,
            category=message.category_id,
            deliveries=len(first.tasks),
        )

    def fanout(
        self,
        message: Message,
        cursor: str | None,
        *,
        handed: int = 0,
        segment: Segment | None = None,
    ) -> None:
        with self._lock:
            self._fanouts_by_category[message.category_id] += 1
        self._category(message.category_id).tell(Fanout(message, cursor, handed, segment))

    def segments_wanted(self) -> int:
        """How many segments of split fan-outs this node would claim now."""
        if not self.has_room():
            return 0
        with self._lock:
            running = self._fanouts_by_category.total()
        return max(0, SEGMENTS_WHEN_BELOW - running)

    def overloaded(self) -> bool:
        """Full of deliveries and with a backlog of fan-outs waiting for room: new
        publishes should be refused (429) rather than queued without limit."""
        if self._held_count < self.max_pending:
            return False
        with self._lock:
            return self._fanouts_by_category.total() >= self.max_fanouts

    def _fanout_done(self, category_id: str, segment: bool) -> None:
        with self._lock:
            self._fanouts_by_category[category_id] -= 1
            if self._fanouts_by_category[category_id] <= 0:
                del self._fanouts_by_category[category_id]
        # A segment done: others of its broadcast may be waiting, so claim now rather
        # than at the next poll (not after every fan-out: each look costs transactions).
        if segment and self._pump is not None and self.segments_wanted():
            self._pump.wake()

    def dispatch(self, tasks: Sequence[DeliveryTask]) -> None:
        """Hand deliveries to the shards that host their users' entities."""
        batches: dict[ShardKey, list[DeliveryTask]] = defaultdict(list)
        single = self._shards_per_channel == 1  # the default: no user's hash to take
        for task in tasks:
            index = 0 if single else self._shard_of(task.recipient.user_id)
            batches[(task.channel, index)].append(task)
        # Resolve (and if need be restart) the shards first: a restarted shard gets
        # what its predecessor held, which must not include this batch twice.
        refs = {key: self._shard(*key) for key in batches}
        with self._lock:
            for key, batch in batches.items():
                held = self._held[key]
                before = len(held)
                held.update((t.id, t) for t in batch)
                self._held_count += len(held) - before
        for key, batch in batches.items():
            refs[key].tell(Deliver(tuple(batch)))

    # -- what the actors tell the system -------------------------------------------------

    def pending(self) -> int:
        """Deliveries this node holds in memory and has not finished."""
        return self._held_count

    def has_room(self) -> bool:
        return self._held_count < self.max_pending

    def settled(self, key: ShardKey, delivery_ids: Iterable[str]) -> None:
        """Called by a shard (on its thread) for deliveries that reached a final state."""
        with self._lock:
            held = self._held[key]
            for did in delivery_ids:
                if held.pop(did, None) is not None:
                    self._held_count -= 1

    def stats(self) -> dict[str, Any]:
        shards = [ref for refs in self._shards.values() for ref in refs]
        per_shard = [ref.proxy().stats().get(timeout=2) for ref in shards if ref.is_alive()]
        return {
            "node": self.node_id,
            "category_actors": len(self._categories),
            "shard_actors": len(shards),
            "entities": sum(s["entities"] for s in per_shard),
            "pending": self._held_count,
            "restarts": self.restarts,
        }

    # -- internals --------------------------------------------------------------------

    def _shard_of(self, user_id: str) -> int:
        return partition_of(user_id, self._shards_per_channel)

    def _shard(self, channel: str, index: int) -> pykka.ActorRef[ChannelShard]:
        ref = self._shards[channel][index]
        if ref.is_alive():
            return ref
        with self._lock:  # supervise: a dead shard is replaced by a fresh one
            ref = self._shards[channel][index]
            if ref.is_alive():
                return ref
            self.restarts += 1
            ref = self._shards[channel][index] = self._spawn_shard(channel, index)
            orphans = tuple(self._held[(channel, index)].values())
        log.error("shard.restarted", channel=channel, shard=index, redelivered=len(orphans))
        if orphans:  # what the dead shard held goes to its successor
            ref.tell(Deliver(orphans))
        return ref

    def _spawn_shard(self, channel: str, index: int) -> pykka.ActorRef[ChannelShard]:
        assert self._bridge is not None
        key = (channel, index)
        return ChannelShard.start(
            self._channels[channel],
            index,
            renderer=self._renderer,
            store=self._store,
            bridge=self._bridge,
            clock=self._clock,
            monotonic=self._monotonic,
            settings=self._shard_settings,
            observer=self._observer,
            on_settled=lambda ids: self.settled(key, ids),
        )

    def _category(self, category_id: str) -> pykka.ActorRef[CategoryActor]:
        with self._lock:
            ref = self._categories.get(category_id)
            if ref is None or not ref.is_alive():
                assert self._bridge is not None
                ref = self._categories[category_id] = CategoryActor.start(
                    category_id,
                    store=self._store,
                    bridge=self._bridge,
                    dispatch=self.dispatch,
                    has_room=self.has_room,
                    on_done=lambda segment: self._fanout_done(category_id, segment),
                    channels=list(self._channels),
                    page_size=self._page_size,
                    owner=self.node_id,
                    retry_seconds=self._shard_settings.retry_base_seconds,
                    throttles=self._throttles,
                    partitions=self._shards_per_channel,
                    segment_users=self._segment_users,
                )
            return ref
