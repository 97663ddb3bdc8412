"""The actor system of one broker process: its category actors and channel shards.

It is started and stopped by the container. ``dispatch`` is the one way into it; a
shard that died is restarted on the next dispatch (pykka has no supervisor of its own).
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pykka
import structlog

from notefly.actors.bridge import LoopBridge
from notefly.actors.category import CategoryActor
from notefly.actors.messages import Deliver, Fanout, Sweep
from notefly.actors.shard import ChannelShard, ShardSettings
from notefly.domain import DeliveryTask, Message
from notefly.ports import Channel, Clock, NullObserver, Observer, Renderer, Store

log = structlog.get_logger("notefly.actors")

RECOVERY_PAGE = 2000


class ActorSystem:
    def __init__(
        self,
        *,
        store: Store,
        renderer: Renderer,
        channels: Mapping[str, Channel],
        clock: Clock,
        monotonic: Callable[[], float],
        shards_per_channel: int = 4,
        page_size: int = 500,
        shard_settings: ShardSettings | None = None,
        sweep_seconds: float = 30.0,
        observer: Observer | None = None,
    ) -> None:
        self._store = store
        self._renderer = renderer
        self._channels = dict(channels)
        self._clock = clock
        self._monotonic = monotonic
        self._shards_per_channel = shards_per_channel
        self._page_size = page_size
        self._shard_settings = shard_settings or ShardSettings()
        self._sweep_seconds = sweep_seconds
        self._observer = observer or NullObserver()
        self._lock = threading.Lock()
        self._shards: dict[str, list[pykka.ActorRef[ChannelShard]]] = {}
        self._categories: dict[str, pykka.ActorRef[CategoryActor]] = {}
        self._bridge: LoopBridge | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.restarts = 0

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, *, recover: bool = True) -> None:
        self._bridge = LoopBridge(asyncio.get_running_loop())
        for name in self._channels:
            self._shards[name] = [
                self._spawn_shard(name, i) for i in range(self._shards_per_channel)
            ]
        log.info(
            "actors.started",
            channels=list(self._channels),
            shards=self._shards_per_channel * len(self._channels),
        )
        self._schedule_sweep()
        if recover:
            await self.recover()

    async def stop(self, grace: float = 5.0) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
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
        log.info("actors.stopped")

    async def recover(self) -> None:
        """Finish what a previous run accepted but did not complete."""
        after: str | None = None
        resumed = 0
        while True:
            tasks = await self._store.queued_tasks(after, RECOVERY_PAGE)
            if not tasks:
                break
            self.dispatch(tasks)
            resumed += len(tasks)
            after = tasks[-1].id
        fanouts = await self._store.unfinished_fanouts()
        for message, cursor in fanouts:
            self._category(message.category_id).tell(Fanout(message, cursor))
        if resumed or fanouts:
            log.info("actors.recovered", deliveries=resumed, fanouts=len(fanouts))

    # -- the way in -------------------------------------------------------------------

    def publish(self, message: Message) -> None:
        """Start the fan-out of a committed message."""
        self._category(message.category_id).tell(Fanout(message))

    def dispatch(self, tasks: Sequence[DeliveryTask]) -> None:
        """Hand deliveries to the shards that host their users' entities."""
        batches: dict[tuple[str, int], list[DeliveryTask]] = defaultdict(list)
        for task in tasks:
            batches[(task.channel, self._shard_of(task.recipient.user_id))].append(task)
        for (channel, index), batch in batches.items():
            self._shard(channel, index).tell(Deliver(tuple(batch)))

    def stats(self) -> dict[str, Any]:
        shards = [ref for refs in self._shards.values() for ref in refs]
        per_shard = [ref.proxy().stats().get(timeout=2) for ref in shards if ref.is_alive()]
        return {
            "category_actors": len(self._categories),
            "shard_actors": len(shards),
            "entities": sum(s["entities"] for s in per_shard),
            "pending": sum(s["pending"] for s in per_shard),
            "restarts": self.restarts,
        }

    # -- internals --------------------------------------------------------------------

    def _shard_of(self, user_id: str) -> int:
        return zlib.crc32(user_id.encode()) % self._shards_per_channel

    def _shard(self, channel: str, index: int) -> pykka.ActorRef[ChannelShard]:
        ref = self._shards[channel][index]
        if ref.is_alive():
            return ref
        with self._lock:  # supervise: a dead shard is replaced by a fresh one
            ref = self._shards[channel][index]
            if not ref.is_alive():
                log.error("shard.restarted", channel=channel, shard=index)
                self.restarts += 1
                ref = self._shards[channel][index] = self._spawn_shard(channel, index)
        return ref

    def _spawn_shard(self, channel: str, index: int) -> pykka.ActorRef[ChannelShard]:
        assert self._bridge is not None
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
                    channels=list(self._channels),
                    page_size=self._page_size,
                    retry_seconds=self._shard_settings.retry_base_seconds,
                )
            return ref

    def _schedule_sweep(self) -> None:
        assert self._bridge is not None
        loop = self._bridge.loop

        def sweep() -> None:
            for refs in self._shards.values():
                for ref in refs:
                    if ref.is_alive():
                        ref.tell(Sweep())
            self._sweeper = loop.call_later(self._sweep_seconds, sweep)

        self._sweeper = loop.call_later(self._sweep_seconds, sweep)
