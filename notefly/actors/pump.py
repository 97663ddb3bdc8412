"""The work pump: how a node takes part in sharing work through the store.

Every node heartbeats; a node silent for longer than ``node_timeout_seconds`` is dead
and its unfinished work goes back to everyone. A node claims unowned fan-outs and
queued deliveries (their retry time reached) while it has room, then waits for news
(PostgreSQL's NOTIFY) or polls. There is no other coordination between nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from notefly.ports import Clock, Store

if TYPE_CHECKING:
    from notefly.actors.system import ActorSystem

log = structlog.get_logger("notefly.actors.pump")

DIGEST_BATCH = 200  # digests claimed at once (each is a small transaction of its own)


@dataclass(frozen=True, slots=True)
class PumpSettings:
    heartbeat_seconds: float = 2.0
    node_timeout_seconds: float = 30.0
    poll_seconds: float = 0.5
    claim_batch: int = 1000
    fanout_batch: int = 16


class WorkPump:
    def __init__(
        self, system: ActorSystem, store: Store, clock: Clock, settings: PumpSettings
    ) -> None:
        self._system = system
        self._store = store
        self._clock = clock
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._released = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()

    async def start(self) -> None:
        node = self._system.node_id
        # A node restarting under the same id takes back what its previous life held.
        await self._store.release(node)
        await self._store.heartbeat(node)
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="work-pump")

    def wake(self) -> None:
        """Look for work now rather than at the next poll (from any thread)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to wake
                self._loop.call_soon_threadsafe(self._woken.set)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def release(self) -> None:
        if not self._released:
            self._released = True
            await self._store.release(self._system.node_id)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = 0.0
        while True:
            try:
                if loop.time() >= next_beat:
                    await self._beat()
                    next_beat = loop.time() + self._settings.heartbeat_seconds
                busy = await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store may be down for a while: keep trying
                log.error("pump.error", node=self._system.node_id, error=repr(exc))
                busy = False
            if not busy:
                await self._wait()

    async def _wait(self) -> None:
        """Until the store has news, the poll time passed, or the node woke the pump."""
        if self._woken.is_set():
            self._woken.clear()
            return
        woken = asyncio.ensure_future(self._woken.wait())
        waiting = asyncio.ensure_future(self._store.wait_for_work(self._settings.poll_seconds))
        try:
            await asyncio.wait((woken, waiting), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woken, waiting):
                task.cancel()
            await asyncio.gather(woken, waiting, return_exceptions=True)
        self._woken.clear()

    async def _beat(self) -> None:
        node = self._system.node_id
        await self._store.heartbeat(node)
        silent_since = self._clock.now() - timedelta(seconds=self._settings.node_timeout_seconds)
        dead = await self._store.release_dead(silent_since)
        if dead:
            log.warning("nodes.dead", node=node, released=dead)

    async def _claim(self) -> bool:
        """Claim what there is room for; True when a full batch came (claim again)."""
        system = self._system
        node = system.node_id
        fanouts = await self._store.claim_fanouts(node, self._settings.fanout_batch)
        for message, cursor in fanouts:
            system.fanout(message, cursor)
        wanted = system.segments_wanted()
        segments = await self._store.claim_segments(node, wanted) if wanted else []
        for message, segment, cursor in segments:
            system.fanout(message, cursor, segment=segment)
        room = min(self._settings.claim_batch, system.max_pending - system.pending())
        singles = await self._store.claim_deliveries(node, room) if room > 0 else []
        digest_room = min(room - len(singles), DIGEST_BATCH)
        digests = await self._store.claim_digests(node, digest_room) if digest_room > 0 else []
        tasks = singles + digests
        if tasks:
            system.dispatch(tasks)
        if fanouts or segments or tasks:
            log.info(
                "work.claimed",
                node=node,
                fanouts=len(fanouts),
                segments=len(segments),
                deliveries=len(tasks),
                digests=len(digests),
            )
        # A full batch of anything means there is more: claim again without waiting.
        return (
            len(fanouts) == self._settings.fanout_batch
            or (room > 0 and len(singles) == room)
            or (digest_room > 0 and len(digests) == digest_room)
        )
